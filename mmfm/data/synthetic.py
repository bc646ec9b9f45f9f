"""Small synthetic phantoms (2D discs/squares, 3D spheres/cubes) with masks, labels and captions, for unit tests.

Shape: image (N, 1, *[size] * spatial_dims) float32 in [0, 1]; mask (N, 1, ...) int64 (0 bg, 1 object);
label (N,) 0 = round object, 1 = box; caption names the shape and its size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

SHAPES = ["round", "box"]


def phantoms(n: int, spatial_dims: int = 2, size: int = 32, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(size)] * spatial_dims, indexing="ij"), axis=0)  # (D, *s)
    images, masks, labels, captions = [], [], [], []
    for i in range(n):
        label = i % 2
        r = rng.uniform(size * 0.15, size * 0.3)
        c = rng.uniform(r + 1, size - r - 1, size=spatial_dims).reshape((-1,) + (1,) * spatial_dims)
        d = np.abs(grid - c)
        obj = (np.sqrt((d ** 2).sum(0)) <= r) if label == 0 else (d.max(0) <= r * 0.85)
        img = 0.2 + 0.6 * obj + rng.normal(0, 0.05, obj.shape)
        images.append(np.clip(img, 0, 1)[None].astype(np.float32))
        masks.append(obj[None].astype(np.int64))
        labels.append(label)
        big = "large" if r > size * 0.22 else "small"
        captions.append(f"a {big} {SHAPES[label]} object in a {spatial_dims}D phantom")
    return {"image": np.stack(images), "mask": np.stack(masks), "label": np.asarray(labels),
            "caption": np.asarray(captions)}


PETCT_CLASSES = ["cyst", "active_tumour", "necrotic_tumour"]


def write_petct_phantoms(root: Any, n: int = 120, size: int = 32, seed: int = 0, missing: float = 0.0,
                         sites: int = 1) -> Any:
    """A ``multimodal_csv`` folder of synthetic paired PET/CT lesions (MetaImage, CT in HU, PET in SUV), for the
    missing-modality machinery: no registry package ships paired multi-modal scans.

    Classes (``PETCT_CLASSES``): a cyst (water density on CT, no uptake), an active tumour (soft tissue on CT,
    uptake throughout) and a necrotic tumour (enhancing rim and fluid centre on CT, rim uptake). Each modality
    alone carries the class through heavy noise; together they agree. ``missing``: fraction of rows whose PET is
    absent (empty cell); ``sites``: a ``site`` column (round robin) for federated runs. Returns the folder."""
    import SimpleITK as sitk

    root = Path(root)
    (root / "ct").mkdir(parents=True, exist_ok=True)
    (root / "pet").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    rows = ["ct,pet,label,patient,site"]
    for i in range(n):
        c = i % 3
        r = rng.uniform(size * 0.12, size * 0.22)
        cy, cx = rng.uniform(r + 3, size - r - 3, 2)
        d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
        lesion, rim = d <= r, (d <= r) & (d > 0.6 * r)
        body = ((yy - size / 2) / (size * 0.48)) ** 2 + ((xx - size / 2) / (size * 0.45)) ** 2 <= 1
        ct = np.where(body, 45.0, -900.0)
        ct = np.where(lesion, [5.0, 55.0, 10.0][c], ct)
        if c == 2:
            ct = np.where(rim, 90.0, ct)
        ct = ct + rng.normal(0, 35, ct.shape)
        suv = np.where(body, 1.0, 0.05)
        suv = np.where(lesion, [1.0, 6.0, 1.2][c], suv)
        if c == 2:
            suv = np.where(rim, 5.0, suv)
        suv = np.clip(suv + rng.normal(0, 1.8, suv.shape), 0, None)
        name = f"case{i:04d}.mha"
        sitk.WriteImage(sitk.GetImageFromArray(ct.astype(np.float32)), str(root / "ct" / name))
        pet = ""
        if rng.random() >= missing:
            sitk.WriteImage(sitk.GetImageFromArray(suv.astype(np.float32)), str(root / "pet" / name))
            pet = f"pet/{name}"
        rows.append(f"ct/{name},{pet},{PETCT_CLASSES[c]},p{i:04d},site{i % max(sites, 1)}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root
