"""Linear probe: several logistic-regression heads (a grid of learning rates and weight decays) trained together on
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
                 also: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None) -> dict[str, float]:
    """train/val/test: (features (N, D), labels (N,)). Returns test metrics plus the chosen ``lr`` and ``wd``.

    ``also``: more labelled sets scored by the same chosen head (e.g. ``{"val": the validation samples the head
    was not chosen on}``); their metrics come back under ``"<name>/<metric>"``."""
    g = torch.Generator().manual_seed(seed)
    xtr, ytr = train
    mean, std = xtr.mean(0), xtr.std(0) + 1e-6
    norm = lambda x: (x - mean) / std  # noqa: E731
    grid = list(itertools.product(lrs, wds))
    k, d = len(grid), xtr.shape[1]
    ws = [torch.nn.Parameter(torch.randn(d, num_classes, generator=g) * 0.01) for _ in grid]
    bs = [torch.nn.Parameter(torch.zeros(num_classes)) for _ in grid]
    opt = torch.optim.AdamW([{"params": [ws[i], bs[i]], "lr": lr, "weight_decay": wd}
                             for i, (lr, wd) in enumerate(grid)])   # one parameter group per head
    xn = norm(xtr)
    for _ in range(steps):
        w, b = torch.stack(ws), torch.stack(bs)[:, None]          # (K, D, C), (K, 1, C)
        logits = xn[None] @ w + b                                  # (K, N, C)
        loss = F.cross_entropy(logits.reshape(-1, num_classes), ytr.repeat(k), reduction="none").view(k, -1).mean(1)
        opt.zero_grad()
        loss.sum().backward()                                      # heads are independent: the sum trains each
        opt.step()
    w, b = torch.stack(ws).detach(), torch.stack(bs).detach()[:, None]
    with torch.no_grad():
        val_scores = [classification_metrics((norm(val[0]) @ w[i] + b[i]).softmax(-1), val[1])["balanced_accuracy"]
                      for i in range(k)]
        best = int(torch.tensor(val_scores).argmax())

        def score(x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
            m = classification_metrics((norm(x) @ w[best] + b[best]).softmax(-1), y)
            m.pop("classes_evaluated", None)
            return m

        out = score(*test)
        for name, (x, y) in (also or {}).items():
            out.update({f"{name}/{metric}": v for metric, v in score(x, y).items()})
    return {**out, "lr": grid[best][0], "wd": grid[best][1]}
