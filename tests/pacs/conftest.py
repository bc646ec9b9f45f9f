"""A real PACS for the DICOMweb tests: Debian's Orthanc with its DICOMweb plug-in, started once per session on a
free loopback port with a temporary storage folder and a generated configuration (no DICOM port, no remote
access, basic auth on), and stopped at the end. `make setup` installs `orthanc orthanc-dicomweb` as root; without
them the tests skip (and fail under CI=true, tests/conftest.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest

from tests.network import free_port
from tests.workflows.test_dicom_seg import write_series

PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
USER, PASSWORD = "mmfm", "pacs-test-password"


@dataclass
class Pacs:
    port: int
    series: Path           # the uploaded CT series (4 slices), one file per instance
    single: Path           # a one-slice CT series of the same study (fast to segment)

    @property
    def root(self) -> str:
        return f"dicomweb+http://127.0.0.1:{self.port}/dicom-web"

    def url(self, ds: pydicom.Dataset, series: bool = True) -> str:
        return f"{self.root}/studies/{ds.StudyInstanceUID}" + (f"/series/{ds.SeriesInstanceUID}" if series else "")


def _wait_until_up(proc: subprocess.Popen, port: int, log: Path) -> None:
    import requests

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Orthanc exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/dicom-web/studies", auth=(USER, PASSWORD),
                            timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise RuntimeError("Orthanc did not answer within 30 s")


def _upload(port: int, files: list[Path]) -> None:
    import requests

    for f in files:
        r = requests.post(f"http://127.0.0.1:{port}/instances", data=f.read_bytes(), auth=(USER, PASSWORD),
                          timeout=30)
        r.raise_for_status()


@pytest.fixture(scope="session")
def pacs(tmp_path_factory) -> Iterator[Pacs]:
    orthanc = shutil.which("Orthanc")
    if orthanc is None or not PLUGIN.exists():
        pytest.skip("Orthanc with its DICOMweb plug-in is not installed (Debian orthanc orthanc-dicomweb; "
                    "make setup installs them as root)")
    from pydicom.data import get_testdata_file

    src = get_testdata_file("CT_small.dcm", download=False)
    if src is None:
        pytest.skip("pydicom test file CT_small.dcm not available")
    home = tmp_path_factory.mktemp("orthanc")
    port = free_port()
    config = {"Name": "mmfm-test", "StorageDirectory": str(home / "db"), "IndexDirectory": str(home / "db"),
              "HttpPort": port, "DicomServerEnabled": False, "RemoteAccessAllowed": False,
              "AuthenticationEnabled": True, "RegisteredUsers": {USER: PASSWORD}, "HttpTimeout": 30,
              "Plugins": [str(PLUGIN)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False}}
    (home / "orthanc.json").write_text(json.dumps(config))
    log = home / "orthanc.log"
    with log.open("w") as out:
        proc = subprocess.Popen([orthanc, str(home / "orthanc.json")], stdout=out, stderr=subprocess.STDOUT,
                                cwd=home)
    try:
        _wait_until_up(proc, port, log)
        series = write_series(src, home / "upload" / "series", n=4)       # one study (CT_small's), two series
        single = write_series(src, home / "upload" / "single", n=1)
        _upload(port, series + single)
        yield Pacs(port, home / "upload" / "series", home / "upload" / "single")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture()
def pacs_login(monkeypatch, tmp_path):
    """The test server's credentials in the environment (and no netrc of the machine's user)."""
    for key in ("MMFM_DICOMWEB_TOKEN", "MMFM_DICOMWEB_USER", "MMFM_DICOMWEB_PASSWORD"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("MMFM_DICOMWEB_USER", USER)
    monkeypatch.setenv("MMFM_DICOMWEB_PASSWORD", PASSWORD)
