"""Run a trained task over a dataset and compute its metrics."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader

from mmfm.evaluation.metrics import classification_metrics, dice_per_class


@torch.no_grad()
def evaluate(model: Any, dataset: torch.utils.data.Dataset, task: str, batch_size: int = 64,
             class_names: list[str] | None = None) -> dict[str, float]:
    """Metrics of ``model`` (a task module with ``predict``) on ``dataset``; keys name the metric."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    preds, targets = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        preds.append(model.predict(batch["image"].to(device)).cpu())
        targets.append(batch["label" if task == "classification" else "mask"])
    model.train(was_training)
    p, t = torch.cat(preds), torch.cat(targets)
    if task == "classification":
        return classification_metrics(p, t)
    dice = dice_per_class(p, t, model.num_classes)
    names = class_names or [str(c) for c in range(model.num_classes)]
    out = {f"dice_{names[c]}": v for c, v in dice.items()}
    if model.num_classes > 2:  # the whole foreground as one structure (e.g. liver including tumour)
        whole = dice_per_class((p > 0).long(), (t > 0).long(), 2)
        out["dice_foreground"] = whole[1]
    return out
