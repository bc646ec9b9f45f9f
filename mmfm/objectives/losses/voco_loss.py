"""VoCo: predict how much a random crop overlaps each base crop from feature similarity.

pred_ij = ReLU(cos(f(random_i), f(base_ij))); loss = mean |pred - overlap| + lambda * mean over pairs of base
crops of ReLU(cos(f(base_ia), f(base_ib))) (base crops of different positions should differ).
Reference: Wu et al., VoCo, CVPR 2024.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmfm.objectives.losses.full_precision import full_precision


class VoCoLoss(nn.Module):
    def __init__(self, reg_weight: float = 1.0) -> None:
        super().__init__()
        self.reg_weight = reg_weight

    @full_precision
    def forward(self, crop: torch.Tensor, bases: torch.Tensor, overlap: torch.Tensor) -> dict[str, torch.Tensor]:
        """crop: (B, D); bases: (B, K, D); overlap: (B, K) target area fractions in [0, 1]."""
        c, b = F.normalize(crop.float(), dim=-1), F.normalize(bases.float(), dim=-1)
        pred = torch.relu((b @ c[..., None]).squeeze(-1))           # (B, K)
        pred_loss = (pred - overlap).abs().mean()
        sim = torch.relu(b @ b.transpose(1, 2))                     # (B, K, K)
        k = sim.shape[1]
        off = ~torch.eye(k, dtype=torch.bool, device=sim.device)
        reg = sim[:, off].mean() if k > 1 else sim.new_zeros(())
        return {"pred_loss": pred_loss, "reg_loss": self.reg_weight * reg}
