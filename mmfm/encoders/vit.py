"""A ViT whose one N-D patch embedding takes 2D and 3D inputs (the switchable embedding of UniMiSS).

The patch kernel is stored as 3D ``(D, C, p, p, p)``. A 3D input is embedded by ``conv3d``; a 2D input by
``conv2d`` with the kernel summed over depth, i.e. exactly as if the 2D image were a slab of ``p`` identical
slices. Position embeddings are factored per axis (``z``, ``y``, ``x``), so 2D and 3D grids of any size up to
``max_grid`` share them. Transformer blocks are timm's.

Reference: Xie et al., UniMiSS, ECCV 2022; Dosovitskiy et al., ViT, ICLR 2021.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn
from torch.utils.checkpoint import checkpoint

from mmfm.encoders.base import ENCODERS, Encoder
from mmfm.encoders.pos_embed import factored_pos_embed
from mmfm.errors import ConfigError


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
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> bool:
        self.grad_checkpointing = enable
        return True

    def _block(self, blk: nn.Module, t: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(blk, t, use_reentrant=False)
        return blk(t)

    def pos_embed(self, grid: tuple[int, ...]) -> torch.Tensor:
        """Factored position embedding for a 2D (y, x) or 3D (z, y, x) grid. Shape: (N, D)."""
        if max(grid) > self.max_grid:
            raise ConfigError(f"the input's patch grid {grid} exceeds the ViT's max_grid={self.max_grid}",
                              "raise encoder.max_grid, use a larger encoder.patch_size, or resize the input "
                              "(data.size)")
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
            t = self._block(blk, t)                                     # (B, N, D)
        t = self.norm(t)
        return {"tokens": t, "pooled": t.mean(dim=1)}


    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Hidden states after evenly spaced blocks on the token grid: log2(patch) levels (UNETR takes blocks 3, 6,
        9, 12 of a patch-16 ViT), the last one normalised."""
        t, grid = self.patch_embed(x)
        t = t + self.pos_embed(grid)
        levels = max(1, int(math.log2(self.patch_size)))
        depth = len(self.blocks)
        take = {round(depth * (n + 1) / levels) - 1 for n in range(levels)}
        out = []
        for n, blk in enumerate(self.blocks):
            t = self._block(blk, t)
            if n in take:
                h = self.norm(t) if n == depth - 1 else t
                out.append(h.transpose(1, 2).reshape(t.shape[0], t.shape[2], *grid))
        return out


def from_timm_state_dict(sd: dict[str, torch.Tensor], encoder: ViTEncoder) -> dict[str, torch.Tensor]:
    """A timm ``VisionTransformer`` state dict (e.g. ``vit_small_patch16_224``) in this encoder's layout.

    Transformer blocks and the final norm share timm's names and load as they are. The 2D patch kernel (D, C, p, p)
    is inflated over depth (divided by p, I3D-style), so a 2D input sees exactly timm's kernel and a 3D input its
    average over p slices; its channels are adapted as timm does (RGB summed for 1 channel). timm's 2D position
    table (1, [1 +] H*W, D) becomes the factored (y, x) tables by the least-squares fit P[i, j] ~ y[i] + x[j]
    (exact when the table is additive); the class token and the classifier head are dropped (features only).
    """
    from mmfm.encoders.base import adapt_input_channels

    out = {k: v for k, v in sd.items() if k.startswith("blocks.") or k.startswith("norm.")}
    w = adapt_input_channels(sd["patch_embed.proj.weight"], encoder.in_channels)       # (D, C, p, p)
    p = w.shape[-1]
    if p != encoder.patch_size:
        raise ConfigError(f"timm weights have patch size {p}, the encoder {encoder.patch_size}",
                          f"build the encoder with patch_size={p}")
    out["patch_embed.weight"] = w[:, :, None].repeat(1, 1, p, 1, 1) / p                  # (D, C, p, p, p)
    out["patch_embed.bias"] = sd["patch_embed.proj.bias"]
    pos = sd["pos_embed"][0]                                                             # ([1 +] H*W, D)
    side = math.isqrt(pos.shape[0])
    pos = pos[pos.shape[0] - side * side:].reshape(side, side, -1)                       # (H, W, D), no cls
    if side > encoder.max_grid:
        raise ConfigError(f"timm position table is {side}x{side}, more than max_grid={encoder.max_grid}",
                          f"build the encoder with max_grid >= {side}")
    mean = pos.mean(dim=(0, 1))
    own = dict(encoder.state_dict())
    for key, table in (("pos.1", pos.mean(dim=1) - mean / 2), ("pos.2", pos.mean(dim=0) - mean / 2)):
        t = own[key].clone()
        t[:side] = table
        out[key] = t
    out["pos.0"] = torch.zeros_like(own["pos.0"])  # no depth axis in a 2D model
    out["mask_token"] = own["mask_token"]
    return out


# Standard names mean what they mean in timm and the ViT papers (width x depth x heads, patch 16):
# ViT-Ti 192 x 12 x 3, ViT-S 384 x 12 x 6, ViT-B 768 x 12 x 12. Sizes made for CPU budgets and tests have names
# of their own (vit_mini, vit_micro) and a small patch (4) for 32-pixel inputs.


def _vit(dim: int, depth: int, heads: int, spatial_dims: int, in_channels: int, patch_size: int,
         mlp_ratio: float, max_grid: int) -> ViTEncoder:
    return ViTEncoder(spatial_dims, in_channels, patch_size, dim=dim, depth=depth, heads=heads,
                      mlp_ratio=mlp_ratio, max_grid=max_grid)


@ENCODERS.register("vit")
def vit(spatial_dims: int = 2, in_channels: int = 1, patch_size: int = 16, dim: int = 384, depth: int = 12,
        heads: int = 6, mlp_ratio: float = 4.0, max_grid: int = 32) -> ViTEncoder:
    """Any width, depth and heads (e.g. a timm checkpoint's, added with `mmfm zoo add`)."""
    return _vit(dim, depth, heads, spatial_dims, in_channels, patch_size, mlp_ratio, max_grid)


@ENCODERS.register("vit_micro")
def vit_micro(spatial_dims: int = 2, in_channels: int = 1, patch_size: int = 4, mlp_ratio: float = 4.0,
              max_grid: int = 32) -> ViTEncoder:
    """For tests: 64 x 2 x 2 heads."""
    return _vit(64, 2, 2, spatial_dims, in_channels, patch_size, mlp_ratio, max_grid)


@ENCODERS.register("vit_mini")
def vit_mini(spatial_dims: int = 2, in_channels: int = 1, patch_size: int = 4, mlp_ratio: float = 4.0,
             max_grid: int = 32) -> ViTEncoder:
    """For CPU budgets (the quickstart): ViT-Ti's width and heads at half its depth, 192 x 6 x 3."""
    return _vit(192, 6, 3, spatial_dims, in_channels, patch_size, mlp_ratio, max_grid)


@ENCODERS.register("vit_tiny")
def vit_tiny(spatial_dims: int = 2, in_channels: int = 1, patch_size: int = 16, mlp_ratio: float = 4.0,
             max_grid: int = 32) -> ViTEncoder:
    """ViT-Ti: 192 x 12 x 3 (timm ``vit_tiny_patch16_224``)."""
    return _vit(192, 12, 3, spatial_dims, in_channels, patch_size, mlp_ratio, max_grid)


@ENCODERS.register("vit_small")
def vit_small(spatial_dims: int = 2, in_channels: int = 1, patch_size: int = 16, mlp_ratio: float = 4.0,
              max_grid: int = 32) -> ViTEncoder:
    """ViT-S: 384 x 12 x 6 (timm ``vit_small_patch16_224``)."""
    return _vit(384, 12, 6, spatial_dims, in_channels, patch_size, mlp_ratio, max_grid)


@ENCODERS.register("vit_base")
def vit_base(spatial_dims: int = 2, in_channels: int = 1, patch_size: int = 16, mlp_ratio: float = 4.0,
             max_grid: int = 32) -> ViTEncoder:
    """ViT-B: 768 x 12 x 12 (timm ``vit_base_patch16_224``)."""
    return _vit(768, 12, 12, spatial_dims, in_channels, patch_size, mlp_ratio, max_grid)
