"""Generative proxy tasks: MAE and SimMIM, with any masking strategy of :mod:`mmfm.objectives.masking`.

References: He et al., MAE, CVPR 2022; Xie et al., SimMIM, CVPR 2022.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models.vision_transformer import Block
from torch import nn

from mmfm.encoders import Encoder
from mmfm.encoders.pos_embed import factored_pos_embed
from mmfm.errors import ConfigError
from mmfm.objectives.base import OBJECTIVES, Objective
from mmfm.objectives.heads import PixelDecoder, token_stride
from mmfm.objectives.losses import masked_reconstruction_loss
from mmfm.objectives.masking import check_masking, make_mask, patchify, unpatchify


class MaskedModelling(Objective):
    """Shared by MAE and SimMIM: the mask (with AnatoMask's reconstruction-guided difficulty) and the loss."""

    def __init__(self, encoder: Encoder, mask_ratio: float, masking: str, masking_options: dict | None) -> None:
        super().__init__()
        self.encoder, self.mask_ratio, self.masking = encoder, mask_ratio, masking
        self.masking_options = dict(masking_options or {})
        check_masking(masking, self.masking_options, mask_ratio)
        self.register_buffer("difficulty", torch.zeros(0), persistent=False)

    def make_mask(self, x: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        opts = dict(self.masking_options)
        if self.masking == "anatomask":
            opts["difficulty"] = self.patch_difficulty(x, grid)
        gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,))))  # from the (saved) global RNG
        return make_mask(self.masking, x, grid, self.mask_ratio, gen, **opts)

    @torch.no_grad()
    def patch_difficulty(self, x: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        """AnatoMask: per-patch reconstruction error of the current model under a random mask. Shape (B, N)."""
        gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,))))
        probe = make_mask("random", x, grid, self.mask_ratio, gen)
        _, per_patch = self.reconstruct(x, probe)
        return per_patch


class MAE(MaskedModelling):
    """Encoder sees only visible patches; a light transformer decoder reconstructs the masked ones."""

    def __init__(self, encoder: Encoder, mask_ratio: float = 0.75, masking: str = "random",
                 masking_options: dict | None = None, decoder_dim: int = 128, decoder_depth: int = 2,
                 decoder_heads: int = 4, norm_pix: bool = True) -> None:
        super().__init__(encoder, mask_ratio, masking, masking_options)
        if not hasattr(encoder, "patch_size") or not hasattr(encoder, "pos_embed"):
            raise ConfigError("MAE needs a ViT encoder (vit_*) that can drop masked tokens",
                              "use encoder.name=vit_mini, or SimMIM / DAE for CNN and Swin encoders")
        p, d, c = encoder.patch_size, encoder.spatial_dims, encoder.in_channels
        self.patch, self.norm_pix = p, norm_pix
        self.embed = nn.Linear(encoder.out_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(decoder_dim))
        self.pos = nn.ParameterList([nn.Parameter(torch.randn(encoder.max_grid, decoder_dim) * 0.02)
                                     for _ in range(3)])
        self.blocks = nn.ModuleList([Block(decoder_dim, decoder_heads, 4.0, qkv_bias=True)
                                     for _ in range(decoder_depth)])
        self.norm = nn.LayerNorm(decoder_dim)
        self.pred = nn.Linear(decoder_dim, p ** d * c)

    def reconstruct(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grid = tuple(s // self.patch for s in x.shape[2:])
        b, n = mask.shape
        n_vis = n - int(mask[0].sum())
        ids_shuffle = torch.argsort(mask.float() + torch.arange(n, device=x.device) / (2 * n), dim=1)  # visible first
        ids_restore = torch.argsort(ids_shuffle, dim=1)              # [B, N]
        visible = ids_shuffle[:, :n_vis]                             # [B, N_vis]
        latent = self.encoder(x, visible=visible)["tokens"]          # [B, N_vis, D]
        t = self.embed(latent)                                       # [B, N_vis, Dd]
        t = torch.cat([t, self.mask_token.expand(b, n - n_vis, -1)], dim=1)
        t = torch.gather(t, 1, ids_restore[..., None].expand(-1, -1, t.shape[-1]))  # [B, N, Dd] in grid order
        t = t + factored_pos_embed(list(self.pos), grid)             # [B, N, Dd]
        for blk in self.blocks:
            t = blk(t)
        pred = self.pred(self.norm(t))                               # [B, N, p^d*C]
        return masked_reconstruction_loss(pred, patchify(x, self.patch), mask, "mse", self.norm_pix)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        x = batch["image"]
        grid = tuple(s // self.patch for s in x.shape[2:])
        loss, _ = self.reconstruct(x, self.make_mask(x, grid))
        return self.total({"recon_loss": loss})


class SimMIM(MaskedModelling):
    """Masked patches replaced by a mask token (ViT) or zeroed in the input (any other encoder); a linear
    pixel decoder predicts them; L1 on masked pixels."""

    def __init__(self, encoder: Encoder, mask_ratio: float = 0.6, masking: str = "random",
                 masking_options: dict | None = None, image_size: int = 32, mask_patch: int = 4) -> None:
        super().__init__(encoder, mask_ratio, masking, masking_options)
        self.token_masking = hasattr(encoder, "mask_token")
        self.patch = encoder.patch_size if self.token_masking else mask_patch
        stride = token_stride(encoder, image_size)
        self.decoder = PixelDecoder(encoder.out_dim, encoder.in_channels, stride, encoder.spatial_dims)

    def encode_masked(self, x: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Encoder features of the masked image: {"tokens": (B, N, D), "pooled": (B, D)}."""
        grid = tuple(s // self.patch for s in x.shape[2:])
        if self.token_masking:
            return self.encoder(x, mask=mask)
        keep = (~mask).float()[..., None].expand(-1, -1, self.patch ** len(grid) * x.shape[1])
        return self.encoder(unpatchify(patchify(x, self.patch) * keep, self.patch, grid, x.shape[1]))

    def reconstruction_loss(self, tokens: torch.Tensor, x: torch.Tensor,
                            mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pred = self.decoder(tokens, tuple(x.shape))                  # (B, C, *s)
        return masked_reconstruction_loss(patchify(pred, self.patch), patchify(x, self.patch), mask, "l1")

    def reconstruct(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.reconstruction_loss(self.encode_masked(x, mask)["tokens"], x, mask)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        x = batch["image"]
        grid = tuple(s // self.patch for s in x.shape[2:])
        loss, _ = self.reconstruct(x, self.make_mask(x, grid))
        return self.total({"recon_loss": loss})


OBJECTIVES.register("mae")(MAE)
OBJECTIVES.register("simmim")(SimMIM)
