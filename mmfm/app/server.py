"""`mmfm serve`: a local web app to try mmfm's models on your own scans (FastAPI, bound to 127.0.0.1).

Upload a DICOM file, a DICOM series (zip), NIfTI, MetaImage, NRRD or PNG; scroll the slices with a window preset;
draw a box or click points and get the LiteMedSAM mask (2D, or propagated through a volume) as NIfTI on the
input's grid; zero-shot classification and text retrieval with an image-text run; a saliency overlay of a
classification run; the de-identified DICOM header. The app holds no model logic: it calls the same workflows as
the CLI (``mmfm.workflows.segment``, ``mmfm.workflows.explain``, ``mmfm.tasks.zero_shot``).

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

import io
import logging
import secrets
import shutil
import tempfile
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from mmfm.app.schemas import (
    REQUEST_HINTS,
    ChatAnswer,
    ChatRequest,
    ExplainRequest,
    ExplainResult,
    MaskResult,
    Models,
    Opened,
    PredictRequest,
    SegmentRequest,
    ZeroShotRequest,
    ZeroShotResult,
)
from mmfm.app.uploads import UploadLimits, image_in_folder, image_suffix, refuse_detached, unpack_zip
from mmfm.data.io.formats import HEAD_BYTES
from mmfm.errors import ConfigError, InputFileError, MMFMError

log = logging.getLogger(__name__)

@dataclass
class Session:
    folder: Path
    path: Path                     # the uploaded file (or the unzipped series folder)
    image: Any                     # mmfm.data.sample.Image
    fmt: str
    header: dict[str, Any] = field(default_factory=dict)
    display: dict[str, np.ndarray] = field(default_factory=dict)   # preset name -> (*spatial) in [0, 1]
    mask: Path | None = None
    mask_array: np.ndarray | None = None   # the mask as read back, kept while the user scrolls its slices
    mask_model: str = ""           # the model that made the mask (named in the DICOM SEG)
    seg: Path | None = None        # the mask as a DICOM SEG, written on first download (DICOM uploads)
    client: str = ""               # who uploaded it (IP address): the per-client quota


@dataclass
class LoadedModel:
    name: str
    kind: str                      # promptable | segmenter (a trained segmentation run) | classification | dual
    source: str                    # | assistant (a language model, or a report-gen / vqa run with its bridge)
    vision: bool = False           # an assistant that takes an image


KEEP_SEGMENTERS = 2


class ServeState:
    """Uploads and models of one app; every file lives under one temporary folder."""

    def __init__(self, models: list[str], max_upload_mb: float = 512, max_sessions: int = 16,
                 sessions_per_client: int | None = None, limits: UploadLimits | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="mmfm-serve-"))
        self.max_bytes = int(max_upload_mb * 1024 * 1024)
        self.limits = limits or UploadLimits(max_bytes=self.max_bytes, max_unpacked_bytes=self.max_bytes)
        self.max_sessions = max_sessions
        self.per_client = max(1, sessions_per_client or max_sessions // 2)
        self.sessions: OrderedDict[str, Session] = OrderedDict()
        self.lock = threading.Lock()          # one model call at a time: 2 cores are shared, not oversubscribed
        self.decoding = threading.Lock()      # one upload decoded at a time: peak memory is one upload's
        self.sessions_lock = threading.Lock()  # uploads land from worker threads
        self.models = [self._describe(m) for m in (models or ["litemedsam"])]
        self._cache: dict[str, Any] = {}
        self._loaded: dict[str, Any] = {}     # promptable model source -> its network and facts, loaded once
        # (upload, model) -> its Segmenter: the upload read and preset, its slice embeddings kept, so a further
        # prompt costs the prompt encoder and decoder. LiteMedSAM keeps 4 MB per embedded slice: the most recent
        # KEEP_SEGMENTERS uploads keep theirs, older ones embed again if prompted again.
        self._segmenters: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._segmenters_lock = threading.Lock()   # a dropped upload's are removed from the uploading thread

    # -- models ---------------------------------------------------------------------------------------------------
    @staticmethod
    def _describe(source: str) -> LoadedModel:
        from mmfm.encoders.text.llm import LANGUAGE_MODELS
        from mmfm.workflows.run_kind import run_kind

        if source == "litemedsam":
            return LoadedModel("litemedsam", "promptable", source)
        if source in LANGUAGE_MODELS:
            return LoadedModel(source, "assistant", source)
        kind = run_kind(source)
        if kind is None:
            raise ConfigError(f"--model {source}: neither litemedsam, a language model nor a run folder",
                              "give litemedsam, smollm2, a classification, segmentation or promptable run, an "
                              "image-text run, or a report-gen / vqa run trained with task.decoder")
        served = {"classification": "classification", "promptable_segmentation": "promptable",
                  "segmentation": "segmenter", "image_text": "dual", "assistant": "assistant"}
        if kind not in served:
            raise ConfigError(f"--model {source}: the app serves classification, segmentation, promptable, "
                              f"image-text and assistant runs, not a {kind} run", "give another run")
        return LoadedModel(Path(source).name, served[kind], source, vision=kind == "assistant")

    def model(self, kind: str, name: str | None = None) -> LoadedModel:
        for m in self.models:
            if m.kind == kind and (name is None or m.name == name):
                return m
        raise ConfigError(f"no {kind} model is loaded", "start mmfm serve with --model <run> for it")

    def segmenter(self, sid: str, model: LoadedModel) -> Any:
        """The :class:`~mmfm.workflows.segment.Segmenter` of upload ``sid`` with ``model`` (made on first use;
        call under ``self.lock``)."""
        from mmfm.workflows.segment import Segmenter, load_model

        key = (sid, model.source)
        with self._segmenters_lock:
            if key in self._segmenters:
                self._segmenters.move_to_end(key)
                return self._segmenters[key]
        if model.source not in self._loaded:
            self._loaded[model.source] = load_model(model.source)
        seg = Segmenter(self.get(sid).path, model.source, loaded=self._loaded[model.source])
        with self._segmenters_lock:
            self._segmenters[key] = seg
            while len(self._segmenters) > KEEP_SEGMENTERS:
                self._segmenters.popitem(last=False)
        return seg

    def assistant(self, model: LoadedModel) -> Any:
        """The loaded :class:`~mmfm.tasks.assistant.Assistant` of ``model`` (loaded on first use)."""
        if model.source not in self._cache:
            from mmfm.workflows.chat import load_assistant

            self._cache[model.source] = load_assistant(model.source)
        return self._cache[model.source]

    def dual(self, source: str) -> Any:
        if source not in self._cache:
            from mmfm.workflows.towers import load_dual

            self._cache[source] = load_dual(source)
        return self._cache[source]

    # -- uploads --------------------------------------------------------------------------------------------------
    def add(self, name: str, data: bytes, client: str = "") -> tuple[str, Session]:
        """Unpack and read one upload (in a worker thread: never on the event loop) and keep it as a session."""
        suffix = image_suffix(name, data[:HEAD_BYTES])
        if not suffix:
            raise ConfigError("this file type is not one mmfm reads here",
                              "upload DICOM (.dcm, or a .zip of a series), NIfTI, MetaImage, NRRD or PNG/JPEG/TIFF "
                              "(a .mhd/.nhdr header with its data file in one .zip)")

        def place(folder: Path) -> Path:
            if suffix == ".zip":
                unpack_zip(data, folder / "series", self.limits)
                return image_in_folder(folder / "series")
            path = folder / f"upload{suffix}"   # the user's file name (often identifying) is not kept
            path.write_bytes(data)
            refuse_detached(path)
            return path

        return self.load(place, len(data), client)

    def load(self, place: Callable[[Path], Path], size: int, client: str = "") -> tuple[str, Session]:
        """A new session: ``place(folder)`` puts the image in its folder (an upload, a PACS series of ``size``
        bytes at most) and returns its path; it is read under the pixel budget of ``size`` bytes."""
        from mmfm.data.io import image_format, read_image
        from mmfm.data.io.checks import voxel_budget

        sid = secrets.token_hex(8)
        folder = self.root / sid
        folder.mkdir()
        try:
            with self.decoding, voxel_budget(*self.limits.budget(size)):
                path = place(folder)
                image = read_image(path)
                if not np.isfinite(image.array).all():
                    raise ConfigError("the image has NaN or infinite values", "fix the file before uploading it")
                header = {}
                fmt = image_format(path)
                if fmt.startswith("dicom"):
                    header = dicom_header(path)
                session = Session(folder, path, image, fmt, header, client=client)
                display_volume(session, None)             # the first view, computed here and not on the event loop
        except MMFMError:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        except Exception as e:   # a reader's own exception on a damaged file
            shutil.rmtree(folder, ignore_errors=True)
            raise ConfigError(f"the file could not be read ({type(e).__name__})",
                              "check that it is a complete image file") from None
        with self.sessions_lock:
            self._make_room(client)
            self.sessions[sid] = session
        return sid, session

    def _make_room(self, client: str) -> None:
        """Before a client's new upload: drop its own oldest beyond its quota; when the app is full, drop the oldest
        upload of the client holding the most, so that one client cannot evict everybody else's uploads."""
        def drop(sid: str) -> None:
            shutil.rmtree(self.sessions.pop(sid).folder, ignore_errors=True)
            with self._segmenters_lock:
                for key in [k for k in self._segmenters if k[0] == sid]:
                    del self._segmenters[key]

        mine = [sid for sid, s in self.sessions.items() if s.client == client]
        while len(mine) >= self.per_client:
            drop(mine.pop(0))
        while len(self.sessions) >= self.max_sessions:
            held = Counter(s.client for s in self.sessions.values())
            most = max(held.values())
            drop(next(sid for sid, s in self.sessions.items() if held[s.client] == most))

    def get(self, sid: str) -> Session:
        with self.sessions_lock:
            s = self.sessions.get(sid)
        if s is None:
            raise ConfigError("unknown or expired upload", "upload the file again")
        return s

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def dicom_header(path: Path) -> dict[str, Any]:
    """The header fields mmfm shows (no PHI) and the patient as a keyed pseudonym."""
    import pydicom

    from mmfm.data.io.dicom import is_dicom, safe_header
    from mmfm.data.pseudonym import pseudonym

    first = path if path.is_file() else next(p for p in sorted(path.rglob("*")) if p.is_file() and is_dicom(p))
    ds = pydicom.dcmread(first, stop_before_pixels=True)
    return {"patient": pseudonym(str(ds.get("PatientID", "")), "patient"), **safe_header(ds)}


def display_volume(session: Session, preset_name: str | None) -> tuple[str, np.ndarray]:
    """(preset used, the image in [0, 1] as (*spatial), channels averaged) for display."""
    from mmfm.data.presets import choose_preset

    img = session.image
    preset = choose_preset(img.modality, preset_name, colour=img.array.shape[0] >= 3 and img.spatial_dims == 2)[0]
    if preset.name not in session.display:
        session.display[preset.name] = np.clip(preset(img.array.astype(np.float32)), 0, 1).mean(0)
    return preset.name, session.display[preset.name]


def png(plane: np.ndarray, rgba: bool = False) -> bytes:
    """(i, j) array -> PNG bytes (rows = j): grey in [0, 1], or an RGBA mask overlay."""
    from PIL import Image as PILImage

    buf = io.BytesIO()
    if rgba:
        m = plane.T > 0
        out = np.zeros((*m.shape, 4), np.uint8)
        out[m] = (255, 60, 60, 140)
        PILImage.fromarray(out, mode="RGBA").save(buf, format="PNG")
    else:
        PILImage.fromarray((plane.T * 255).astype(np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def create_app(models: list[str] | None = None, max_upload_mb: float = 512, max_sessions: int = 16,
               hosts: list[str] | tuple[str, ...] = (), sessions_per_client: int | None = None,
               limits: UploadLimits | None = None, dicomweb: str | None = None) -> FastAPI:
    """The FastAPI app; ``models``: ``litemedsam`` and/or run folders (classification, promptable, image-text).
    ``hosts``: Host names answered besides the loopback ones (the ``--host`` the app is served on).
    ``dicomweb``: a PACS (service, study or series URL) to list, open and store SEGs into (:mod:`mmfm.app.pacs`)."""
    from mmfm.app.guard import protect
    from mmfm.app.page import PAGE, SCRIPT, STYLE

    state = ServeState(models or ["litemedsam"], max_upload_mb, max_sessions, sessions_per_client, limits)

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        yield
        state.close()                  # every upload and result is deleted with the app

    app = FastAPI(title="mmfm", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.mmfm = state
    protect(app, hosts)

    @app.exception_handler(MMFMError)
    async def mmfm_error(request: Request, exc: MMFMError) -> JSONResponse:
        """The error's own problem and hint (and its type, for a client that tells them apart)."""
        import re

        if isinstance(exc, InputFileError) and exc.path.startswith(str(state.root)):
            problem = f"the upload: {exc.what}"
        else:   # the server's temporary paths mean nothing to the user (and are not theirs to see): "the upload"
            problem = re.sub(r"\S*mmfm-serve-[^\s:]*", "the upload", exc.problem)
        return JSONResponse({"error": problem, "hint": exc.hint, "type": type(exc).__name__}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ())[1:]) or "body"
        kind = next((k for k in REQUEST_HINTS if f"/api/{k}" in request.url.path), "")
        return JSONResponse({"error": f"bad request field '{where}': {first.get('msg', 'invalid')}",
                             "hint": REQUEST_HINTS.get(kind, "check the request")}, status_code=400)

    @app.exception_handler(Exception)
    async def other_error(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": f"internal error ({type(exc).__name__})", "hint": "see the server console"},
                            status_code=500)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return PAGE

    @app.get("/static/app.js")
    def script() -> Response:
        return Response(SCRIPT, media_type="text/javascript; charset=utf-8")

    @app.get("/static/app.css")
    def style() -> Response:
        return Response(STYLE, media_type="text/css; charset=utf-8")

    if dicomweb:
        from mmfm.app.pacs import add_pacs_routes

        add_pacs_routes(app, state, dicomweb)

    @app.get("/api/models", response_model=Models)
    def list_models() -> dict[str, Any]:
        from mmfm.data.presets import PRESETS

        return {"models": [m.__dict__ | {"source": m.name} for m in state.models],
                "presets": sorted(PRESETS), "max_upload_mb": state.max_bytes / 1024 / 1024, "pacs": bool(dicomweb)}

    @app.post("/api/upload", response_model=Opened)
    async def upload(request: Request) -> dict[str, Any]:
        size = int(request.headers.get("content-length") or 0)
        if size > state.max_bytes:
            raise ConfigError(f"the upload is {size / 1e6:.0f} MB, over the limit of {state.max_bytes / 1e6:.0f} MB",
                              "start mmfm serve with a larger --max-upload-mb, or upload a smaller file")
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > state.max_bytes:
                raise ConfigError("the upload is over the size limit", "start mmfm serve with --max-upload-mb")
        if not data:
            raise ConfigError("the upload is empty", "choose a file")
        name = request.headers.get("x-filename", "")
        client = request.client.host if request.client else ""
        sid, s = await run_in_threadpool(state.add, name, bytes(data), client)
        return opened(sid, s)

    @app.get("/api/slice/{sid}")
    def slice_png(sid: str, k: int = 0, preset: str = "") -> Response:
        s = state.get(sid)
        _, vol = display_volume(s, preset or None)
        plane = vol if vol.ndim == 2 else vol[..., int(np.clip(k, 0, vol.shape[2] - 1))]
        return Response(png(plane), media_type="image/png")

    @app.post("/api/segment/{sid}", response_model=MaskResult, response_model_exclude_none=True)
    def segment(sid: str, body: SegmentRequest) -> dict[str, Any]:
        from mmfm.workflows.segment import segment as run_segment

        s = state.get(sid)
        model = state.model("promptable", body.model)
        out = s.folder / ("mask.png" if s.fmt == "raster" else "mask.nii.gz")
        with state.lock:       # the upload's Segmenter keeps its embeddings: a further click runs the decoder
            rec = run_segment(s.path, out, box=body.box, points=body.points or (),
                              negative_points=body.negative_points or (),
                              slice_index=body.slice if s.image.spatial_dims == 3 else None,
                              model=model.source, overwrite=True, progress=False,
                              segmenter=state.segmenter(sid, model))
        s.mask, s.mask_array, s.mask_model, s.seg = out, None, model.name, None
        return {"foreground": rec.get("foreground_voxels", rec.get("foreground_pixels", 0)),
                "slices": rec.get("slices"), "mask": f"/api/mask/{sid}", "model": model.name, **_seg_link(s, sid)}

    @app.post("/api/chat", response_model=ChatAnswer)
    def chat(body: ChatRequest) -> dict[str, Any]:
        """One answer of a loaded assistant (research output, not a diagnosis), about the upload ``id`` when given;
        the oldest turns are dropped when the conversation outgrows the model's context."""
        from mmfm.tasks.assistant import GenerationOptions
        from mmfm.workflows.chat import answer_within_context, read_run_image, record

        model = state.model("assistant", body.model)
        if body.messages[-1].role != "user":
            raise ConfigError("the conversation must end with the user's question", "add the question last")
        with state.lock:
            bot = state.assistant(model)
            if body.id is not None and not bot.vision:
                raise ConfigError(f"{model.name} is a language model without a vision bridge: it cannot see the "
                                  "upload", "ask without the image, or serve a report-gen / vqa run trained with "
                                         "task.decoder")
            image = read_run_image(bot, str(state.get(body.id).path)) if body.id is not None else None
            reply, kept = answer_within_context(bot, [t.model_dump() for t in body.messages],
                                                GenerationOptions(max_new_tokens=body.max_new_tokens), image)
        return record(bot, reply) | {"turns_used": len(kept), "turns_dropped": len(body.messages) - len(kept)}

    @app.post("/api/predict/{sid}", response_model=MaskResult, response_model_exclude_none=True)
    def predict(sid: str, body: PredictRequest) -> dict[str, Any]:
        """The trained segmenter's mask of the whole upload, on its grid (NIfTI), as `mmfm predict` writes it."""
        from mmfm.workflows.segment import segment as run_segment

        s = state.get(sid)
        model = state.model("segmenter", body.model)
        out = s.folder / "mask.nii.gz"
        with state.lock:
            rec = run_segment(s.path, out, model=model.source, overwrite=True, progress=False)
        s.mask, s.mask_array, s.mask_model, s.seg = out, None, model.name, None
        return {"foreground": rec.get("foreground_voxels", rec.get("foreground_pixels", 0)),
                "empty": rec["empty"], "mask": f"/api/mask/{sid}", "model": model.name, **_seg_link(s, sid)}

    @app.get("/api/mask/{sid}")
    def mask_file(sid: str) -> Response:
        s = state.get(sid)
        if s.mask is None or not s.mask.exists():
            raise ConfigError("no mask yet", "draw a box or click a point and press Segment")
        kind = "image/png" if s.mask.suffix == ".png" else "application/gzip"
        name = "mask.png" if s.mask.suffix == ".png" else "mask.nii.gz"
        return Response(s.mask.read_bytes(), media_type=kind,
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    @app.get("/api/seg/{sid}")
    def seg_file(sid: str) -> Response:
        """The mask as a DICOM Segmentation of the uploaded DICOM image (its instances referenced, its grid)."""
        s = state.get(sid)
        if s.mask is None or not s.mask.exists():
            raise ConfigError("no mask yet", "draw a box or click a point and press Segment")
        if not _seg_link(s, sid):
            raise ConfigError(f"a DICOM SEG references DICOM source images; this upload is {s.fmt}",
                              "download the mask as NIfTI or PNG")
        with state.lock:
            if s.seg is None or not s.seg.exists():
                s.seg = write_seg_of_mask(s)
        return Response(s.seg.read_bytes(), media_type="application/dicom",
                        headers={"Content-Disposition": 'attachment; filename="mask_seg.dcm"'})

    @app.get("/api/maskslice/{sid}")
    def mask_slice(sid: str, k: int = 0) -> Response:
        s = state.get(sid)
        if s.mask is None:
            raise ConfigError("no mask yet", "press Segment first")
        m = _read_mask(s)
        plane = m if m.ndim == 2 else m[..., int(np.clip(k, 0, m.shape[2] - 1))]
        return Response(png(plane, rgba=True), media_type="image/png")

    @app.post("/api/zeroshot/{sid}", response_model=ZeroShotResult)
    def zeroshot(sid: str, body: ZeroShotRequest) -> dict[str, Any]:
        texts = [t for t in body.texts if t.strip()]
        if len(texts) < 2 and body.mode == "classify":
            raise ConfigError("zero-shot classification needs at least two class names", "e.g. liver, brain")
        if not texts:
            raise ConfigError("no text given", "type one or more texts")
        s = state.get(sid)
        m = state.model("dual", body.model)
        with state.lock:
            scores = text_scores(state.dual(m.source), s, texts, body.slice)
        order = sorted(range(len(texts)), key=lambda i: -scores[i])
        return {"model": m.name, "ranked": [{"text": texts[i], "score": scores[i]} for i in order]}

    @app.post("/api/explain/{sid}", response_model=ExplainResult)
    def explain(sid: str, body: ExplainRequest) -> dict[str, Any]:
        from mmfm.workflows.explain import explain as run_explain

        s = state.get(sid)
        m = state.model("classification", body.model)
        out = s.folder / "explain"
        with state.lock:
            rec = run_explain(m.source, s.path, out, slice_index=body.slice, overwrite=True)
        return {"prediction": rec["prediction"], "overlay": f"/api/explain/{sid}/overlay.png", "model": m.name}

    @app.get("/api/explain/{sid}/overlay.png")
    def explain_overlay(sid: str) -> Response:
        s = state.get(sid)
        f = s.folder / "explain" / "overlay.png"
        if not f.exists():
            raise ConfigError("no explanation yet", "press Explain first")
        return Response(f.read_bytes(), media_type="image/png")

    @app.get("/api/header/{sid}")
    def header(sid: str) -> dict[str, Any]:
        return state.get(sid).header

    return app


def opened(sid: str, s: Session) -> dict[str, Any]:
    """What the page needs of a new session (an upload, a PACS series)."""
    preset, _ = display_volume(s, None)        # computed by ServeState.load, in the worker thread
    img = s.image
    return {"id": sid, "format": s.fmt, "modality": img.modality, "shape": list(img.spatial_shape),
            "spatial_dims": img.spatial_dims, "slices": img.spatial_shape[2] if img.spatial_dims == 3 else 1,
            "preset": preset, "header": s.header,
            "spacing": [float(v) for v in np.linalg.norm(img.affine[:3, :img.spatial_dims], axis=0)]}


def _seg_link(s: Session, sid: str) -> dict[str, str]:
    """``{"seg": URL}`` where the upload is DICOM (the SEG download), else nothing."""
    from mmfm.data.io.dicom_seg import DICOM_FORMATS

    return {"seg": f"/api/seg/{sid}"} if s.fmt in DICOM_FORMATS else {}


def write_seg_of_mask(s: Session) -> Path:
    """The session's mask (NIfTI on the upload's grid: the label map itself) as a DICOM SEG beside it, with
    mmfm's writer (one segment per label value), moved into place whole."""
    import nibabel as nib

    from mmfm import __version__
    from mmfm.data.io.dicom_seg import write_dicom_result

    assert s.mask is not None
    labels = np.asarray(nib.load(s.mask).dataobj).astype(np.uint8)          # (I, J[, K])
    values = [int(v) for v in np.unique(labels) if v > 0] or [1]
    names = {v: "structure" if values == [1] else f"label {v}" for v in values}
    target, tmp = s.folder / "mask_seg.dcm", s.folder / ".mask_seg.dcm.partial"
    write_dicom_result(tmp, "SEG", labels, names, s.path, s.mask_model or "mmfm", f"mmfm {__version__}")
    tmp.replace(target)
    return target


def _read_mask(s: Session) -> np.ndarray:
    from mmfm.data.io import read_image

    if s.mask is None:
        raise ConfigError("no mask yet", "press Segment first")
    if s.mask_array is None:
        s.mask_array = read_image(s.mask).array[0] > 0
    return s.mask_array


def text_scores(dual_and_spec: tuple[Any, dict[str, Any]], s: Session, texts: list[str], k: int | None
                ) -> list[float]:
    """Softmax over ``texts`` of the image-text model's scaled cosine similarities (zero-shot classification
    with the texts as class prompts; the same ranking is text retrieval)."""
    from mmfm.tasks.zero_shot import zero_shot_probs
    from mmfm.workflows.model_input import dual_input

    dual, spec = dual_and_spec
    x, _ = dual_input(s.image, spec, None, k)                                   # (1, C, *size)
    return [float(p) for p in zero_shot_probs(dual, x, [[t] for t in texts])[0]]


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
