"""`mmfm explain --model RUN IMAGE [--text ...] --out DIR`: saliency maps of a trained model on one image, written
on the input's grid (NIfTI for volumes, DICOM and NIfTI input; PNG for PNG/JPEG/TIFF) with overlays (PNG) and
``explain.json`` (prediction, methods, pointing game against ``--mask``).

Models: a classification run (`mmfm train`: attention rollout for ViT encoders, Grad-CAM for CNN encoders,
occlusion for any) or a vision-language run (`mmfm pretrain` with clip/medclip/gloria and ``--text``: each word's
attention over image regions). The image goes through the preprocessing the model was trained with (its intensity
preset for the image's modality, then a resize to its input size); a 2D model on a volume explains one slice
(``--slice``, default the middle one; the NIfTI is the whole volume with the map on that slice). The input's file
name is not recorded (names often carry patient identifiers).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mmfm.data.io import image_format, read_image
from mmfm.data.io.writers import write_image
from mmfm.errors import ConfigError, InputFileError
from mmfm.trust.explain import explain_methods, pointing_game, saliency, word_regions
from mmfm.workflows.model_input import contract_preset, model_input
from mmfm.workflows.outputs import Staged, check_ours, check_writable

COMMAND = "mmfm explain"


def _load(model: str) -> tuple[str, Any, dict[str, Any]]:
    """("classification", task, run_info) or ("dual", DualEncoder, spec)."""
    run = Path(model)
    if (run / "dual").is_dir() or (run / "dual.json").exists():
        from mmfm.workflows.towers import load_dual

        dual, spec = load_dual(model)
        return "dual", dual, spec
    if not (run / "checkpoints" / "last").exists():
        raise ConfigError(f"--model {model}: not a training run folder",
                          "give the --out folder of `mmfm train` (classification) or of an image-text `mmfm pretrain`")
    from mmfm.workflows.supervised import load_trained

    task, state = load_trained(run)
    info = state["run_info"]
    if info["task"] != "classification":
        hint = ("apply it with `mmfm predict RUN IMAGE --out DIR` (its mask on the image's grid) or "
                "`mmfm serve --model RUN` (the mask over the scan)" if info["task"] in ("segmentation", "detection")
                else "give a classification run or a vision-language run")
        raise ConfigError(f"--model {model}: explanations are for classification and image-text runs, this run "
                          f"trained '{info['task']}'", hint)
    return "classification", task, info


def _on_input_grid(m: torch.Tensor, shape: tuple[int, ...], k: int | None) -> np.ndarray:
    """A (*model grid) map -> the input's spatial shape (the slice k of a volume for a 2D model)."""
    plane = shape[:2] if k is not None else shape
    mode = "trilinear" if len(plane) == 3 else "bilinear"
    r = F.interpolate(m[None, None].float(), size=plane, mode=mode, align_corners=False)[0, 0].numpy()
    if k is None:
        return r
    full = np.zeros(shape, dtype=np.float32)
    full[..., k] = r
    return full


def _overlay(target: Path, base: np.ndarray, maps: dict[str, np.ndarray], title: str,
             mask: np.ndarray | None = None) -> None:
    """PNG: the (preprocessed) image with each map over it; a 3D image shows its middle slice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def plane(a: np.ndarray) -> np.ndarray:
        return (a[..., a.shape[-1] // 2] if a.ndim == 3 else a).T   # rows x columns

    fig, axes = plt.subplots(1, len(maps) + 1, figsize=(3 * (len(maps) + 1), 3.2))
    axes[0].imshow(plane(base), cmap="gray")
    axes[0].set_title("input")
    for ax, (name, m) in zip(axes[1:], maps.items()):
        ax.imshow(plane(base), cmap="gray")
        ax.imshow(plane(m), cmap="jet", alpha=0.45, vmin=0, vmax=1)
        if mask is not None:
            ax.contour(plane(mask.astype(float)), levels=[0.5], colors="w", linewidths=0.8)
        ax.set_title(name, fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(target, format="png", dpi=90)
    plt.close(fig)


def explain(model: str, image: str | Path, out: str | Path, methods: Sequence[str] = (), text: str | None = None,
            mask: str | Path | None = None, mask_label: int | None = None, target: int | None = None,
            slice_index: int | None = None, modality: str | None = None, preset: str | None = None,
            overwrite: bool = False, fmt: str = "nifti") -> dict[str, Any]:
    """Write the saliency maps of ``model`` on ``image`` into the folder ``out``; return explain.json's record.
    ``fmt="dcm"`` (DICOM input) adds each map (not the per-word ones) as ``<name>_map.dcm``, a DICOM Parametric
    Map of the source's images (:mod:`mmfm.data.io.dicom_pm`)."""
    image, out = Path(image), Path(out)
    record_path = out / "explain.json"
    check_writable(out)
    if out.exists() and any(out.iterdir()):
        check_ours([record_path], record_path, COMMAND, overwrite)
        if not record_path.exists():
            raise ConfigError(f"--out {out} is a folder with files mmfm did not write", "choose a new folder")
    if not image.exists():
        raise InputFileError(image, "no such file or folder", "check the path")
    if fmt not in ("nifti", "dcm"):
        raise ConfigError(f"--format {fmt} is not an output format of mmfm explain", "use nifti or dcm")
    if fmt == "dcm" and image_format(image) not in ("dicom", "dicom-series"):
        raise ConfigError("--format dcm writes DICOM Parametric Maps, which reference DICOM source images",
                          "give a DICOM file, series folder or series URL, or leave out --format")
    kind, net, info = _load(model)
    img = read_image(image, modality=modality)
    if not np.isfinite(img.array).all():
        raise InputFileError(image, f"has {int((~np.isfinite(img.array)).sum())} NaN/Inf voxels",
                             "fix or mask the file first")
    raster = image_format(image) == "raster"
    if kind == "dual":
        im = info["image"]
        dims, channels, contract = im["spatial_dims"], im["in_channels"], info.get("contract", {})
        size = contract.get("shape", [channels, *([64] * dims)])[1:] if contract.get("shape") else [64] * dims
        if not text or not text.strip():
            raise ConfigError("an image-text model explains a text: give --text", "e.g. --text 'liver lesion'")
    else:
        dims, channels = info["input"]["spatial_dims"], info["input"]["in_channels"]
        size, contract = info["input"]["image_size"], info.get("preprocessing") or {}
    pre = contract_preset(img, contract, preset)
    x, k = model_input(img, dims, channels, size, pre, slice_index)
    ref = None
    if mask is not None:
        m_img = read_image(Path(mask))
        if m_img.spatial_shape != img.spatial_shape:
            raise InputFileError(mask, f"mask grid {m_img.spatial_shape} differs from the image's {img.spatial_shape}",
                                 "give the mask on the image's grid")
        ref = (m_img.array[0] == mask_label) if mask_label is not None else (m_img.array[0] > 0)
    record: dict[str, Any] = {"written_by": COMMAND, "model": {"kind": kind, "run": Path(model).name},
                              "input_format": image_format(image), "input_shape": list(img.spatial_shape),
                              "preset": pre.name, "model_input": list(x.shape[1:]), "slice": k, "maps": {}}
    maps: dict[str, np.ndarray] = {}
    if kind == "classification":
        with torch.no_grad():
            probs = net.predict(x)[0]
        names = list(info.get("class_names") or [str(c) for c in range(len(probs))])
        cls = int(probs.argmax()) if target is None else target
        if not 0 <= cls < len(probs):
            raise ConfigError(f"--target {cls} is not a class of this model (0..{len(probs) - 1})", f"classes: {names}")
        record["prediction"] = {"class": names[int(probs.argmax())],
                                "probabilities": {n: float(p) for n, p in zip(names, probs)}}
        record["explained_class"] = names[cls]
        for method in methods or explain_methods(net):
            maps[method] = _on_input_grid(saliency(net, x, method, cls)[0], img.spatial_shape, k)
    else:
        tokens, token_maps = word_regions(net, x, text or "")
        record["text_tokens"] = tokens
        maps["text"] = _on_input_grid(token_maps.mean(0) / token_maps.mean(0).max().clamp_min(1e-12),
                                      img.spatial_shape, k)
        for i, (tok, tm) in enumerate(list(zip(tokens, token_maps))[:16]):
            maps[f"word{i:02d}_{''.join(c for c in tok if c.isalnum()) or 'tok'}"] = _on_input_grid(
                tm, img.spatial_shape, k)
    if ref is not None:
        ref_k = ref if k is None else ref[..., k]
        if not ref_k.any():
            raise InputFileError(mask, "the mask is empty" + (f" on slice {k}" if k is not None else ""),
                                 "give a mask with the structure (or --mask-label with its value)")
        record["pointing_game"] = {name: pointing_game(m if k is None else m[..., k], ref_k)
                                   for name, m in maps.items()}
    out.mkdir(parents=True, exist_ok=True)
    suffix = ".png" if raster else ".nii.gz"
    base = pre(img.array.astype(np.float32)).mean(0)
    with Staged() as staged:
        for name, m in maps.items():
            data = (np.clip(m, 0, 1) * 255).astype(np.uint8) if raster else m.astype(np.float32)
            write_image(staged.path(out / f"{name}{suffix}"), data, img.affine, name=f"{name}{suffix}")
            record["maps"][name] = f"{name}{suffix}"
        if fmt == "dcm":
            record["dicom"] = _write_parametric_maps(staged, out, maps, image, record["model"]["run"])
        shown = {n: m for n, m in maps.items() if not n.startswith("word")} | dict(
            list((n, m) for n, m in maps.items() if n.startswith("word"))[:4])
        title = (f"{record.get('explained_class', text)}" + (f" (slice {k})" if k is not None else ""))
        view = (lambda a: a[..., k]) if k is not None else (lambda a: a)
        _overlay(staged.path(out / "overlay.png"), view(base), {n: view(m) for n, m in shown.items()}, title,
                 None if ref is None else view(ref))
        record["overlay"] = "overlay.png"
        staged.path(record_path).write_text(json.dumps(record, indent=2))
    return record


def _write_parametric_maps(staged: Staged, out: Path, maps: dict[str, np.ndarray], image: Path, run: str
                           ) -> dict[str, str]:
    """Each map but the per-word ones as a DICOM Parametric Map of ``image``'s slices: name -> file name."""
    from mmfm import __version__
    from mmfm.data.io.dicom_pm import write_parametric_map
    from mmfm.data.io.dicom_seg import dicom_sources

    sources, written = dicom_sources(image), {}
    for name, m in maps.items():
        if not name.startswith("word"):
            write_parametric_map(staged.path(out / f"{name}_map.dcm"), m, sources, name, f"run:{run}",
                                 f"mmfm {__version__}", description=f"mmfm explanation ({name})")
            written[name] = f"{name}_map.dcm"
    return written
