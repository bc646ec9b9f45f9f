"""Windowed-attention (Swin) encoder: MONAI's ``SwinTransformer`` (the Swin UNETR backbone), 2D or 3D.

Reference: Liu et al., Swin Transformer, ICCV 2021; Hatamizadeh et al., Swin UNETR, 2022.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.nets.swin_unetr import SwinTransformer, WindowAttention

from mmfm.encoders.base import ENCODERS, Encoder, swap_class
from mmfm.errors import ConfigError


class FusedWindowAttention(WindowAttention):
    """MONAI's window attention through torch's fused scaled-dot-product attention in training too (MONAI takes
    its SDPA branch only without gradients): the relative-position bias plus the shifted-window mask as the
    additive attention mask, as MONAI's own branch builds it. Same weights, same result."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.relative_position_index[:n, :n].reshape(-1)]
        bias = bias.reshape(n, n, -1).permute(2, 0, 1)                                   # (h, n, n)
        if mask is not None:
            nw = mask.shape[0]
            bias = bias.view(1, 1, self.num_heads, n, n) + mask.reshape(1, nw, 1, n, n)
            bias = bias.expand(b // nw, nw, self.num_heads, n, n).reshape(b, self.num_heads, n, n)
        else:
            bias = bias.unsqueeze(0)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=self.scale,
                                           dropout_p=self.attn_drop.p if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, c)))


class SwinEncoder(Encoder):
    """Tokens of the last stage. Input sides must be divisible by 32 (patch 2, four 2x merges)."""

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, embed_dim: int = 24,
                 depths: tuple[int, ...] = (2, 2, 2, 2), heads: tuple[int, ...] = (3, 6, 12, 24),
                 window_size: int = 4) -> None:
        super().__init__()
        self.spatial_dims, self.in_channels, self.out_dim = spatial_dims, in_channels, embed_dim * 16
        self.net = SwinTransformer(in_chans=in_channels, embed_dim=embed_dim, window_size=(window_size,) * spatial_dims,
                                   patch_size=(2,) * spatial_dims, depths=depths, num_heads=heads,
                                   spatial_dims=spatial_dims)
        swap_class(self.net, WindowAttention, FusedWindowAttention)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        last = self.pyramid(x)[-1]                          # (B, 16*E, *s/32)
        tokens = last.flatten(2).transpose(1, 2)          # (B, N, 16*E)
        return {"tokens": tokens, "pooled": tokens.mean(dim=1)}


    def set_grad_checkpointing(self, enable: bool = True) -> bool:
        for m in self.net.modules():          # MONAI's Swin blocks check this flag in forward
            if hasattr(m, "use_checkpoint"):
                m.use_checkpoint = enable
        return True

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The patch embedding and the four stages: (B, E * 2^l, *s / 2^(l+1)), l = 0..4 (Swin UNETR's skips)."""
        if any(s % 32 for s in x.shape[2:]):
            raise ConfigError(f"a Swin encoder needs input sides that are multiples of 32, got {tuple(x.shape[2:])}",
                              "set data.size to multiples of 32 (e.g. [64, 64]) or use another encoder")
        return list(self.net(x, normalize=True))


@ENCODERS.register("swin_tiny")
def swin_tiny(spatial_dims: int = 2, in_channels: int = 1, window_size: int = 4) -> SwinEncoder:
    """For tests and CPU budgets: embed 12, one block per stage (not Swin-T, which is 96 x (2, 2, 6, 2))."""
    return SwinEncoder(spatial_dims, in_channels, embed_dim=12, depths=(1, 1, 1, 1), heads=(1, 2, 3, 6),
                       window_size=window_size)


@ENCODERS.register("swin_small")
def swin_small(spatial_dims: int = 2, in_channels: int = 1, window_size: int = 4) -> SwinEncoder:
    """Embed 24, depths (2, 2, 2, 2): a CPU-sized Swin (the Swin UNETR 'feature_size=24' backbone)."""
    return SwinEncoder(spatial_dims, in_channels, embed_dim=24, window_size=window_size)
