"""Contrastive losses on L2-normalised embeddings.

* :class:`MultiPositiveNCELoss` - every pair with the same ``group`` is a positive (self excluded); the
  loss for anchor i is ``-mean_{p in P(i)} log softmax_j(s_ij / T)[p]`` over all j != i (SupCon form).
  MICLe (groups = patients) and PCL (groups = slice-position bins) use it.
* :class:`NTXentLoss` - SimCLR's NT-Xent: two views, the only positive is the other view of the same image.
* :class:`InfoNCELoss` - MoCo: one positive key per query against a queue of negatives.

References: Chen et al., SimCLR, 2020; He et al., MoCo, 2020; Khosla et al., SupCon, 2020;
Azizi et al., MICLe, 2021; Zeng et al., PCL, 2021.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmfm.errors import ConfigError
from mmfm.objectives.losses.full_precision import full_precision
from mmfm.objectives.losses.gather import gather_with_grad


class MultiPositiveNCELoss(nn.Module):
    def __init__(self, temperature: float = 0.1, gather: bool = True) -> None:
        super().__init__()
        self.temperature, self.gather = temperature, gather

    @full_precision
    def forward(self, z: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        """z: (M, D) embeddings; groups: (M,) ints. Anchors without any positive are skipped."""
        if self.gather:
            z, groups = gather_with_grad(z), gather_with_grad(groups)
        z = F.normalize(z.float(), dim=-1)
        sim = z @ z.T / self.temperature                           # (M, M)
        eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
        sim = sim.masked_fill(eye, float("-inf"))
        log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
        pos = (groups[:, None] == groups[None, :]) & ~eye          # (M, M)
        n_pos = pos.sum(1)
        has = n_pos > 0
        if not has.any():
            raise ConfigError("no image in this batch has a positive partner (every group has one member)",
                              "raise train.batch_size, or pretrain on data with several images per patient "
                              "(MICLe) or per position bin (PCL)")
        per_anchor = -(log_prob.masked_fill(~pos, 0.0)).sum(1)[has] / n_pos[has]
        return per_anchor.mean()


class NTXentLoss(nn.Module):
    def __init__(self, temperature: float = 0.1, gather: bool = True) -> None:
        super().__init__()
        self.inner = MultiPositiveNCELoss(temperature, gather=False)
        self.gather = gather

    @full_precision
    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """z1, z2: (B, D), row i of each is a view of image i."""
        if self.gather:
            z1, z2 = gather_with_grad(z1), gather_with_grad(z2)
        ids = torch.arange(len(z1), device=z1.device)
        return self.inner(torch.cat([z1, z2]), torch.cat([ids, ids]))


class InfoNCELoss(nn.Module):
    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        self.temperature = temperature

    @full_precision
    def forward(self, q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor) -> torch.Tensor:
        """q, k: (B, D) queries and their positive keys; queue: (K, D) negatives."""
        q, k, queue = F.normalize(q.float(), dim=-1), F.normalize(k.float(), dim=-1), F.normalize(queue.float(), dim=-1)
        pos = (q * k).sum(-1, keepdim=True)                         # (B, 1)
        neg = q @ queue.T                                           # (B, K)
        logits = torch.cat([pos, neg], dim=1) / self.temperature
        return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))
