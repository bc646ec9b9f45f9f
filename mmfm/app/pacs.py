"""`mmfm serve --dicomweb URL`: the app on a PACS. Three routes beside the upload's:

- ``GET /api/pacs/series``: the series of the URL's study (or of the whole service; QIDO-RS, at most 1,000),
  each with its UIDs, modality, number of instances and the patient as a keyed pseudonym (no name, no ID);
- ``POST /api/pacs/open``: one of them retrieved (WADO-RS) into a new session, read as an upload is: the same
  byte limit (``--max-upload-mb``) and pixel budget, in a worker thread, removed with the app;
- ``POST /api/pacs/store/{id}``: the session's mask as a DICOM SEG (the one the download gives) stored into the
  image's study (STOW-RS); the answer lists its UIDs.

The browser only names UIDs; the server talks to the PACS with the credentials of its own environment
(:mod:`mmfm.data.io.dicomweb`), which never reach the page. A URL that names a study or series confines the app to
it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from mmfm.app.schemas import Opened
from mmfm.app.state import ServeState, app_state, opened
from mmfm.data.io.dicomweb import DicomwebClient, DicomwebError
from mmfm.errors import ConfigError


class OpenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    study: str = Field(pattern=r"^[0-9]+(\.[0-9]+)*$", max_length=64)
    series: str = Field(pattern=r"^[0-9]+(\.[0-9]+)*$", max_length=64)


class SeriesRow(BaseModel):
    """One series of the PACS, as the page lists it (the patient as a pseudonym, never the PACS's ID)."""

    study: str
    series: str
    modality: str
    number: str
    instances: str
    patient: str


class SeriesList(BaseModel):
    pacs: str
    series: list[SeriesRow]


class StoredInstance(BaseModel):
    study: str
    series: str
    instance: str
    modality: str


class Stored(BaseModel):
    stored: list[StoredInstance]


def _row(item: dict[str, Any]) -> dict[str, Any]:
    from mmfm.data.pseudonym import pseudonym

    def value(tag: str) -> str:
        return str((item.get(tag, {}).get("Value") or [""])[0])

    return {"study": value("0020000D"), "series": value("0020000E"), "modality": value("00080060"),
            "number": value("00200011"), "instances": value("00201209"),
            "patient": pseudonym(value("00100020"), "patient")}


State = Annotated[ServeState, Depends(app_state)]

router = APIRouter(prefix="/api/pacs")   # included by create_app when the app is given a PACS (state.pacs)


def client(state: ServeState) -> DicomwebClient:
    """A client of the app's PACS (its credentials from the server's environment), bounded by the upload limit."""
    return DicomwebClient(state.pacs, max_bytes=state.max_bytes)


@router.get("/series", response_model=SeriesList)
def series(state: State) -> dict[str, Any]:
    service = state.pacs
    query = {"SeriesInstanceUID": service.series} if service.series else {}
    return {"pacs": service.host, "series": [_row(s) for s in client(state).search_series(service.study, query)]}


@router.post("/open", response_model=Opened)
async def open_series(request: Request, body: OpenRequest, state: State) -> dict[str, Any]:
    service = state.pacs
    if (service.study and body.study != service.study) or (service.series and body.series != service.series):
        raise ConfigError("that series is outside the study this app serves", "pick one from the list")

    def place(folder: Path) -> Path:
        pacs = client(state)
        pacs.check_image_series(body.study, body.series)
        files = pacs.retrieve_series(body.study, body.series, folder / "series")
        if not files:
            raise DicomwebError(f"series {body.series} holds no instances", "pick an image series")
        return files[0] if len(files) == 1 else folder / "series"

    who = request.client.host if request.client else ""
    sid, s = await run_in_threadpool(state.load, place, state.max_bytes, who)
    return opened(sid, s)


@router.post("/store/{sid}", response_model=Stored)
def store(sid: str, state: State) -> dict[str, Any]:
    import pydicom

    seg = state.seg_of(state.get(sid), "open a series from the PACS")
    return {"stored": client(state).store([pydicom.dcmread(seg)])}
