"""Accuracy, balanced accuracy, macro AUROC (MONAI's ``compute_roc_auc``), and calibration: expected calibration
error (``ece``, 15 equal-width top-label bins) and Brier score (policy in :mod:`mmfm.evaluation.metrics.calibration`).

Policy: classes absent from the ground truth of the evaluated split are left out of balanced accuracy and of
the macro AUROC (their recall and one-vs-rest AUROC are undefined); ``classes_evaluated`` says which remained.
"""

from __future__ import annotations

import torch
from monai.metrics import compute_roc_auc

from mmfm.evaluation.metrics.calibration import brier_score, expected_calibration_error


def classification_metrics(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """probs: (N, K) class probabilities; labels: (N,) ints."""
    probs, labels = probs.float().cpu(), labels.long().cpu()
    pred = probs.argmax(dim=1)
    present = torch.unique(labels)
    recalls = [(pred[labels == c] == c).float().mean() for c in present]
    out = {"accuracy": float((pred == labels).float().mean()),
           "balanced_accuracy": float(torch.stack(recalls).mean()),
           "classes_evaluated": float(len(present)),
           "ece": expected_calibration_error(probs, labels), "brier": brier_score(probs, labels)}
    if len(present) >= 2:
        onehot = torch.nn.functional.one_hot(labels, probs.shape[1])[:, present]
        p = probs[:, present]
        if p.shape[1] == 2:
            out["auroc"] = float(compute_roc_auc(p[:, 1], onehot[:, 1]))
        else:
            out["auroc"] = float(compute_roc_auc(p, onehot, average="macro"))
    return out
