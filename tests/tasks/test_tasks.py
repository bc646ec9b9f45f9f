"""Tasks: shapes, and each overfits a tiny batch (2D and 3D)."""

from __future__ import annotations

import pytest
import torch

from mmfm.data.synthetic import phantoms
from mmfm.tasks import TASKS


@pytest.mark.parametrize("spatial_dims,size", [(2, 32), (3, 16)])
def test_classification_overfits(spatial_dims, size):
    torch.manual_seed(0)
    d = phantoms(8, spatial_dims, size, seed=0)
    batch = {"image": torch.from_numpy(d["image"]), "label": torch.from_numpy(d["label"])}
    model = TASKS.build("classification", encoder={"name": "resnet_tiny"}, num_classes=2,
                        spatial_dims=spatial_dims, in_channels=1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        out = model(batch)
        first = first if first is not None else out["loss"].item()
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert out["logits"].shape == (8, 2)
    assert out["loss"].item() < 0.1 * first
    assert (model.predict(batch["image"]).argmax(1) == batch["label"]).all()


@pytest.mark.parametrize("spatial_dims,size", [(2, 32), (3, 32)])
def test_segmentation_overfits(spatial_dims, size):
    torch.manual_seed(0)
    d = phantoms(4, spatial_dims, size, seed=1)
    batch = {"image": torch.from_numpy(d["image"]), "mask": torch.from_numpy(d["mask"])}
    model = TASKS.build("segmentation", num_classes=2, spatial_dims=spatial_dims, in_channels=1,
                        features=(8, 8, 16, 16, 32, 8))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        out = model(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    pred = model.predict(batch["image"])
    assert pred.shape == batch["mask"].shape
    inter = ((pred == 1) & (batch["mask"] == 1)).sum().item()
    dice = 2 * inter / ((pred == 1).sum().item() + (batch["mask"] == 1).sum().item())
    assert dice > 0.9
