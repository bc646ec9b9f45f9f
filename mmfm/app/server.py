"""`mmfm serve`: a local web app to try mmfm's models on your own scans (FastAPI, bound to 127.0.0.1).

Upload a DICOM file, a DICOM series (zip), NIfTI, MetaImage, NRRD or PNG; scroll the slices with a window preset;
draw a box or click points and get the LiteMedSAM mask (2D, or propagated through a volume) as NIfTI on the
input's grid; zero-shot classification and text retrieval with an image-text run; a saliency overlay of a
classification run; the de-identified DICOM header. The app holds no model logic: it calls the same workflows as
the CLI (``mmfm.workflows.segment``, ``mmfm.workflows.explain``, ``mmfm.tasks.zero_shot``). The app is assembled
here from its parts: its state (:mod:`mmfm.app.state`), its routes by family (:mod:`mmfm.app.routes`,
:mod:`mmfm.app.pacs`), typed bodies and answers (:mod:`mmfm.app.schemas`) and the guard (:mod:`mmfm.app.guard`).

Uploads are size-limited, read by mmfm's readers (a bad file gets the reader's message, never a traceback), kept
in one temporary folder that is deleted when the app stops (and per upload when more than ``max_sessions`` are
kept), and never logged by name: a session is a random id, and the upload's name travels in a header, not a URL.

What a stranger's file or a web page can try, and what stops it (docs/app.md says what is not defended): zips are
bounded in files and unpacked size (:mod:`mmfm.app.uploads`); every header's pixel count is checked against a budget
before decoding (:func:`mmfm.data.io.checks.voxel_budget`); a detached MetaImage/NRRD header is read only with its
data file from the same zip, confined to the header's folder; uploads are decoded in a worker thread, one at a
time, so other clients keep being served; each client (IP address) holds at most ``sessions_per_client`` uploads
and a full app evicts from the client that holds the most; every response carries a strict CSP and nosniff, and
only loopback names and the ``--host`` given are answered (:mod:`mmfm.app.guard`); request bodies are typed.
"""

from __future__ import annotations

import logging
import re
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from mmfm.app.schemas import REQUEST_HINTS
from mmfm.app.state import ServeState
from mmfm.app.uploads import UploadLimits
from mmfm.errors import InputFileError, MMFMError

log = logging.getLogger(__name__)


def create_app(models: list[str] | None = None, max_upload_mb: float = 512, max_sessions: int = 16,
               hosts: list[str] | tuple[str, ...] = (), sessions_per_client: int | None = None,
               limits: UploadLimits | None = None, dicomweb: str | None = None) -> FastAPI:
    """The FastAPI app; ``models``: ``litemedsam`` and/or run folders (classification, promptable, image-text).
    ``hosts``: Host names answered besides the loopback ones (the ``--host`` the app is served on).
    ``dicomweb``: a PACS (service, study or series URL) to list, open and store SEGs into (:mod:`mmfm.app.pacs`)."""
    from mmfm.app import routes
    from mmfm.app.guard import protect
    from mmfm.data.io.dicomweb import parse_url

    state = ServeState(models or ["litemedsam"], max_upload_mb, max_sessions, sessions_per_client, limits,
                       pacs=parse_url(dicomweb) if dicomweb else None)

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        yield
        state.close()                  # every upload and result is deleted with the app

    app = FastAPI(title="mmfm", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.mmfm = state
    protect(app, hosts)
    app.add_exception_handler(MMFMError, mmfm_error)                    # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, bad_request)      # type: ignore[arg-type]
    app.add_exception_handler(Exception, other_error)
    for router in (routes.pages, routes.images, routes.tools):
        app.include_router(router)
    if dicomweb:
        from mmfm.app import pacs

        app.include_router(pacs.router)
    return app


async def mmfm_error(request: Request, exc: MMFMError) -> JSONResponse:
    """The error's own problem and hint (and its type, for a client that tells them apart)."""
    root = str(request.app.state.mmfm.root)
    if isinstance(exc, InputFileError) and exc.path.startswith(root):
        problem = f"the upload: {exc.what}"
    else:   # the server's temporary paths mean nothing to the user (and are not theirs to see): "the upload"
        problem = re.sub(r"\S*mmfm-serve-[^\s:]*", "the upload", exc.problem)
    return JSONResponse({"error": problem, "hint": exc.hint, "type": type(exc).__name__}, status_code=400)


async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A request body or parameter of the wrong shape: the first field at fault, and the route's hint."""
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(x) for x in first.get("loc", ())[1:]) or "body"
    kind = next((k for k in REQUEST_HINTS if f"/api/{k}" in request.url.path), "")
    return JSONResponse({"error": f"bad request field '{where}': {first.get('msg', 'invalid')}",
                         "hint": REQUEST_HINTS.get(kind, "check the request")}, status_code=400)


async def other_error(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"error": f"internal error ({type(exc).__name__})", "hint": "see the server console"},
                        status_code=500)


def served_names(host: str) -> list[str]:
    """The Host names to answer besides loopback: ``host`` itself, and for a wildcard bind (0.0.0.0, ::) this
    machine's name and addresses, as other machines will address it."""
    import socket

    if host not in ("0.0.0.0", "::", ""):
        return [host]
    names = {socket.gethostname(), socket.getfqdn()}
    try:
        names |= {str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None)}
    except OSError:
        pass
    return sorted(n for n in names if n)


def serve(models: list[str], host: str = "127.0.0.1", port: int = 8765, max_upload_mb: float = 512,
          dicomweb: str | None = None) -> None:
    import uvicorn

    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(f"serving on {host}: anyone who can reach this machine can upload scans to it (no login; "
                    "see docs/app.md)")
    app = create_app(models, max_upload_mb, hosts=served_names(host), dicomweb=dicomweb)
    log.info(f"open http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/  (Ctrl+C stops; "
             "uploads are deleted when the app stops)")
    uvicorn.run(app, host=host, port=port, log_level="warning",
                proxy_headers=False)   # the client address is the peer's, never an X-Forwarded-For header
