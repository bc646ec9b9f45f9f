"""Small synthetic phantoms (2D discs/squares, 3D spheres/cubes) with masks, labels and captions, for unit tests.

Shape: image (N, 1, *[size] * spatial_dims) float32 in [0, 1]; mask (N, 1, ...) int64 (0 bg, 1 object);
label (N,) 0 = round object, 1 = box; caption names the shape and its size.
"""

from __future__ import annotations

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
