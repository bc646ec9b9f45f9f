"""COCO-style box annotations (``images``, ``annotations`` with ``bbox`` [x, y, width, height], ``categories``)
for detection: boxes in mmfm's voxel index order (i = column = x, j = row = y), MONAI's ``StandardMode``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mmfm.errors import InputFileError


def read_coco(path: str | Path) -> dict[str, dict[str, Any]]:
    """A COCO-style JSON -> {image file name: {"boxes": (N, 4) (i0, j0, i1, j1), "labels": (N,), "size": (w, h)}}
    plus ``"__categories__"``: the category names in label order. COCO boxes are [x, y, width, height] in pixels
    (x = column = i)."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
        cats = sorted(doc["categories"], key=lambda c: c["id"])
        images = {im["id"]: im for im in doc["images"]}
        anns = doc["annotations"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputFileError(p, f"is not a COCO annotation file ({type(e).__name__}: {e})",
                             "it needs 'images' (id, file_name), 'annotations' (image_id, bbox, category_id) and "
                             "'categories' (id, name)") from None
    index = {c["id"]: n for n, c in enumerate(cats)}
    out: dict[str, dict[str, Any]] = {im["file_name"]: {"boxes": [], "labels": [],
                                                        "size": (im.get("width"), im.get("height"))}
                                      for im in images.values()}
    for n, a in enumerate(anns):
        if a.get("image_id") not in images or a.get("category_id") not in index:
            raise InputFileError(p, f"annotation {n} points at an unknown image or category",
                                 "every annotation needs an image_id and category_id listed in the file")
        x, y, w, h = (float(v) for v in a["bbox"])
        if w <= 0 or h <= 0:
            raise InputFileError(p, f"annotation {n} has a box of zero area ({a['bbox']})", "fix or drop it")
        rec = out[images[a["image_id"]]["file_name"]]
        rec["boxes"].append([x, y, x + w, y + h])
        rec["labels"].append(index[a["category_id"]])
    for rec in out.values():
        rec["boxes"] = np.asarray(rec["boxes"], np.float32).reshape(-1, 4)
        rec["labels"] = np.asarray(rec["labels"], np.int64)
    out["__categories__"] = [c["name"] for c in cats]   # type: ignore[assignment]
    return out
