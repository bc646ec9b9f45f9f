"""The encoder interface and registry."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmfm.registry import Registry


class Encoder(nn.Module):
    """Features only. Subclasses set ``out_dim``, ``spatial_dims``, ``in_channels`` and implement ``forward``.

    forward(x: (B, C, *spatial)) -> {"tokens": (B, N, D), "pooled": (B, D)}

    ``contract`` is the preprocessing contract: the modality preset, input size and spacing the encoder's weights
    expect (empty for an encoder trained from scratch); it is stored with every checkpoint.
    """

    out_dim: int
    spatial_dims: int
    in_channels: int
    contract: dict[str, Any] = {}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # pragma: no cover - interface
        raise NotImplementedError


ENCODERS: Registry[Encoder] = Registry("encoder")


def build_encoder(name: str, **kwargs: Any) -> Encoder:
    return ENCODERS.build(name, **kwargs)


def adapt_input_channels(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Pretrained first-layer weights (D, C, *k) for another number of input channels, as timm does
    (sum RGB into 1 channel; repeat and rescale for more)."""
    from timm.models import adapt_input_conv

    if weight.shape[1] == in_channels:
        return weight
    if weight.ndim == 4:
        return adapt_input_conv(in_channels, weight)
    d, c = weight.shape[:2]  # N-D kernels: the same rule, by hand (timm's helper is 2D only)
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = -(-in_channels // c)
    return weight.repeat(1, reps, *([1] * (weight.ndim - 2)))[:, :in_channels] * (c / in_channels)
