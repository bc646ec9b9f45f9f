"""CLIP's symmetric contrastive loss (review eq. 6), with hard or soft (MedCLIP) targets.

    L = 1/(2N) sum_i [ -log softmax_j(s(v_i, t_j) / tau)[i] - log softmax_j(s(t_i, v_j) / tau)[i] ]

``logit_scale`` is log(1/tau) (learnable in the model that owns it; clamped at 100 as in CLIP). Under DDP both
embeddings are all-gathered with gradients, so every process computes the loss over the global batch.

Soft targets (MedCLIP's semantic matching loss): pass ``semantic`` (N, K) features of each pair (multi-hot
labels or text embeddings); the target distribution of row i is softmax_j(cos(sem_i, sem_j) / soft_temperature),
so pairs that say the same thing are not pushed apart as negatives.
References: Radford et al., CLIP, 2021; Wang et al., MedCLIP, 2022.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmfm.objectives.losses.full_precision import full_precision
from mmfm.objectives.losses.gather import gather_with_grad

MAX_LOGIT_SCALE = 100.0


@full_precision
def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -sum_j targets_ij log softmax(logits)_ij."""
    return -(targets * F.log_softmax(logits, dim=1)).sum(1).mean()


@full_precision
def semantic_targets(semantic: torch.Tensor, soft_temperature: float) -> torch.Tensor:
    """(N, K) -> (N, N) row-stochastic targets from cosine similarity (symmetric, so one matrix serves both
    directions)."""
    s = F.normalize(semantic.float(), dim=-1)
    return F.softmax(s @ s.T / soft_temperature, dim=1)


class ClipLoss(nn.Module):
    def __init__(self, gather: bool = True, soft_temperature: float = 0.1) -> None:
        super().__init__()
        self.gather, self.soft_temperature = gather, soft_temperature

    @full_precision
    def forward(self, image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor,
                semantic: torch.Tensor | None = None, groups: torch.Tensor | None = None) -> torch.Tensor:
        """image, text: (B, E) embeddings (normalised here); logit_scale: scalar log(1/tau);
        semantic: optional (B, K) features for soft targets; groups: optional (B,) ints, pairs with equal
        group (e.g. identical report text) share the target mass equally (duplicates are not negatives)."""
        if self.gather:
            image, text = gather_with_grad(image), gather_with_grad(text)
            semantic = gather_with_grad(semantic) if semantic is not None else None
            groups = gather_with_grad(groups) if groups is not None else None
        image, text = F.normalize(image.float(), dim=-1), F.normalize(text.float(), dim=-1)
        scale = logit_scale.float().exp().clamp(max=MAX_LOGIT_SCALE)
        logits = scale * image @ text.T                                  # (N, N) image -> text
        if groups is not None:
            same = (groups[:, None] == groups[None, :]).float()
            targets = same / same.sum(1, keepdim=True)
            return (soft_cross_entropy(logits, targets) + soft_cross_entropy(logits.T, targets)) / 2
        if semantic is None:
            labels = torch.arange(len(image), device=image.device)
            return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        targets = semantic_targets(semantic, self.soft_temperature)     # (N, N)
        return (soft_cross_entropy(logits, targets) + soft_cross_entropy(logits.T, targets)) / 2
