"""Temperature scaling: one scalar T > 0 that divides a classifier's logits, fitted on held-out (validation)
data by minimising the negative log-likelihood. It changes confidence, never the predicted class. A split the
model trained on is refused (:func:`check_held_out`): there its logits are overconfident by construction, and the
temperature would calibrate to memorised labels.

Reference: Guo et al., On Calibration of Modern Neural Networks, ICML 2017 (Sec. 4.2).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from mmfm.data.batches import loader_workers
from mmfm.errors import ConfigError


def check_held_out(split: str | None, train_split: str) -> None:
    """Refuse to fit the temperature on ``split`` when the model trains on it (``train_split`` may be a union,
    ``train+val``); ``split`` empty or None means no calibration and passes."""
    if split and split in train_split.split("+"):
        raise ConfigError(f"calibrate={split}: the model trains on that split (data.train_split={train_split}), so "
                          "a temperature fitted there would fit memorised labels",
                          "set calibrate to a split held out from training, or calibrate= (empty) to turn "
                          "temperature scaling off")


@torch.no_grad()
def collect_logits(model: Any, dataset: torch.utils.data.Dataset, batch_size: int = 64) -> tuple[torch.Tensor,
                                                                                                  torch.Tensor]:
    """(logits (N, K), labels (N,)) of a classification task on ``dataset`` (raw logits, before any temperature)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    zs, ys = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=loader_workers(dataset)):
        present = batch.get("present")
        zs.append(model.logits(batch["image"].to(device),
                               present.to(device) if present is not None else None).float().cpu())
        ys.append(batch["label"].long())
    model.train(was_training)
    return torch.cat(zs), torch.cat(ys)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 200) -> float:
    """The T minimising NLL(softmax(logits / T), labels); optimised over log T (so T stays positive) by L-BFGS,
    from T = 1. Returns 1.0 for an empty set."""
    if len(labels) == 0:
        return 1.0
    logits, labels = logits.detach().double(), labels.long()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    return min(max(t, 1e-2), 1e2)   # a degenerate set (all correct, separable) would push T to 0 or infinity
