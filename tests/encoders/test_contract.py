"""The encoder contract, over every registered encoder, in 2D and 3D."""

from __future__ import annotations

import pytest
import torch

from mmfm.encoders import ENCODERS, build_encoder


@pytest.mark.parametrize("name", ENCODERS.names())
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_encoder_contract(name, spatial_dims):
    enc = build_encoder(name, spatial_dims=spatial_dims, in_channels=2)
    assert (enc.spatial_dims, enc.in_channels) == (spatial_dims, 2)
    x = torch.randn(2, 2, *([32] * spatial_dims))
    out = enc(x)
    assert set(out) == {"tokens", "pooled"}
    b, n, d = out["tokens"].shape
    assert (b, d) == (2, enc.out_dim) and n >= 1 and out["pooled"].shape == (2, enc.out_dim)
    (out["pooled"].sum() + out["tokens"].mean()).backward()
    missing = [n for n, p in enc.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum())]
    assert not missing, f"parameters without gradient: {missing[:5]}"
