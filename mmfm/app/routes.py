"""The routes of `mmfm serve`, by family: ``pages`` (the page and its static assets), ``images`` (uploads, slices,
masks, the header) and ``tools`` (the models: segment, predict, chat, zero-shot, explain). Each handler takes the
app's :class:`~mmfm.app.state.ServeState` as a dependency and calls mmfm's workflows; none holds model logic.
The PACS routes are in :mod:`mmfm.app.pacs`."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from mmfm.app.schemas import (
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
from mmfm.app.state import (
    ServeState,
    app_state,
    display_volume,
    mask_answer,
    opened,
    png,
    read_mask,
    text_scores,
)
from mmfm.errors import ConfigError

State = Annotated[ServeState, Depends(app_state)]

pages = APIRouter()
images = APIRouter(prefix="/api")
tools = APIRouter(prefix="/api")

# -- pages ------------------------------------------------------------------------------------------------------------
@pages.get("/", response_class=HTMLResponse)
def index() -> str:
    from mmfm.app.page import PAGE

    return PAGE


@pages.get("/static/app.js")
def script() -> Response:
    from mmfm.app.page import SCRIPT

    return Response(SCRIPT, media_type="text/javascript; charset=utf-8")


@pages.get("/static/app.css")
def style() -> Response:
    from mmfm.app.page import STYLE

    return Response(STYLE, media_type="text/css; charset=utf-8")


# -- images -----------------------------------------------------------------------------------------------------------
@images.get("/models", response_model=Models)
def list_models(state: State) -> dict[str, Any]:
    from mmfm.data.presets import PRESETS

    return {"models": [m.__dict__ | {"source": m.name} for m in state.models], "presets": sorted(PRESETS),
            "max_upload_mb": state.max_bytes / 1024 / 1024, "pacs": state.pacs is not None}


@images.post("/upload", response_model=Opened)
async def upload(request: Request, state: State) -> dict[str, Any]:
    """The request body is the file (streamed, bounded by ``--max-upload-mb``); its name, if any, in X-Filename."""
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
    client = request.client.host if request.client else ""
    sid, s = await run_in_threadpool(state.add, request.headers.get("x-filename", ""), bytes(data), client)
    return opened(sid, s)


@images.get("/slice/{sid}")
def slice_png(sid: str, state: State, k: int = 0, preset: str = "") -> Response:
    _, vol = display_volume(state.get(sid), preset or None)
    plane = vol if vol.ndim == 2 else vol[..., int(np.clip(k, 0, vol.shape[2] - 1))]
    return Response(png(plane), media_type="image/png")


@images.get("/header/{sid}")
def header(sid: str, state: State) -> dict[str, Any]:
    return state.get(sid).header


@images.get("/mask/{sid}")
def mask_file(sid: str, state: State) -> Response:
    mask = state.get(sid).written_mask()
    kind = "image/png" if mask.suffix == ".png" else "application/gzip"
    name = "mask.png" if mask.suffix == ".png" else "mask.nii.gz"
    return Response(mask.read_bytes(), media_type=kind,
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@images.get("/seg/{sid}")
def seg_file(sid: str, state: State) -> Response:
    """The mask as a DICOM Segmentation of the uploaded DICOM image (its instances referenced, its grid)."""
    seg = state.seg_of(state.get(sid), "download the mask as NIfTI or PNG")
    return Response(seg.read_bytes(), media_type="application/dicom",
                    headers={"Content-Disposition": 'attachment; filename="mask_seg.dcm"'})


@images.get("/maskslice/{sid}")
def mask_slice(sid: str, state: State, k: int = 0) -> Response:
    m = read_mask(state.get(sid))
    plane = m if m.ndim == 2 else m[..., int(np.clip(k, 0, m.shape[2] - 1))]
    return Response(png(plane, rgba=True), media_type="image/png")


# -- tools ------------------------------------------------------------------------------------------------------------
@tools.post("/segment/{sid}", response_model=MaskResult, response_model_exclude_none=True)
def segment(sid: str, body: SegmentRequest, state: State) -> dict[str, Any]:
    """LiteMedSAM (or a promptable run) on the upload's prompts; a further click on the same upload runs the prompt
    encoder and decoder only (its Segmenter keeps the slice embeddings)."""
    from mmfm.workflows.segment import segment as run_segment

    s = state.get(sid)
    model = state.model("promptable", body.model)
    out = s.folder / ("mask.png" if s.fmt == "raster" else "mask.nii.gz")
    with state.lock:
        rec = run_segment(s.path, out, box=body.box, points=body.points or (),
                          negative_points=body.negative_points or (),
                          slice_index=body.slice if s.image.spatial_dims == 3 else None,
                          model=model.source, overwrite=True, progress=False, segmenter=state.segmenter(sid, model))
    s.set_mask(out, model.name)
    return mask_answer(sid, s, rec) | {"slices": rec.get("slices")}


@tools.post("/predict/{sid}", response_model=MaskResult, response_model_exclude_none=True)
def predict(sid: str, body: PredictRequest, state: State) -> dict[str, Any]:
    """The trained segmenter's mask of the whole upload, on its grid (NIfTI), as `mmfm predict` writes it."""
    from mmfm.workflows.segment import segment as run_segment

    s = state.get(sid)
    model = state.model("segmenter", body.model)
    out = s.folder / "mask.nii.gz"
    with state.lock:
        rec = run_segment(s.path, out, model=model.source, overwrite=True, progress=False)
    s.set_mask(out, model.name)
    return mask_answer(sid, s, rec) | {"empty": rec["empty"]}


@tools.post("/chat", response_model=ChatAnswer)
def chat(body: ChatRequest, state: State) -> dict[str, Any]:
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


@tools.post("/zeroshot/{sid}", response_model=ZeroShotResult)
def zeroshot(sid: str, body: ZeroShotRequest, state: State) -> dict[str, Any]:
    """The texts ranked for the upload by an image-text run (class prompts, or retrieval)."""
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


@tools.post("/explain/{sid}", response_model=ExplainResult)
def explain(sid: str, body: ExplainRequest, state: State) -> dict[str, Any]:
    from mmfm.workflows.explain import explain as run_explain

    s = state.get(sid)
    m = state.model("classification", body.model)
    with state.lock:
        rec = run_explain(m.source, s.path, s.folder / "explain", slice_index=body.slice, overwrite=True)
    return {"prediction": rec["prediction"], "overlay": f"/api/explain/{sid}/overlay.png", "model": m.name}


@tools.get("/explain/{sid}/overlay.png")
def explain_overlay(sid: str, state: State) -> Response:
    f = state.get(sid).folder / "explain" / "overlay.png"
    if not f.exists():
        raise ConfigError("no explanation yet", "press Explain first")
    return Response(f.read_bytes(), media_type="image/png")
