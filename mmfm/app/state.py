"""What one `mmfm serve` app holds: its uploads (sessions), its models and the per-upload helpers the routes share.

Every file lives under one temporary folder that is deleted when the app stops. The routes
(:mod:`mmfm.app.routes`, :mod:`mmfm.app.pacs`) reach the state through :func:`app_state`, a FastAPI dependency.
"""

from __future__ import annotations

import io
import secrets
import shutil
import tempfile
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Request

from mmfm.app.uploads import UploadLimits, image_in_folder, image_suffix, refuse_detached, unpack_zip
from mmfm.data.io.formats import HEAD_BYTES
from mmfm.errors import ConfigError, MMFMError


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

    def set_mask(self, path: Path, model: str) -> None:
        """A new mask from ``model``: its read-back array and its DICOM SEG are made again when next asked for."""
        self.mask, self.mask_array, self.mask_model, self.seg = path, None, model, None

    def written_mask(self) -> Path:
        """The mask file; :class:`ConfigError` before there is one."""
        if self.mask is None or not self.mask.exists():
            raise ConfigError("no mask yet", "draw a box or click a point and press Segment")
        return self.mask


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
                 sessions_per_client: int | None = None, limits: UploadLimits | None = None,
                 pacs: Any = None) -> None:
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
        self.pacs = pacs                      # the DICOMweb service (mmfm.data.io.dicomweb.parse_url) or None
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

    def seg_of(self, s: Session, hint: str) -> Path:
        """Session ``s``'s mask as a DICOM SEG of its DICOM image, written on first use (under the model lock);
        ``hint``: what to do instead for an image that is not DICOM."""
        from mmfm.data.io.dicom_seg import DICOM_FORMATS

        s.written_mask()
        if s.fmt not in DICOM_FORMATS:
            raise ConfigError(f"a DICOM SEG references DICOM source images; this image is {s.fmt}", hint)
        with self.lock:
            if s.seg is None or not s.seg.exists():
                s.seg = write_seg_of_mask(s)
        return s.seg

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
    from mmfm.data.presets import image_preset

    img = session.image
    preset = image_preset(img, preset_name)[0]
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


def opened(sid: str, s: Session) -> dict[str, Any]:
    """What the page needs of a new session (an upload, a PACS series)."""
    preset, _ = display_volume(s, None)        # computed by ServeState.load, in the worker thread
    img = s.image
    return {"id": sid, "format": s.fmt, "modality": img.modality, "shape": list(img.spatial_shape),
            "spatial_dims": img.spatial_dims, "slices": img.spatial_shape[2] if img.spatial_dims == 3 else 1,
            "preset": preset, "header": s.header,
            "spacing": [float(v) for v in np.linalg.norm(img.affine[:3, :img.spatial_dims], axis=0)]}


def mask_answer(sid: str, s: Session, rec: dict[str, Any]) -> dict[str, Any]:
    """What the page gets for a new mask (a MaskResult): its size in voxels, its download links, its model."""
    return {"foreground": rec.get("foreground_voxels", rec.get("foreground_pixels", 0)), "mask": f"/api/mask/{sid}",
            "model": s.mask_model, **seg_link(s, sid)}


def seg_link(s: Session, sid: str) -> dict[str, str]:
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


def read_mask(s: Session) -> np.ndarray:
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


def app_state(request: Request) -> ServeState:
    """The :class:`ServeState` of the app serving ``request`` (a FastAPI dependency of every route)."""
    return request.app.state.mmfm  # type: ignore[no-any-return]
