"""Seeded per-sample augmentation for supervised training (``data.augment``), 2D and 3D, image and mask together.

Each training item is augmented with a random state seeded from (train.seed, step, index) (the trainer passes
it), so a resumed run, or one with another number of DataLoader workers, sees exactly the same augmented batches.
Evaluation items are never augmented. The transforms are MONAI's dictionary transforms (the mask follows every
spatial change with nearest-neighbour interpolation; intensity changes touch the image only):

=============  ====================================================================================
``flip``       random flip along each spatial axis (p = 0.5 each)
``rot90``      random multiple of 90 degrees in the first two axes (the slice plane)
``affine``     small random rotation (up to 15 degrees per plane) and scaling (up to 10%), p = 0.5
``intensity``  random intensity scaling and shift (up to 10%), p = 0.5
``noise``      Gaussian noise (sd 0.02), p = 0.5
=============  ====================================================================================

(The contrastive views of pretraining are :mod:`mmfm.objectives.augment`; this is for labelled training.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mmfm.errors import ConfigError

AUGMENTATIONS = ("flip", "rot90", "affine", "intensity", "noise")


def _transforms(names: Sequence[str], spatial_dims: int, has_mask: bool) -> list[Any]:
    from monai.transforms import (
        RandAffined,
        RandFlipd,
        RandGaussianNoised,
        RandRotate90d,
        RandScaleIntensityd,
        RandShiftIntensityd,
    )

    keys = ["image", "mask"] if has_mask else ["image"]
    modes = ["bilinear", "nearest"] if has_mask else ["bilinear"]
    out: list[Any] = []
    for name in names:
        if name == "flip":
            out += [RandFlipd(keys, prob=0.5, spatial_axis=a) for a in range(spatial_dims)]
        elif name == "rot90":
            out.append(RandRotate90d(keys, prob=0.5, max_k=3, spatial_axes=(0, 1)))
        elif name == "affine":
            out.append(RandAffined(keys, prob=0.5, rotate_range=[np.deg2rad(15)] * (1 if spatial_dims == 2 else 3),
                                   scale_range=[0.1] * spatial_dims, mode=modes, padding_mode="zeros"))
        elif name == "intensity":
            out += [RandScaleIntensityd("image", factors=0.1, prob=0.5), RandShiftIntensityd("image", offsets=0.1,
                                                                                           prob=0.5)]
        elif name == "noise":
            out.append(RandGaussianNoised("image", prob=0.5, std=0.02))
    return out


def check_augmentations(names: Sequence[str]) -> list[str]:
    import difflib

    for name in names:
        if name not in AUGMENTATIONS:
            close = difflib.get_close_matches(name, AUGMENTATIONS, n=1)
            raise ConfigError(f"data.augment: unknown augmentation '{name}'",
                              (f"did you mean '{close[0]}'? " if close else "") + f"use any of {list(AUGMENTATIONS)}")
    return list(names)


class TrainingView(torch.utils.data.Dataset):
    """A wrapped dataset whose :meth:`augmented_item` (the trainer's seeded path) changes items; ``dataset[i]``
    and every attribute (labels, texts, presets, ...) stay the wrapped dataset's."""

    _own: tuple[str, ...] = ("dataset",)

    def __getattr__(self, name: str) -> Any:
        if name in self._own:
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.dataset[i]


def item_seed(key: tuple) -> int:
    """A 32-bit seed from (seed, step, index, ...): the same item gets the same draw in any process."""
    return int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:4], "little")


class Augmented(TrainingView):
    """``dataset`` with seeded MONAI augmentation in :meth:`augmented_item`."""

    _own = ("dataset", "names", "_built")

    def __init__(self, dataset: Any, names: Sequence[str]) -> None:
        self.dataset, self.names = dataset, check_augmentations(names)
        self._built: dict[tuple[int, bool], Any] = {}

    def augmented_item(self, i: int, key: tuple[int, int, int]) -> dict[str, Any]:
        from monai.transforms import Compose

        item = dict(self.dataset[i])
        image = torch.as_tensor(item["image"])
        has_mask = "mask" in item and item["mask"] is not None and torch.as_tensor(item["mask"]).ndim == image.ndim
        nd = image.ndim - 1
        if (nd, has_mask) not in self._built:
            self._built[(nd, has_mask)] = Compose(_transforms(self.names, nd, has_mask))
        t = self._built[(nd, has_mask)]
        t.set_random_state(seed=item_seed(key))
        data = {"image": image.float()}
        if has_mask:
            data["mask"] = torch.as_tensor(item["mask"]).float()
        out = {k: v.as_tensor() if hasattr(v, "as_tensor") else torch.as_tensor(v) for k, v in t(data).items()}
        item["image"] = out["image"].float().contiguous()     # plain tensors (MONAI returns MetaTensors)
        if has_mask:
            item["mask"] = out["mask"].round().to(torch.as_tensor(item["mask"]).dtype).contiguous()
        return item


class ModalityDropout(TrainingView):
    """Training items with whole modalities removed (M3AE's modality dropout, review Sec. VI): each modality of a
    multi-modal item is zeroed with probability ``p`` and marked absent in ``item["present"]``; at least one is kept.
    Seeded per (seed, step, index) like :class:`Augmented`, so exact under resume; ``dataset[i]`` stays whole."""

    _own = ("dataset", "p")

    def __init__(self, dataset: Any, p: float) -> None:
        if not 0.0 < p < 1.0:
            raise ConfigError(f"data.modality_dropout={p} must be in (0, 1)")
        self.dataset, self.p = dataset, p

    def augmented_item(self, i: int, key: tuple[int, int, int]) -> dict[str, Any]:
        inner = getattr(self.dataset, "augmented_item", None)
        item = dict(inner(i, key) if inner is not None else self.dataset[i])
        if "present" not in item:
            raise ConfigError("data.modality_dropout needs samples with several modalities (data.modalities)",
                              "list two or more modalities in data.modalities, or drop the option")
        present = torch.as_tensor(item["present"]).clone()
        image = torch.as_tensor(item["image"]).clone()
        m = len(present)
        if image.shape[0] % m:
            raise ConfigError(f"{image.shape[0]} channels do not split evenly over {m} modalities",
                              "bring every modality to the same channel count (data.channels)")
        g = torch.Generator().manual_seed(item_seed(("modality", *key)))
        drop = (torch.rand(m, generator=g) < self.p) & present.bool()
        if bool(drop.sum() >= present.sum()):   # keep at least one present modality
            keep = torch.nonzero(present.bool()).flatten()
            drop[keep[torch.randint(len(keep), (1,), generator=g)]] = False
        per = image.shape[0] // m
        for k in torch.nonzero(drop).flatten().tolist():
            image[k * per:(k + 1) * per] = 0
            present[k] = 0
        item["image"], item["present"] = image, present
        return item
