"""UNETR / Swin UNETR-style decoding over an encoder's intermediate features: the pyramid each encoder exposes,
shapes in 2D and 3D, and a tiny overfit that the decoder must reach through its skips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmfm.encoders.base import build_encoder
from mmfm.errors import ConfigError
from mmfm.tasks.segmentation import segmentation


@pytest.mark.parametrize("name,kw,size,expect", [
    ("vit_micro", {"patch_size": 4}, (32, 32), [(8, 8)] * 2),                 # log2(4) hidden states, one grid
    ("vit_micro", {"patch_size": 8}, (32, 32, 32), [(4, 4, 4)] * 2),             # capped by its depth (2)
    ("resnet_tiny", {}, (64, 64), [(16, 16), (8, 8), (4, 4), (2, 2)]),
    ("swin_tiny", {}, (32, 32), [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]),
    # LiteMedSAM's TinyViT: stem (full grid), stage 1, neck; a 32 x 32 input is resized to its 64 x 64 grid
    ("litemedsam", {"pretrained": False, "input_size": 64}, (32, 32), [(64, 64), (32, 32), (16, 16)]),
])
def test_encoder_pyramids(name, kw, size, expect):
    enc = build_encoder(name, spatial_dims=len(size), in_channels=1, **kw)
    levels = enc.pyramid(torch.zeros(1, 1, *size))
    assert [tuple(f.shape[2:]) for f in levels] == expect
    # the deepest level is what forward() returns as tokens (same computation, same values)
    tokens = enc(torch.zeros(1, 1, *size))["tokens"]
    assert torch.allclose(levels[-1].flatten(2).transpose(1, 2), tokens, atol=1e-5)


@pytest.mark.parametrize("name,kw,size", [("vit_micro", {"patch_size": 4}, (32, 32)),
                                          pytest.param("resnet_tiny", {}, (32, 32, 32), marks=pytest.mark.long)])
def test_unetr_decoder_overfits_a_small_structure(name, kw, size):
    torch.manual_seed(0)
    task = segmentation(2, len(size), 1, encoder={"name": name, **kw}, image_size=list(size))
    assert task.decoder == "unetr"
    grid = np.indices(size)
    centre = np.array(size).reshape(-1, *([1] * len(size))) / 2
    mask = (((grid - centre + 3) ** 2).sum(0) <= 4 ** 2).astype(np.int64)       # a small ball, off centre
    image = torch.from_numpy(mask.astype(np.float32) + 0.1 * np.random.default_rng(0).standard_normal(size))
    batch = {"image": image[None, None].float(), "mask": torch.from_numpy(mask)[None, None]}
    opt = torch.optim.AdamW(task.parameters(), lr=3e-3)
    for _ in range(60):
        loss = task(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    pred = task.predict(batch["image"])[0, 0].numpy()
    assert 2 * ((pred == 1) & (mask == 1)).sum() / ((pred == 1).sum() + mask.sum()) > 0.9


def test_decoder_choice_is_checked():
    with pytest.raises(ConfigError, match="unetr or token"):
        segmentation(2, 2, 1, encoder={"name": "vit_micro"}, decoder="fpn")
    assert segmentation(2, 2, 1, encoder={"name": "vit_micro"}, decoder="token").decoder == "token"
    lite = {"name": "litemedsam", "pretrained": False, "input_size": 64}
    assert segmentation(3, 2, 1, encoder=lite, image_size=[64, 64]).decoder == "unetr"   # auto: it has a pyramid
