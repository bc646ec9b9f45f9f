"""`mmfm data inspect`: what mmfm reads from a file or folder, or the clear error that stops it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mmfm.data.io import image_format, read_image
from mmfm.data.io.checks import check_file
from mmfm.data.io.dicom import is_dicom
from mmfm.data.io.npz import SPLITS, read_medmnist_npz
from mmfm.data.io.reports import read_iu_xml, read_text_report
from mmfm.data.sample import Ids, make_sample

REPORT_SUFFIXES = {".txt", ".xml"}


def inspect_path(path: str | Path, modality: str | None = None, show_names: bool = False) -> dict[str, Any]:
    """A JSON-able description. Images: shape, spacing, orientation, modality, min, max (+ safe DICOM header)."""
    p = Path(path)
    if p.is_file() and p.suffix.lower() in REPORT_SUFFIXES:
        check_file(p)
        rep = read_iu_xml(p)["report"] if p.suffix.lower() == ".xml" else read_text_report(p)
        return {"path": str(p), "format": "report", "characters": len(rep.text),
                "sections": {k: len(v) for k, v in rep.sections.items()}}
    if p.is_dir() and not any(f.is_file() and is_dicom(f) for f in p.iterdir()):
        # a folder of images (not one DICOM series): what `data.dataset=folder` would read from it
        from mmfm.data.catalog import load_dataset

        found = load_dataset("folder", p)
        return {"path": str(p), "format": "folder", **found.scan, "classes": found.class_names}
    fmt = image_format(p)
    if fmt == "npz":
        out: dict[str, Any] = {"path": str(p), "format": "medmnist-npz", "splits": {}}
        for split in SPLITS:
            images, labels = read_medmnist_npz(p, split)
            out["splits"][split] = {"n": len(images), "image_shape": list(images.shape[1:]),
                                    "classes": int(labels.max()) + 1}
        return out
    img = read_image(p, modality=modality)
    label_map = looks_like_label_map(p, img.array)
    make_sample({img.modality: img}, ids=Ids(sample_id="inspected"))  # NaN/Inf, dimensions: the sample checks
    arr = img.array
    # a DICOM file or folder name is often built from a patient name or accession number: not echoed
    shown = str(p) if fmt not in ("dicom", "dicom-series") or show_names else "(DICOM; name hidden, --show-names)"
    out = {"path": shown, "format": fmt, "modality": img.modality, "shape": list(arr.shape),
           "spatial_dims": img.spatial_dims, "spacing": [round(s, 6) for s in img.spacing],
           "orientation": img.orientation, **geometry(img.affine, img.spatial_dims),
           "min": float(np.min(arr)), "max": float(np.max(arr)), "mean": float(np.mean(arr))}
    if label_map:   # a mask: its label values and their voxels, not a modality to give
        values, counts = np.unique(np.rint(arr).astype(np.int64), return_counts=True)
        out["kind"] = "label map"
        out["labels"] = {str(int(v)): int(c) for v, c in zip(values, counts)}
        out["empty"] = not bool((values != 0).any())
    elif img.modality == "unknown":
        out["modality_note"] = f"{fmt} does not record the modality; give --modality (e.g. CT, MR, XR)"
    if img.meta.get("assumed"):
        out["assumed"] = img.meta["assumed"]
    if "header" in img.meta:
        out["dicom"] = img.meta["header"]
    return out


def looks_like_label_map(p: Path, arr: np.ndarray) -> bool:
    """A mask by name (the pairing conventions of :mod:`mmfm.data.catalog.masks`) or by content: one channel of
    a few non-negative integer values (2 to 64, background 0 among them; an all-zero image is not called one)."""
    from mmfm.data.catalog.masks import image_folder_of, mask_suffix

    if arr.shape[0] != 1 or arr.size == 0 or arr.min() < 0 or not np.array_equal(arr, np.rint(arr)):
        return False
    if mask_suffix(p) or image_folder_of(p) is not None:
        return True
    if len(np.unique(arr[:, ::max(1, arr.shape[1] // 64)])) > 64:  # a strided look first: images fail fast
        return False
    values = np.unique(arr)
    return 2 <= len(values) <= 64 and 0 in values


def geometry(affine: np.ndarray, spatial_dims: int) -> dict[str, Any]:
    """Where the voxels lie, in RAS millimetres, for 2D and 3D alike: ``affine`` (4x4, index -> RAS), ``origin``
    (the first voxel's centre), ``direction`` (one unit vector per index axis, i then j[ then k]) and
    ``obliquity_deg`` (each axis' angle to the nearest world axis: the orientation letters name that nearest axis,
    so a slice rotated by 30 degrees still reads "LP", and this says by how much it is turned)."""
    import nibabel as nib

    a = np.asarray(affine, np.float64)
    cols = a[:3, :spatial_dims]                                         # (3, nd): the index axes in RAS mm
    unit = cols / np.maximum(np.linalg.norm(cols, axis=0, keepdims=True), 1e-12)
    full = np.eye(4)
    full[:3, :spatial_dims] = cols                                      # a 2D image's third axis: the normal
    if spatial_dims == 2:
        normal = np.cross(unit[:, 0], unit[:, 1])
        full[:3, 2] = normal if np.linalg.norm(normal) > 0 else [0.0, 0.0, 1.0]
    full[:3, 3] = a[:3, 3]
    oblique = np.degrees(nib.affines.obliquity(full))[:spatial_dims]

    def r(v: Any) -> Any:
        return np.round(np.asarray(v, np.float64), 6).tolist()

    return {"affine": r(a), "origin": r(a[:3, 3]), "direction": r(unit.T), "obliquity_deg": r(oblique),
            "frame": "RAS mm"}
