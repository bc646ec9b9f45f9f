"""VoCo: volume contrast by predicting a random crop's position against base crops, 2D and 3D.

The image is split into ``k^d`` base crops; a random crop of the same size is taken anywhere; its overlap
fraction with each base crop is the target, predicted from feature similarity (:class:`VoCoLoss`).
Reference: Wu et al., VoCo, CVPR 2024.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.nn.functional as F

from mmfm.encoders import Encoder
from mmfm.objectives.base import OBJECTIVES, Objective
from mmfm.objectives.heads import projection_head
from mmfm.objectives.losses import VoCoLoss


class VoCo(Objective):
    couples_samples = True

    def __init__(self, encoder: Encoder, k: int = 2, crop_size: int | None = None, proj_dim: int = 128,
                 reg_weight: float = 1.0) -> None:
        super().__init__()
        self.encoder, self.k, self.crop_size = encoder, k, crop_size
        self.head = projection_head(encoder.out_dim, proj_dim)
        self.loss = VoCoLoss(reg_weight)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        x = batch["image"]
        b, _, *s = x.shape
        d, k = len(s), self.k
        side = [n // k for n in s]
        corners = list(itertools.product(*[range(k)] * d))
        bases = [x[(slice(None), slice(None), *[slice(c * w, (c + 1) * w) for c, w in zip(cor, side)])]
                 for cor in corners]                                   # K x (B, C, *side)
        start = [torch.randint(0, n - w + 1, (b,)) for n, w in zip(s, side)]
        crops, overlaps = [], []
        for i in range(b):
            st = [int(a[i]) for a in start]
            crops.append(x[(i, slice(None), *[slice(a, a + w) for a, w in zip(st, side)])])
            ov = []
            for cor in corners:
                frac = 1.0
                for a, c, w in zip(st, cor, side):
                    frac *= max(0, min(a + w, (c + 1) * w) - max(a, c * w)) / w
                ov.append(frac)
            overlaps.append(ov)
        overlap = torch.tensor(overlaps, device=x.device)             # (B, K)
        views = torch.cat([torch.stack(crops), *bases])               # ((1 + K) B, C, *side)
        if self.crop_size:
            views = F.interpolate(views, size=[self.crop_size] * d, mode="bilinear" if d == 2 else "trilinear")
        z = self.head(self.encoder(views)["pooled"])                  # ((1 + K) B, P)
        crop_z, base_z = z[:b], z[b:].reshape(len(corners), b, -1).transpose(0, 1)  # (B, P), (B, K, P)
        return self.total(self.loss(crop_z, base_z, overlap))


OBJECTIVES.register("voco")(VoCo)
