"""A ViT whose one N-D patch embedding takes 2D and 3D inputs (the switchable embedding of UniMiSS).

The patch kernel is stored as 3D ``(D, C, p, p, p)``. A 3D input is embedded by ``conv3d``; a 2D input by
``conv2d`` with the kernel summed over depth, i.e. exactly as if the 2D image were a slab of ``p`` identical
slices. Position embeddings are factored per axis (``z``, ``y``, ``x``), so 2D and 3D grids of any size up to
``max_grid`` share them. Transformer blocks are timm's.

Reference: Xie et al., UniMiSS, ECCV 2022; Dosovitskiy et al., ViT, ICLR 2021.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn

from mmfm.encoders.base import ENCODERS, Encoder
from mmfm.encoders.pos_embed import factored_pos_embed


class PatchEmbedND(nn.Module):
    """(B, C, *s) -> tokens (B, N, D) and the grid ``s / p``. One kernel for 2D and 3D."""

    def __init__(self, in_channels: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.weight = nn.Parameter(torch.empty(dim, in_channels, patch_size, patch_size, patch_size))
        self.bias = nn.Parameter(torch.zeros(dim))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        p = self.patch_size
        if x.ndim == 5:
            y = F.conv3d(x, self.weight, self.bias, stride=p)          # (B, D, z, y, x)
        elif x.ndim == 4:
            y = F.conv2d(x, self.weight.sum(dim=2), self.bias, stride=p)  # (B, D, y, x)
        else:
            raise ValueError(f"expected (B, C, H, W) or (B, C, D, H, W), got {tuple(x.shape)}")
        grid = tuple(y.shape[2:])
        return y.flatten(2).transpose(1, 2), grid                     # (B, N, D)


class ViTEncoder(Encoder):
    """forward(x, mask=None, visible=None) -> {"tokens": (B, N', D), "pooled": (B, D)}.

    ``mask`` (B, N) bool: masked tokens are replaced by a learned mask token (SimMIM).
    ``visible`` (B, N_vis) long: only these tokens go through the blocks (MAE).
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, patch_size: int = 4, dim: int = 192,
                 depth: int = 6, heads: int = 3, mlp_ratio: float = 4.0, max_grid: int = 32) -> None:
        super().__init__()
        self.spatial_dims, self.in_channels, self.out_dim = spatial_dims, in_channels, dim
        self.patch_size, self.max_grid = patch_size, max_grid
        self.patch_embed = PatchEmbedND(in_channels, dim, patch_size)
        self.pos = nn.ParameterList([nn.Parameter(torch.randn(max_grid, dim) * 0.02) for _ in range(3)])  # z, y, x
        self.mask_token = nn.Parameter(torch.zeros(dim))
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio, qkv_bias=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def pos_embed(self, grid: tuple[int, ...]) -> torch.Tensor:
        """Factored position embedding for a 2D (y, x) or 3D (z, y, x) grid. Shape: (N, D)."""
        if max(grid) > self.max_grid:
            raise ValueError(f"patch grid {grid} exceeds max_grid={self.max_grid}; raise max_grid or crop the input")
        return factored_pos_embed(list(self.pos), grid)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                visible: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        t, grid = self.patch_embed(x)                                   # (B, N, D)
        if mask is not None:
            t = torch.where(mask[..., None], self.mask_token.to(t.dtype), t)
        t = t + self.pos_embed(grid)
        if visible is not None:
            t = torch.gather(t, 1, visible[..., None].expand(-1, -1, t.shape[-1]))  # (B, N_vis, D)
        for blk in self.blocks:
            t = blk(t)
        t = self.norm(t)
        return {"tokens": t, "pooled": t.mean(dim=1)}


@ENCODERS.register("vit_tiny")
def vit_tiny(spatial_dims: int = 2, in_channels: int = 1, patch_size: int = 4, **kw: Any) -> ViTEncoder:
    """For tests and CPU budgets: dim 64, depth 2."""
    return ViTEncoder(spatial_dims, in_channels, patch_size, dim=64, depth=2, heads=2, **kw)


@ENCODERS.register("vit_small")
def vit_small(spatial_dims: int = 2, in_channels: int = 1, patch_size: int = 4, **kw: Any) -> ViTEncoder:
    return ViTEncoder(spatial_dims, in_channels, patch_size, dim=192, depth=6, heads=3, **kw)


@ENCODERS.register("vit_base")
def vit_base(spatial_dims: int = 2, in_channels: int = 1, patch_size: int = 16, **kw: Any) -> ViTEncoder:
    return ViTEncoder(spatial_dims, in_channels, patch_size, dim=768, depth=12, heads=12, **kw)
