"""Seeded per-sample augmentation: the mask follows the image, the same (seed, step, index) gives the same item
whatever the number of DataLoader workers (so resume stays exact), and names are checked."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmfm.data.augment import Augmented
from mmfm.errors import ConfigError


class _Masks(torch.utils.data.Dataset):
    def __init__(self, n=24, shape=(16, 12)):
        rng = np.random.default_rng(0)
        self.masks = (rng.random((n, 1, *shape)) > 0.7).astype(np.int64)

    def __len__(self):
        return len(self.masks)

    def __getitem__(self, i):
        m = torch.from_numpy(self.masks[i])
        return {"image": m.float(), "mask": m}


@pytest.mark.parametrize("shape", [(16, 12), (8, 10, 6)])
def test_mask_follows_the_image_and_the_key_fixes_the_result(shape):
    ds = Augmented(_Masks(shape=shape), ["flip", "rot90"] if len(shape) == 2 else ["flip"])
    changed = 0
    for i in range(len(ds)):
        a = ds.augmented_item(i, (0, 5, i))
        assert torch.equal(a["image"].long(), a["mask"])          # exact spatial moves: image and mask agree
        assert torch.equal(a["image"], ds.augmented_item(i, (0, 5, i))["image"])
        changed += not torch.equal(a["image"], ds[i]["image"])
    assert changed > len(ds) // 3                                   # most items are moved, plain items are not
    assert torch.equal(ds[3]["image"], _Masks(shape=shape)[3]["image"])


def test_augmented_batches_are_the_same_with_any_number_of_workers(tmp_path):
    from torch.utils.data import DataLoader, default_collate

    from mmfm.engine.trainer import TrainConfig, Trainer, _Fetch, _StepBatches
    from mmfm.workflows.config import OptimConfig

    ds = Augmented(_Masks(), ["flip", "affine", "noise"])
    t = Trainer(torch.nn.Linear(1, 1), ds, TrainConfig(max_steps=5, batch_size=4, progress=False), OptimConfig(),
                tmp_path)

    def batches(workers, start=0):
        loader = DataLoader(_Fetch(ds, default_collate), sampler=_StepBatches(t, start), batch_size=None,
                            num_workers=workers)
        return [b["image"] for b in loader]

    serial = batches(0)
    assert all(torch.equal(a, b) for a, b in zip(serial, batches(2)))
    assert all(torch.equal(a, b) for a, b in zip(serial[2:], batches(0, start=2)))    # resume from step 2
    plain = [torch.stack([ds[i]["image"] for i in t.batch_indices(s, 0)]) for s in range(5)]
    assert any(not torch.equal(a, b) for a, b in zip(serial, plain))


def test_unknown_augmentation_names_are_errors():
    with pytest.raises(ConfigError, match="did you mean 'flip'"):
        Augmented(_Masks(), ["flpi"])
