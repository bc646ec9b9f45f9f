"""Weighted k-NN on cosine similarity of frozen features (as in DINO: votes weighted by exp(sim / T))."""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_predict(train: tuple[torch.Tensor, torch.Tensor], query: torch.Tensor, num_classes: int, k: int = 20,
                temperature: float = 0.07) -> torch.Tensor:
    """Class probabilities (Q, C) for query features (Q, D)."""
    xtr, ytr = F.normalize(train[0].float(), dim=1), train[1]
    q = F.normalize(query.float(), dim=1)
    sim = q @ xtr.T                                              # (Q, N)
    k = min(k, len(xtr))
    top, idx = sim.topk(k, dim=1)                                # (Q, k)
    votes = torch.zeros(len(q), num_classes)
    votes.scatter_add_(1, ytr[idx], (top / temperature).exp())
    return votes / votes.sum(1, keepdim=True)
