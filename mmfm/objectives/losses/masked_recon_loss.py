"""Reconstruction loss over masked patches only (MAE uses MSE, SimMIM uses L1)."""

from __future__ import annotations

import torch

from mmfm.objectives.losses.full_precision import full_precision


@full_precision
def masked_reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                               kind: str = "mse", norm_pix: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """pred, target: (B, N, P) patches; mask: (B, N) bool. Returns (loss, per-patch error (B, N)).

    ``norm_pix`` normalises each target patch by its own mean and std (MAE's variant).
    """
    if norm_pix:
        mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
    diff = pred.float() - target.float()
    per_patch = (diff ** 2 if kind == "mse" else diff.abs()).mean(-1)   # (B, N)
    m = mask.float()
    return (per_patch * m).sum() / m.sum().clamp(min=1), per_patch.detach()
