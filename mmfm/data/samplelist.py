"""A lazy list of samples (:class:`SampleList`): what every catalog layout, a folder and the mini corpus return."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mmfm.data.sample import Image, make_sample
from mmfm.errors import InputFileError


class SampleList(Sequence[dict]):
    """A lazy list of samples: ``records`` are light dicts (mini's: indices); ``read(record)`` builds the sample.
    ``class_names``: the names of the classes of ``labels["label"]`` (index i is class i), where the layout has
    them; ``labels``: each record's class index, known without reading any image (for stratified subsets);
    ``scan``: what the loader found and skipped (for the data card)."""

    def __init__(self, records: list[Any], read: Callable[[Any], dict[str, Any]],
                 class_names: list[str] | None = None, labels: list[int] | None = None) -> None:
        self.records, self._read, self.class_names = records, read, list(class_names or [])
        self.labels = None if labels is None else [int(v) for v in labels]
        self.scan: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:  # type: ignore[override]
        return self._read(self.records[i])

    def subset(self, idx: Sequence[int]) -> SampleList:
        out = SampleList([self.records[i] for i in idx], self._read, self.class_names,
                         None if self.labels is None else [self.labels[i] for i in idx])
        out.scan = self.scan
        return out

    def slices(self, stride: int = 1) -> SampleList:
        """Every 3D volume as its 2D slices along the last spatial axis (every ``stride``-th), for a 2D encoder;
        2D images stay as they are. A slice's ``position`` (0..1 within its volume) is kept for PCL-style
        objectives. Records without header facts get them from :func:`mmfm.data.io.image_info`."""
        from mmfm.data.io import image_info

        records, labels = [], []
        for i, r in enumerate(self.records):
            if "spatial_dims" not in r:
                r = {**r, **image_info(r.get("path") or r["image"], r.get("series_uid"))}
            ks = range(0, r["depth"], max(1, stride)) if r["spatial_dims"] == 3 else [None]
            for k in ks:
                records.append({**r, "slice": k, "position": 0.0 if k is None else k / max(r["depth"] - 1, 1)})
                if self.labels is not None:
                    labels.append(self.labels[i])
        last: dict[str, Any] = {}   # the last volume read: consecutive slices of one volume decode it once

        def read(r: dict[str, Any]) -> dict[str, Any]:
            if r["slice"] is None:
                return self._read(r)
            key = (str(r.get("path") or r.get("image")), r.get("series_uid"))
            if last.get("key") != key:
                last.clear()
                last.update(key=key, sample=self._read(r))
            return slice_sample(last["sample"], r["slice"])

        out = SampleList(records, read, self.class_names, labels if self.labels is not None else None)
        out.scan = self.scan
        return out


def slice_sample(sample: dict[str, Any], k: int) -> dict[str, Any]:
    """Slice ``k`` (last spatial axis) of a 3D sample: images, mask; ids keep the slice index."""
    from dataclasses import replace

    images = {}
    for m, im in sample["images"].items():
        if im.spatial_dims != 3:
            raise InputFileError(m, f"cannot slice a {im.spatial_dims}D image")
        aff = im.affine.copy()
        aff[:3, 3] = aff[:3, 3] + aff[:3, 2] * k
        images[m] = Image(np.ascontiguousarray(im.array[..., k]), im.modality, aff, im.meta)
    mask = sample.get("mask")
    return make_sample(images, mask=None if mask is None else np.ascontiguousarray(mask[..., k]),
                       labels=sample["labels"], report=sample.get("report"), texts=sample.get("texts"),
                       ids=replace(sample["ids"], slice_index=float(k)))
