"""Linear probe: several logistic-regression heads (a grid of learning rates and weight decays) trained at once on
standardised frozen features; the head with the best validation balanced accuracy is reported on test.

Written here rather than with scikit-learn because all heads train as one batched tensor program on the same
features, which is what makes a 3-seed x 3-fraction sweep cheap.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from mmfm.evaluation.metrics import classification_metrics


def linear_probe(train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
                 test: tuple[torch.Tensor, torch.Tensor], num_classes: int, seed: int = 0, steps: int = 300,
                 lrs: tuple[float, ...] = (1e-3, 1e-2, 1e-1), wds: tuple[float, ...] = (0.0, 1e-4, 1e-2),
                 ) -> dict[str, float]:
    """train/val/test: (features (N, D), labels (N,)). Returns test metrics plus the chosen ``lr`` and ``wd``."""
    g = torch.Generator().manual_seed(seed)
    xtr, ytr = train
    mean, std = xtr.mean(0), xtr.std(0) + 1e-6
    norm = lambda x: (x - mean) / std  # noqa: E731
    grid = list(itertools.product(lrs, wds))
    k, d = len(grid), xtr.shape[1]
    w = (torch.randn(k, d, num_classes, generator=g) * 0.01).requires_grad_(True)
    b = torch.zeros(k, 1, num_classes, requires_grad=True)
    lr = torch.tensor([c[0] for c in grid]).view(k, 1, 1)
    wd = torch.tensor([c[1] for c in grid]).view(k, 1, 1)
    opt = torch.optim.Adam([w, b], lr=1.0)  # per-head learning rates are applied by scaling the gradients
    xn = norm(xtr)[None].expand(k, -1, -1)                     # (K, N, D)
    for _ in range(steps):
        logits = xn @ w + b                                    # (K, N, C)
        loss = F.cross_entropy(logits.reshape(-1, num_classes), ytr.repeat(k), reduction="none").view(k, -1).mean(1)
        reg = (wd.view(k) * (w ** 2).sum(dim=(1, 2))).sum()
        opt.zero_grad()
        (loss.sum() + reg).backward()
        w.grad.mul_(lr)
        b.grad.mul_(lr)
        opt.step()
    with torch.no_grad():
        val_scores = [classification_metrics((norm(val[0]) @ w[i] + b[i]).softmax(-1), val[1])["balanced_accuracy"]
                      for i in range(k)]
        best = int(torch.tensor(val_scores).argmax())
        out = classification_metrics((norm(test[0]) @ w[best] + b[best]).softmax(-1), test[1])
    out.pop("classes_evaluated", None)
    return {**out, "lr": grid[best][0], "wd": grid[best][1]}
