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


@pytest.mark.parametrize("spatial_dims,size", [(2, 32), pytest.param(3, 32, marks=pytest.mark.long)])
def test_segmentation_overfits(spatial_dims, size):
    torch.manual_seed(0)
    d = phantoms(4, spatial_dims, size, seed=1)
    batch = {"image": torch.from_numpy(d["image"]), "mask": torch.from_numpy(d["mask"])}
    model = TASKS.build("segmentation", num_classes=2, spatial_dims=spatial_dims, in_channels=1,
                        network="basicunet", features=(8, 8, 16, 16, 32, 8))
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


@pytest.mark.parametrize("encoder, dims, size", [("vit_micro", 2, 32), ("resnet_tiny", 2, 32), ("swin_tiny", 2, 64),
                                                 ("vit_micro", 3, 16), ("resnet_tiny", 3, 16)])
def test_segmentation_uses_the_configured_encoder(encoder, dims, size):
    """The encoder section is what segmentation adapts (not a U-Net that ignores it): its weights get gradients,
    the logits are on the input grid, and a tiny batch is overfit."""
    from mmfm.tasks import TASKS

    torch.manual_seed(0)
    model = TASKS.build("segmentation", encoder={"name": encoder}, num_classes=2, spatial_dims=dims, in_channels=1)
    assert model.encoder is not None and type(model.encoder).__name__ != "BasicUNet"
    x = torch.rand(2, 1, *([size] * dims))
    mask = (x > 0.5).long()
    out = model({"image": x, "mask": mask})
    assert out["logits"].shape == (2, 2, *([size] * dims))
    out["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())
    frozen = TASKS.build("segmentation", encoder={"name": encoder}, num_classes=2, spatial_dims=dims,
                         in_channels=1, freeze_encoder=True)
    assert not any(p.requires_grad for p in frozen.encoder.parameters())
    unet = TASKS.build("segmentation", encoder={"name": encoder}, num_classes=2, spatial_dims=dims, in_channels=1,
                       network="basicunet")
    assert unet.encoder is None


def test_early_fusion_applies_each_modality_its_own_preset():
    import numpy as np

    from mmfm.data.datasets import SampleDataset
    from mmfm.data.sample import Ids, Image, make_sample

    ct = np.full((1, 8, 8), 40.0, np.float32)                       # HU: the centre of the abdomen window
    mr = np.linspace(0, 1000, 64, dtype=np.float32).reshape(1, 8, 8)
    sample = make_sample({"CT": Image(ct, "CT"), "MR": Image(mr, "MR")}, labels={"label": 0}, ids=Ids(sample_id="s"))
    ds = SampleDataset([sample], ["CT", "MR"], [8, 8])
    x = ds[0]["image"]
    assert x.shape == (2, 8, 8)
    assert torch.allclose(x[0], torch.full((8, 8), 0.5), atol=1e-3)  # CT through ct_abdomen (W400/L40)
    assert 0.0 <= float(x[1].min()) and float(x[1].max()) <= 1.0 and float(x[1].max()) > 0.9  # MR by percentiles
    assert SampleDataset([sample], [], [8, 8]).modalities == ["CT", "MR"]  # default: what the samples hold
