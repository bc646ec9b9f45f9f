"""Torch-facing datasets: sample dicts -> ``{"image", "label", "mask"}`` tensors for the engine.

* :class:`ArrayDataset`  arrays already preprocessed on one grid (the ``mini`` corpus, MedMNIST).
* :class:`PairDataset`   image-text pairs (captions or reports) for vision-language objectives and tasks.
* :class:`ReportDataset` reports alone, by section, for the report-side objectives.
* :class:`SampleDataset` any catalog :class:`~mmfm.data.catalog.loaders.SampleList`: applies the modality preset
  and resizes to a fixed grid with MONAI (image: area/trilinear, mask: nearest) so batches can be stacked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import Resize

from mmfm.data.presets import Preset, default_preset
from mmfm.data.sample import Image, early_fuse
from mmfm.errors import SampleError


class ArrayDataset(torch.utils.data.Dataset):
    """image (N, C, *s) float, optional label (N,), optional mask (N, 1, *s)."""

    def __init__(self, image: np.ndarray, label: np.ndarray | None = None, mask: np.ndarray | None = None,
                 extras: dict[str, np.ndarray] | None = None) -> None:
        self.image = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        self.extras = {k: torch.as_tensor(v) for k, v in (extras or {}).items()}  # e.g. patient, position
        self.label = None if label is None else torch.from_numpy(np.asarray(label, dtype=np.int64))
        self.mask = None if mask is None else torch.from_numpy(np.asarray(mask, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.image)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        out = {"image": self.image[i]}
        if self.label is not None:
            out["label"] = self.label[i]
        if self.mask is not None:
            out["mask"] = self.mask[i]
        for k, v in self.extras.items():
            out[k] = v[i]
        return out

    def subset(self, idx: Sequence[int]) -> ArrayDataset:
        sel = np.asarray(idx, dtype=np.int64)
        return ArrayDataset(self.image[sel].numpy(), None if self.label is None else self.label[sel].numpy(),
                            None if self.mask is None else self.mask[sel].numpy(),
                            {k: v[sel].numpy() for k, v in self.extras.items()})


class SampleDataset(torch.utils.data.Dataset):
    """Catalog samples -> tensors on a fixed grid: each modality through its own preset, then stacked as
    channels (early fusion of ``modalities``, review Fig. 3).

    ``modalities`` empty: the modalities the first sample holds (what the loader read), in sorted order.
    ``presets``: a preset per modality (default: each modality's documented default, ``CT`` -> ``ct_abdomen``).
    """

    reads_files = True  # items are decoded from the user's files: worth DataLoader workers

    def __init__(self, samples: Sequence[dict[str, Any]], modalities: Sequence[str], size: Sequence[int],
                 label_key: str | None = "label", presets: dict[str, Preset] | None = None) -> None:
        if not modalities:
            if len(samples) == 0:
                raise SampleError("the dataset split is empty", "check data.root and the split options")
            modalities = sorted(samples[0]["images"])
        self.samples, self.modalities, self.label_key = samples, list(modalities), label_key
        self.presets = {m: (presets or {}).get(m) or default_preset(m) for m in self.modalities}
        self.resize_img = Resize(tuple(size), mode="area" if len(size) == 2 else "trilinear")
        self.resize_mask = Resize(tuple(size), mode="nearest")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s = self.samples[i]
        images = {m: Image(self.presets[m](im.array), m, im.affine, im.meta) if m in self.presets else im
                  for m, im in s["images"].items()}
        image = early_fuse(images, self.modalities)
        if image.ndim - 1 != len(self.resize_img.spatial_size):
            raise SampleError(f"sample '{s['ids'].sample_id}' is {image.ndim - 1}D but data.size is "
                              f"{len(self.resize_img.spatial_size)}D", "set data.size to match the images")
        out = {"image": torch.as_tensor(np.asarray(self.resize_img(image)), dtype=torch.float32)}
        if self.label_key:
            if self.label_key not in s["labels"]:
                raise SampleError(f"sample '{s['ids'].sample_id}' has no label '{self.label_key}' "
                                  f"(labels: {sorted(s['labels'])})", "set data.label to one of its labels")
            out["label"] = torch.as_tensor(int(s["labels"][self.label_key]))
        if s.get("mask") is not None:
            out["mask"] = torch.as_tensor(np.asarray(self.resize_mask(s["mask"])), dtype=torch.int64)
        return out


class PairDataset(ArrayDataset):
    """Image-text pairs: ``{"image", "text", "label"?, ...}``; ``texts`` holds one string per image."""

    def __init__(self, image: np.ndarray, texts: Sequence[str], label: np.ndarray | None = None,
                 extras: dict[str, np.ndarray] | None = None) -> None:
        if len(texts) != len(image):
            raise SampleError(f"{len(image)} images but {len(texts)} texts: image-text pairs must match one to one",
                              "give every image exactly one report or caption (use '' where there is none)")
        super().__init__(image, label, None, extras)
        self.texts = [str(t) for t in texts]

    def __getitem__(self, i: int) -> dict[str, Any]:
        out: dict[str, Any] = super().__getitem__(i)
        out["text"] = self.texts[i]
        return out

    def subset(self, idx: Sequence[int]) -> PairDataset:
        sel = np.asarray(idx, dtype=np.int64)
        return PairDataset(self.image[sel].numpy(), [self.texts[i] for i in sel],
                           None if self.label is None else self.label[sel].numpy(),
                           {k: v[sel].numpy() for k, v in self.extras.items()})


class ReportDataset(torch.utils.data.Dataset):
    """Reports as sections: ``{"text", "findings", "impression"}`` strings (``text`` = findings + impression)."""

    def __init__(self, rows: Sequence[dict[str, Any]]) -> None:
        self.rows = [{"findings": str(r.get("findings") or ""), "impression": str(r.get("impression") or "")}
                     for r in rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, str]:
        r = self.rows[i]
        return {**r, "text": " ".join(t for t in (r["findings"], r["impression"]) if t)}
