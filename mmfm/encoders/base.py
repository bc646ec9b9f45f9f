"""The encoder interface and registry."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmfm.registry import Registry


class Encoder(nn.Module):
    """Features only. Subclasses set ``out_dim``, ``spatial_dims``, ``in_channels`` and implement ``forward``.

    forward(x: (B, C, *spatial)) -> {"tokens": (B, N, D), "pooled": (B, D)}
    """

    out_dim: int
    spatial_dims: int
    in_channels: int

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # pragma: no cover - interface
        raise NotImplementedError


ENCODERS: Registry[Encoder] = Registry("encoder")


def build_encoder(name: str, **kwargs: Any) -> Encoder:
    return ENCODERS.build(name, **kwargs)
