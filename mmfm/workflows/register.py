"""`mmfm register FIXED MOVING --out DIR`: align two images (any formats mmfm reads, 2D or 3D, different grids
and orientations) by instance optimisation; see :mod:`mmfm.tasks.registration` for the convention.

DIR receives:

* ``warped.nii.gz`` -- MOVING resampled onto FIXED's grid and affine (``warped.png`` when FIXED is PNG/JPEG/TIFF);
* ``affine.json`` -- the 3x3 (2D) or 4x4 (3D) matrix A in world millimetres (RAS), fixed -> moving;
* ``displacement.nii.gz`` -- (deformable) the displacement u in millimetres (RAS) at every fixed voxel, a NIfTI
  vector image (intent ``vector``, shape (*fixed, 1, nd));
* ``warped_labels.nii.gz`` -- with ``--moving-labels``: the label map carried along (nearest neighbour);
* ``registration.json`` -- inputs, settings, the loss per level, the Jacobian folding fraction, Dice of the
  labels before and after (with ``--fixed-labels``), the seconds it took.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from mmfm.data.io import image_format, read_image
from mmfm.data.io.writers import write_image
from mmfm.errors import ConfigError, InputFileError
from mmfm.workflows.outputs import Staged, check_writable, written_by

COMMAND = "mmfm register"
RECORD = "registration.json"
OUTPUTS = ("warped.nii.gz", "warped.png", "displacement.nii.gz", "warped_labels.nii.gz")


def _intensities(img: Any, path: Path) -> np.ndarray:
    """(*s) in about [0, 1]: the modality's preset (percentile scaling when unknown), colour averaged."""
    from mmfm.data.presets import choose_preset, get_preset

    arr = img.array
    if not np.isfinite(arr).all():
        raise InputFileError(path, f"has {int((~np.isfinite(arr)).sum())} NaN/Inf voxels",
                             "fix or mask the file before registering")
    if img.spatial_dims == 2 and arr.shape[0] >= 3:
        arr = arr[:3].mean(axis=0, keepdims=True)
    elif arr.shape[0] != 1:
        raise InputFileError(path, f"has {arr.shape[0]} channels", "register one channel: save it as its own file")
    pre = choose_preset(img.modality)[0]          # channels averaged above: a grey image
    if pre.kind == "rgb":
        pre = get_preset("percentile")
    return pre(arr)[0]


def _check_out(out: Path, overwrite: bool) -> None:
    check_writable(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file", "give a folder for the outputs")
    if out.is_dir() and any(out.iterdir()):
        if written_by(out / RECORD) != COMMAND:
            raise ConfigError(f"--out {out} holds files that {COMMAND} did not write; mmfm does not overwrite them",
                              "choose a new or empty folder")
        if not overwrite:
            raise ConfigError(f"--out {out} holds an earlier registration", "add --overwrite, or choose another --out")


def _labels(path: str | None, like: Any, what: str) -> np.ndarray | None:
    if path is None:
        return None
    lab = read_image(path)
    if lab.spatial_shape != like.spatial_shape:
        raise InputFileError(path, f"{what} labels have shape {lab.spatial_shape}, their image {like.spatial_shape}",
                             "labels must be on their image's grid")
    return np.rint(lab.array[0]).astype(np.int32)


def register_files(fixed: str | Path, moving: str | Path, out: str | Path, mode: str = "deformable",
                   similarity: str = "lncc", fixed_modality: str | None = None, moving_modality: str | None = None,
                   moving_labels: str | None = None, fixed_labels: str | None = None, iterations: int = 150,
                   steps: tuple[float, ...] = (8.0, 4.0, 2.0), smoothness: float = 1.0, overwrite: bool = False,
                   progress: bool = True) -> dict[str, Any]:
    from tqdm import tqdm

    from mmfm.tasks.registration import (
        dense_displacement,
        folding_fraction,
        label_dice,
        plane_affine,
        register,
        resample,
    )

    fixed, moving, out = Path(fixed), Path(moving), Path(out)
    if mode not in ("affine", "deformable"):
        raise ConfigError(f"--mode {mode} is not known", "use affine or deformable")
    if similarity not in ("lncc", "mi"):
        raise ConfigError(f"--similarity {similarity} is not known", "use lncc (same modality) or mi (across)")
    _check_out(out, overwrite)
    for p in (fixed, moving):
        if not p.exists():
            raise InputFileError(p, "no such file or folder", "check the path")
    f_img, m_img = read_image(fixed, modality=fixed_modality), read_image(moving, modality=moving_modality)
    if f_img.spatial_dims != m_img.spatial_dims:
        raise ConfigError(f"FIXED is {f_img.spatial_dims}D {f_img.spatial_shape} and MOVING is {m_img.spatial_dims}D "
                          f"{m_img.spatial_shape}: both must be 2D or both 3D",
                          "register a 2D image to a 2D image, or a volume to a volume")
    nd = f_img.spatial_dims
    f_lab, m_lab = _labels(fixed_labels, f_img, "FIXED"), _labels(moving_labels, m_img, "MOVING")
    fa, ma = plane_affine(f_img.affine, nd), plane_affine(m_img.affine, nd)
    f_arr, m_arr = _intensities(f_img, fixed), _intensities(m_img, moving)
    total = iterations * len(steps) + (iterations if mode == "deformable" else 0)
    bar = tqdm(total=total, desc="register", disable=not progress, file=sys.stderr)
    start = time.time()
    t = register(f_arr, fa, m_arr, ma, mode=mode, similarity=similarity, steps=steps, iterations=iterations,
                 deform_iterations=iterations, smoothness=smoothness, progress=bar)
    bar.close()
    seconds = time.time() - start
    warped = resample(m_img.array[:1] if not (nd == 2 and m_img.array.shape[0] >= 3) else m_img.array[:3],
                      ma, f_img.spatial_shape, fa, t)
    dense = dense_displacement(t, f_img.spatial_shape)
    raster = image_format(fixed) == "raster"
    record: dict[str, Any] = {
        "written_by": COMMAND, "mode": mode, "similarity": similarity, "dims": nd, "initialised_by": t.init,
        "convention": "x_moving = A @ [x_fixed + u(x_fixed); 1], world millimetres (RAS); the warped image is MOVING "
                      "sampled at that point for every FIXED voxel",
        "fixed": {"format": image_format(fixed), "shape": list(f_img.spatial_shape)},
        "moving": {"format": image_format(moving), "shape": list(m_img.spatial_shape)},
        "loss": t.history, "folding_fraction": folding_fraction(dense, fa), "seconds": round(seconds, 1)}
    warped_labels = None
    if m_lab is not None:
        warped_labels = np.rint(resample(m_lab[None].astype(np.float32), ma, f_img.spatial_shape, fa, t,
                                         labels=True)[0]).astype(np.int32)
        if f_lab is not None:
            from mmfm.tasks.registration import Transform

            before = np.rint(resample(m_lab[None].astype(np.float32), ma, f_img.spatial_shape, fa,
                                      Transform(np.eye(nd + 1)), labels=True)[0]).astype(np.int32)
            d0, d1 = label_dice(f_lab, before), label_dice(f_lab, warped_labels)
            record["dice"] = {"before": d0, "after": d1,
                              "mean_before": float(np.mean(list(d0.values()))) if d0 else None,
                              "mean_after": float(np.mean(list(d1.values()))) if d1 else None}
    out.mkdir(parents=True, exist_ok=True)

    with Staged() as staged:
        def nifti(data: np.ndarray, name: str, intent: str | None = None) -> None:
            write_image(staged.path(out / name), data, f_img.affine, name=name, intent=intent)

        if raster:
            w = np.clip(np.rint(warped), 0, 255).astype(np.uint8)
            write_image(staged.path(out / "warped.png"), w[0] if w.shape[0] == 1 else np.moveaxis(w, 0, -1),
                        name="warped.png")
            record["warped"] = "warped.png"
        else:
            nifti(np.moveaxis(warped, 0, -1)[..., 0].astype(np.float32), "warped.nii.gz")
            record["warped"] = "warped.nii.gz"
        staged.path(out / "affine.json").write_text(json.dumps(
            {"matrix": np.round(t.matrix, 8).tolist(), "dims": nd, "space": "world millimetres (RAS)",
             "maps": "fixed -> moving (x_moving = A @ [x_fixed; 1])"}, indent=2))
        if dense is not None:
            vec = dense.astype(np.float32).reshape(*f_img.spatial_shape, 1, nd)
            nifti(vec, "displacement.nii.gz", intent="vector")
            record["displacement"] = "displacement.nii.gz (mm, RAS; shape (*fixed, 1, nd))"
        if warped_labels is not None:
            nifti(warped_labels.astype(np.int16), "warped_labels.nii.gz")
            record["warped_labels"] = "warped_labels.nii.gz"
        staged.path(out / RECORD).write_text(json.dumps(record, indent=2))
    produced = {v.split(" ")[0] for k, v in record.items() if k in ("warped", "displacement", "warped_labels")}
    for name in set(OUTPUTS) - produced:    # an earlier run's files (this folder is ours: checked above)
        (out / name).unlink(missing_ok=True)
    return record
