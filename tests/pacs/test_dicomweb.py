"""DICOMweb against a real Orthanc (tests/pacs/conftest.py): pull equals the uploaded files, push is found by
QIDO, credentials from the environment and netrc, and each failure (401, an unreachable port, a missing study, a
response over the size limit, a bad URL) is one line without the secret."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pydicom
import pytest

from mmfm.cli.main import main
from mmfm.data.io.dicomweb import DicomwebClient, DicomwebError, parse_url
from mmfm.errors import ConfigError
from tests.network import free_port
from tests.pacs.conftest import PASSWORD, USER
from tests.workflows.test_dicom_seg import write_series


def _first(folder: Path) -> pydicom.Dataset:
    return pydicom.dcmread(sorted(folder.iterdir())[0])


def _by_uid(files) -> dict[str, pydicom.Dataset]:
    return {str(ds.SOPInstanceUID): ds for ds in (pydicom.dcmread(f) for f in files)}


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("mmfm: error: ") and "Traceback" not in err and PASSWORD not in err
    return err


def test_pull_of_a_series_equals_the_uploaded_files(pacs, pacs_login, tmp_path, capsys):
    ds = _first(pacs.series)
    assert main(["data", "pull", pacs.url(ds), str(tmp_path / "out")]) == 0
    assert "4 instances of 1 series" in capsys.readouterr().out
    pulled = _by_uid((tmp_path / "out" / ds.StudyInstanceUID / ds.SeriesInstanceUID).iterdir())
    uploaded = _by_uid(pacs.series.iterdir())
    assert pulled.keys() == uploaded.keys()
    for uid, want in uploaded.items():
        got = pulled[uid]
        assert got == want                                          # every attribute, the pixel data included
        assert got.file_meta.TransferSyntaxUID == want.file_meta.TransferSyntaxUID
    assert not (tmp_path / "out.incomplete").exists()


def test_pull_with_a_query_takes_the_series_it_selects_and_deid_removes_the_identifiers(pacs, pacs_login, tmp_path,
                                                                                      capsys):
    single = _first(pacs.single)
    assert main(["data", "pull", pacs.root, str(tmp_path / "out"), "--deid",
                 "--query", f"SeriesInstanceUID={single.SeriesInstanceUID}", "--query", "Modality=CT"]) == 0
    assert "1 instances of 1 series" in capsys.readouterr().out
    files = [f for f in (tmp_path / "out").rglob("*.dcm")]
    assert len(files) == 1 and (tmp_path / "out" / "deid.json").exists()
    got = pydicom.dcmread(files[0])
    assert got.SOPInstanceUID != single.SOPInstanceUID and got.StudyInstanceUID != single.StudyInstanceUID
    assert str(got.PatientName) != str(single.PatientName) and "PatientAge" not in got
    assert got.PixelData == single.PixelData


def test_push_then_qido_finds_the_series_and_pull_gives_it_back(pacs, pacs_login, tmp_path, dicom_path, capsys):
    files = write_series(dicom_path("CT_small.dcm"), tmp_path / "new", n=3)
    (tmp_path / "new" / "notes.txt").write_text("not DICOM")
    ds = pydicom.dcmread(files[0])
    assert main(["data", "push", str(tmp_path / "new"), pacs.root]) == 0
    assert "stored 3 instances of 1 series" in capsys.readouterr().out
    client = DicomwebClient(parse_url(pacs.root))
    found = client.search_series(ds.StudyInstanceUID, {"SeriesInstanceUID": ds.SeriesInstanceUID})
    assert len(found) == 1 and found[0]["00201209"]["Value"] == [3]          # NumberOfSeriesRelatedInstances
    back = client.retrieve_series(ds.StudyInstanceUID, ds.SeriesInstanceUID, tmp_path / "back")
    assert _by_uid(back) == _by_uid(files)


def test_inspect_reads_a_series_url_as_a_volume(pacs, pacs_login, capsys):
    assert main(["data", "inspect", pacs.url(_first(pacs.series)), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["shape"][-3:] == [128, 128, 4] and info["modality"] == "CT"


def test_netrc_credentials_are_used(pacs, monkeypatch, tmp_path):
    for key in ("MMFM_DICOMWEB_TOKEN", "MMFM_DICOMWEB_USER", "MMFM_DICOMWEB_PASSWORD"):
        monkeypatch.delenv(key, raising=False)
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login {USER} password {PASSWORD}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    single = _first(pacs.single)
    assert DicomwebClient(parse_url(pacs.url(single))).series_of(parse_url(pacs.url(single))) == [
        (single.StudyInstanceUID, single.SeriesInstanceUID)]


def test_wrong_credentials_give_the_401_line(pacs, pacs_login, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("MMFM_DICOMWEB_PASSWORD", "wrong-password")
    assert main(["data", "pull", pacs.url(_first(pacs.series)), str(tmp_path / "out")]) == 2
    err = _one_line_error(capsys)
    assert "refused the credentials (HTTP 401)" in err and "wrong-password" not in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.incomplete").exists()


def test_an_unreachable_port_fails_quickly_with_its_line(pacs_login, tmp_path, capsys):
    port = free_port()                                                       # nothing listens there
    start = time.monotonic()
    assert main(["data", "pull", f"dicomweb+http://127.0.0.1:{port}/dicom-web/studies/1.2.3",
                 str(tmp_path / "out")]) == 2
    assert time.monotonic() - start < 10
    assert f"cannot reach the DICOMweb server at 127.0.0.1:{port}" in _one_line_error(capsys)


def test_a_missing_study_and_a_response_over_the_limit_are_refused(pacs, pacs_login, tmp_path, capsys):
    assert main(["data", "pull", f"{pacs.root}/studies/1.2.3.999", str(tmp_path / "out")]) == 2
    assert "study 1.2.3.999 not found on 127.0.0.1" in _one_line_error(capsys)
    ds = _first(pacs.series)
    url = parse_url(pacs.url(ds))
    with pytest.raises(DicomwebError, match="larger than the limit"):
        DicomwebClient(url, max_bytes=20_000).retrieve_series(ds.StudyInstanceUID, ds.SeriesInstanceUID,
                                                              tmp_path / "big")


@pytest.mark.parametrize("url, problem", [
    ("dicomweb+http://user:pw@host/dicom-web", "credentials in it"),
    ("dicomweb+http://host/dicom-web?PatientID=1", "no query string"),
    ("dicomweb+http://host/dicom-web/studies/1.2/series/1.3/instances/1.4", "nothing else"),
    ("dicomweb+http://host/dicom-web/studies/1.2/series/x", "not a series UID"),
    ("dicomweb+http://host:99999/dicom-web", "port"),
    ("http://host/dicom-web", "not a DICOMweb URL"),
])
def test_bad_urls_are_refused_with_what_is_wrong(url, problem):
    with pytest.raises(ConfigError, match=problem) as e:
        parse_url(url)
    assert "pw" not in str(e.value).replace("path", "")


def test_a_url_names_its_service_study_and_series():
    u = parse_url("dicomweb+https://pacs.example.org:8443/orthanc/dicom-web/studies/1.2.3/series/4.5")
    assert (u.service, u.study, u.series) == ("https://pacs.example.org:8443/orthanc/dicom-web", "1.2.3", "4.5")
    assert str(u) == "dicomweb+https://pacs.example.org:8443/orthanc/dicom-web/studies/1.2.3/series/4.5"


class _Recorder(BaseHTTPRequestHandler):
    """A real HTTP server for what Orthanc cannot show: a bearer token's header, a 403, a server that never
    answers, a web page where a DICOMweb service was expected."""
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        _Recorder.seen.append(self.headers.get("Authorization", ""))
        if "slow" in self.path:
            time.sleep(5)
        if "web-page" in self.path:                                  # a web server, not a DICOMweb service
            body = b"<html>a login page</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(403)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def recorder():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Recorder.seen = []
    yield f"dicomweb+http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_token_goes_as_a_bearer_header_and_403_a_silent_server_and_a_web_page_give_their_lines(
        recorder, monkeypatch, tmp_path, capsys):
    for key in ("MMFM_DICOMWEB_USER", "MMFM_DICOMWEB_PASSWORD"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MMFM_DICOMWEB_TOKEN", "tok-123")
    assert main(["data", "pull", f"{recorder}/dicom-web/studies/1.2.3", str(tmp_path / "out")]) == 2
    err = _one_line_error(capsys)
    assert "denied access" in err and "(HTTP 403)" in err and "tok-123" not in err
    assert _Recorder.seen == ["Bearer tok-123"]                      # a 403 is not retried
    start = time.monotonic()
    with pytest.raises(DicomwebError, match="did not answer within"):
        DicomwebClient(parse_url(f"{recorder}/slow"), timeout=(1, 1)).search_series("1.2.3")
    assert time.monotonic() - start < 8 and len(_Recorder.seen) == 4   # three attempts, then the line
    with pytest.raises(DicomwebError, match="with something that is not DICOMweb"):
        DicomwebClient(parse_url(f"{recorder}/web-page")).search_series("1.2.3")
    monkeypatch.setenv("MMFM_DICOMWEB_USER", "someone")
    with pytest.raises(ConfigError, match="both MMFM_DICOMWEB_TOKEN and MMFM_DICOMWEB_USER"):
        DicomwebClient(parse_url(recorder))
