"""The JSON the app takes and gives: one pydantic model per request body (unknown keys refused, sizes bounded)
and per response (FastAPI validates every answer against it; both are described in ``/openapi.json``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat

Point = tuple[FiniteFloat, FiniteFloat]


class SegmentRequest(BaseModel):
    """``POST /api/segment/{id}``: a box and/or points on the slice shown (pixel coordinates of the image)."""

    model_config = ConfigDict(extra="forbid")
    box: list[FiniteFloat] | None = Field(None, min_length=4, max_length=4)
    points: list[Point] | None = Field(None, max_length=256)
    negative_points: list[Point] | None = Field(None, max_length=256)
    slice: int | None = None
    model: str | None = Field(None, max_length=200)


class ZeroShotRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    texts: list[str] = Field(default_factory=list, max_length=256)
    mode: Literal["classify", "retrieve"] = "classify"
    slice: int | None = None
    model: str | None = Field(None, max_length=200)


class PredictRequest(BaseModel):
    """``POST /api/predict/{id}``: a trained segmentation run applied to the whole upload (no prompt)."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(None, max_length=200)


class ExplainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    slice: int | None = None
    model: str | None = Field(None, max_length=200)


class ChatTurn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["user", "assistant"]
    content: str = Field(min_length=1, max_length=4000)


class ChatRequest(BaseModel):
    """``POST /api/chat``: the conversation so far, the user's question last (the app keeps no chat history);
    ``id``: an upload to ask about (an assistant run with a vision bridge)."""

    model_config = ConfigDict(extra="forbid")
    messages: list[ChatTurn] = Field(min_length=1, max_length=40)
    id: str | None = Field(None, max_length=64)
    model: str | None = Field(None, max_length=200)
    max_new_tokens: int = Field(128, ge=1, le=512)


REQUEST_HINTS = {"chat": "send messages [{role: user|assistant, content}], the question last; id (an upload) to "
                         "ask about it; max_new_tokens (1..512)",
                 "segment": "send box [x0, y0, x1, y1], points [[x, y], ...], negative_points, slice (an integer), "
                            "model (a name)",
                 "zeroshot": "send texts (a list of strings), mode (classify or retrieve), slice (an integer)",
                 "explain": "send slice (an integer) and model (a name)"}


# -- responses ------------------------------------------------------------------------------------------------------
class Models(BaseModel):
    """``GET /api/models``: what the app serves, the display presets, the upload limit, whether a PACS is set."""

    models: list[dict[str, Any]]
    presets: list[str]
    max_upload_mb: float
    pacs: bool


class Opened(BaseModel):
    """An upload or PACS series made a session: its id and what the page shows of it."""

    id: str
    format: str
    modality: str
    shape: list[int]
    spatial_dims: int
    slices: int
    preset: str
    header: dict[str, Any]
    spacing: list[float]


class MaskResult(BaseModel):
    """A mask made (``segment``: a prompt; ``predict``: a trained segmenter): its foreground size and links.
    ``seg``: the DICOM SEG download, for a DICOM upload only; ``slices``: first and last slice of a propagation;
    ``empty``: a trained segmenter found nothing."""

    foreground: int
    mask: str
    model: str
    seg: str | None = None
    slices: list[int] | None = None
    empty: bool | None = None


class Ranked(BaseModel):
    text: str
    score: float


class ZeroShotResult(BaseModel):
    model: str
    ranked: list[Ranked]


class ExplainResult(BaseModel):
    prediction: dict[str, Any]          # the class explained and its probability
    overlay: str
    model: str


class ChatAnswer(BaseModel):
    """One assistant answer (research output, not a diagnosis: ``label`` says so on every answer)."""

    model: str
    answer: str
    label: str
    prompt_tokens: int
    new_tokens: int
    seconds: float
    stopped_by: str
    tokens_per_s: float | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    precision: dict[str, Any] = Field(default_factory=dict)
    turns_used: int
    turns_dropped: int
