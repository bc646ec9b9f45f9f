"""A PACS as a source and a sink, over DICOMweb (:mod:`mmfm.data.io.dicomweb`).

- :func:`pull` (`mmfm data pull URL DIR`): a series, a study, or a query's series into ``DIR/<study>/<series>/
  <instance>.dcm``, optionally de-identified on the way (the PS3.15 profile of `mmfm data deid`: the identified
  copies only ever lie in a private temporary folder, removed afterwards);
- :func:`push` (`mmfm data push DIR URL`): every DICOM file under DIR stored with STOW-RS;
- :func:`remote_paths`: what `mmfm segment` reads and writes when IMAGE or ``--out`` is a URL: the series retrieved
  into a private temporary folder, the SEG written there and stored into the series' study.

Nothing is stored on the server unless the command says so (push, ``--out URL``); nothing is kept on disk but
what the user asked for (DIR).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mmfm.data.io.dicomweb import STOW_BATCH, DicomwebClient, DicomwebError, is_dicomweb, parse_query, parse_url
from mmfm.errors import ConfigError, InputFileError

SEG_NAME = "segmentation.dcm"


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} exists and is not empty; mmfm never overwrites files it did not create",
                          "choose a new output folder")


def pull(url: str, out: str | Path, deid: bool = False, query: Sequence[str] = (),
         progress: bool = True) -> dict[str, Any]:
    """Retrieve what ``url`` (and ``query``: KEY=VALUE QIDO filters) names into ``out``; return a summary."""
    from mmfm.workflows.deid import deidentify_folder

    u, filters, out = parse_url(url), parse_query(query), Path(out)
    _check_out(out)
    client = DicomwebClient(u)
    pairs = client.series_of(u, filters)
    with tempfile.TemporaryDirectory(prefix="mmfm-pull-") as tmp:        # mode 0700, removed on any exit
        staging = Path(tmp) / "files" if deid else out.with_name(out.name + ".incomplete")
        if not deid and staging.exists():
            raise ConfigError(f"{staging} exists (an interrupted pull?)", "remove it and retry")
        try:
            files = [f for study, series in pairs
                     for f in client.retrieve_series(study, series, staging / study / series)]
            summary: dict[str, Any] = {"from": str(u), "series": len(pairs), "instances": len(files)}
            if deid:
                summary["deid"] = deidentify_folder(staging, out, progress=progress)["counts"]
            else:
                if out.exists():
                    out.rmdir()                                           # empty (checked above)
                os.replace(staging, out)
        except BaseException:
            if not deid:
                shutil.rmtree(staging, ignore_errors=True)                # mmfm's own staging folder
            raise
    return summary


def cached_folder(url: str | None, query: Sequence[str]) -> Path:
    """`data.dataset=dicomweb data.root=URL data.query=[KEY=VALUE, ...]`: the series they select, retrieved once
    into ``$MMFM_HOME/dicomweb/<key of URL and query>/`` (complete or absent: :func:`pull` renames it into place)
    and read from there afterwards, without the network. The copy is de-identified on the way (the PS3.15 profile
    of `mmfm data deid`): a cache never holds patient identifiers; the identified files only pass through a
    private temporary folder."""
    import hashlib
    import json

    from mmfm.data.sources.fetch import mmfm_home

    if not url or not is_dicomweb(url):
        raise ConfigError("data.dataset=dicomweb reads a PACS: data.root is its URL",
                          "e.g. data.root=dicomweb+https://pacs.example.org/dicom-web data.query=[Modality=CT]")
    key = hashlib.sha256(json.dumps([str(parse_url(url)), sorted(query)]).encode()).hexdigest()[:16]
    folder = mmfm_home() / "dicomweb" / key
    if not folder.is_dir():
        pull(url, folder, deid=True, query=query, progress=False)
    return folder


def _dicom_files(folder: Path) -> tuple[list[Path], int]:
    """The DICOM files under ``folder`` (symlinks not followed) and how many other files it holds."""
    from mmfm.data.io.dicom import is_dicom

    if not folder.exists():
        raise InputFileError(folder, "does not exist", "give a DICOM file or a folder of them")
    paths = [folder] if folder.is_file() else sorted(p for p in folder.rglob("*") if p.is_file()
                                                     and not p.is_symlink())
    files = [p for p in paths if is_dicom(p)]
    return files, len(paths) - len(files)


def push(folder: str | Path, url: str) -> dict[str, Any]:
    """Store every DICOM file under ``folder`` on the service ``url`` (STOW-RS); return what was stored."""
    folder = Path(folder)
    files, other = _dicom_files(folder)
    if not files:
        raise InputFileError(folder, "holds no DICOM file", "give a folder of DICOM files")
    return {**store_files(files, url), "not_dicom": other}


def store_files(files: Sequence[Path], url: str) -> dict[str, Any]:
    """Store the DICOM ``files`` on the service (or into the study) ``url``, a batch of files read at a time."""
    import pydicom

    u = parse_url(url)
    if u.series:
        raise ConfigError(f"{u}: DICOM files are stored into a service (or a study), not into a series",
                          "give the service URL, e.g. dicomweb+http://HOST:PORT/dicom-web")
    client, stored = DicomwebClient(u), []
    for at in range(0, len(files), STOW_BATCH):          # read a batch at a time: memory stays bounded
        batch = []
        for f in files[at:at + STOW_BATCH]:
            try:
                batch.append(pydicom.dcmread(f))
            except Exception as e:     # pydicom raises many kinds on damaged files
                raise InputFileError(f, f"unreadable DICOM ({type(e).__name__})", "remove or repair it") from None
        wrong = [ds for ds in batch if u.study and str(ds.get("StudyInstanceUID", "")) != u.study]
        if wrong:
            raise ConfigError(f"{u}: the files hold instances of another study", "store them to the service URL")
        stored += client.store(batch)
    return {"to": str(u), "stored": stored}


def _local_image(image: str, tmp: Path) -> Path:
    """The series ``image`` names, retrieved into ``tmp``: its one file, or the folder of its slices."""
    u = parse_url(image)
    if u.series is None:
        raise ConfigError(f"{u}: an image is a series", "add /series/<SeriesInstanceUID> to the URL")
    client = DicomwebClient(u)
    client.series_of(u)                                   # one line when the study or series is not there
    client.check_image_series(u.study or "", u.series)
    files = client.retrieve_series(u.study or "", u.series, tmp / u.series)
    if not files:
        raise DicomwebError(f"series {u.series} holds no instances", "give an image series")
    return files[0] if len(files) == 1 else tmp / u.series


@contextmanager
def local_images(images: Sequence[str]) -> Iterator[list[str]]:
    """Local paths for ``images``, any of which may be a DICOMweb series URL: those are retrieved into one private
    temporary folder (a series folder named by its UID, or its one file), removed on exit."""
    if not any(is_dicomweb(i) for i in images):
        yield list(images)
        return
    with tempfile.TemporaryDirectory(prefix="mmfm-dicomweb-") as tmp:
        yield [str(_local_image(i, Path(tmp))) if is_dicomweb(i) else i for i in images]


@contextmanager
def remote_paths(image: str, out: str) -> Iterator[tuple[str, str, Callable[[Path], list[dict[str, str]]] | None]]:
    """(local image, local output, store) for a command whose IMAGE and/or OUT may be DICOMweb URLs. A remote
    IMAGE is retrieved into a private temporary folder; a remote OUT becomes a DICOM SEG file there, and
    ``store(path)`` stores it into the service (the SEG's own study); everything is removed on exit."""
    if not (is_dicomweb(image) or is_dicomweb(out)):
        yield image, out, None
        return
    sink = parse_url(out) if is_dicomweb(out) else None
    if sink is not None and sink.series:
        raise ConfigError(f"--out {sink}: a SEG is stored into the service (or a study), not into a series",
                          "give the service URL, e.g. dicomweb+http://HOST:PORT/dicom-web")
    with tempfile.TemporaryDirectory(prefix="mmfm-dicomweb-") as tmp:
        local_image = str(_local_image(image, Path(tmp))) if is_dicomweb(image) else image
        if sink is None:
            yield local_image, out, None
            return

        def store(path: Path) -> list[dict[str, str]]:
            import pydicom

            ds = pydicom.dcmread(path)
            if sink.study and str(ds.StudyInstanceUID) != sink.study:
                raise ConfigError(f"--out {sink}: the SEG belongs to another study than the URL names",
                                  "give the service URL: the SEG is stored into its image's study")
            return DicomwebClient(sink).store([ds])

        yield local_image, str(Path(tmp) / SEG_NAME), store
