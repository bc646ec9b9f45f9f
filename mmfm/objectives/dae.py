"""A DAE-style hybrid objective: reconstruct the clean image from a disrupted one (local masking, noise and
down-sampling together) plus a contrastive term between two disruptions (or two modalities when the batch has
a paired ``image_b``: cross-modal contrast). Each term has its own weight.

Loss terms: ``mask_loss`` (L1 on masked patches), ``restore_loss`` (L1 on the rest: denoising and
super-resolution), ``contrast_loss`` (NT-Xent).
Reference: Valanarasu et al., Disruptive Autoencoders, 2023; Zhou et al., PCRL, 2021.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from mmfm.encoders import Encoder
from mmfm.objectives.base import OBJECTIVES, Objective
from mmfm.objectives.heads import PixelDecoder, projection_head, token_stride
from mmfm.objectives.losses import NTXentLoss, masked_reconstruction_loss
from mmfm.objectives.masking import check_mask_ratio, make_mask, patchify, unpatchify


class DAE(Objective):
    def __init__(self, encoder: Encoder, image_size: int = 32, mask_ratio: float = 0.3, mask_patch: int = 4,
                 noise_std: float = 0.1, downsample: int = 2, weights: dict[str, float] | None = None,
                 temperature: float = 0.1) -> None:
        super().__init__()
        check_mask_ratio(mask_ratio)
        self.encoder, self.mask_ratio, self.patch = encoder, mask_ratio, mask_patch
        self.noise_std, self.downsample = noise_std, downsample
        self.weights = {"mask": 1.0, "restore": 1.0, "contrast": 0.1, **(weights or {})}
        self.decoder = PixelDecoder(encoder.out_dim, encoder.in_channels, token_stride(encoder, image_size),
                                    encoder.spatial_dims)
        self.head = projection_head(encoder.out_dim)
        self.contrast = NTXentLoss(temperature)

    def disrupt(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grid = tuple(s // self.patch for s in x.shape[2:])
        gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,))))
        mask = make_mask("random", x, grid, self.mask_ratio, gen)                     # (B, N)
        keep = (~mask).float()[..., None].expand(-1, -1, self.patch ** len(grid) * x.shape[1])
        y = unpatchify(patchify(x, self.patch) * keep, self.patch, grid, x.shape[1])   # local masking
        y = y + self.noise_std * torch.randn_like(y)                                   # noise
        if self.downsample > 1:                                                        # low resolution
            mode = "bilinear" if x.ndim == 4 else "trilinear"
            small = F.interpolate(y, scale_factor=1 / self.downsample, mode=mode, align_corners=False)
            y = F.interpolate(small, size=x.shape[2:], mode=mode, align_corners=False)
        return y, mask

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        x = batch["image"]
        y1, mask = self.disrupt(x)
        other = batch["image_b"] if "image_b" in batch else x
        y2, _ = self.disrupt(other)
        f1, f2 = self.encoder(y1), self.encoder(y2)
        rec = self.decoder(f1["tokens"], tuple(x.shape))
        terms = {}
        if self.weights["mask"]:
            terms["mask_loss"] = self.weights["mask"] * masked_reconstruction_loss(
                patchify(rec, self.patch), patchify(x, self.patch), mask, "l1")[0]
        if self.weights["restore"]:
            terms["restore_loss"] = self.weights["restore"] * masked_reconstruction_loss(
                patchify(rec, self.patch), patchify(x, self.patch), ~mask, "l1")[0]
        if self.weights["contrast"]:
            terms["contrast_loss"] = self.weights["contrast"] * self.contrast(
                self.head(f1["pooled"]), self.head(f2["pooled"]))
        return self.total(terms)


OBJECTIVES.register("dae")(DAE)
