"""Dice per class through MONAI's ``DiceMetric``.

Policy: background (class 0) is excluded; an image whose ground truth lacks a class is ignored for that class
(``ignore_empty=True``), so the mean is over images where the structure exists. A class absent from every image
gets NaN and is reported as missing.
"""

from __future__ import annotations

import torch
from monai.metrics import DiceMetric
from monai.networks.utils import one_hot


def dice_rows(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, K-1) Dice of each image and foreground class; NaN where the ground truth lacks the class."""
    metric = DiceMetric(include_background=False, reduction="none", ignore_empty=True)
    return metric(one_hot(pred.long(), num_classes), one_hot(target.long(), num_classes))


def reduce_rows(rows: torch.Tensor) -> dict[int, float]:
    values = rows.nanmean(dim=0)  # MONAI's own reduction would turn an all-NaN class into 0
    return {c + 1: float(v) for c, v in enumerate(values)}


def dice_per_class(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> dict[int, float]:
    """pred, target: (B, 1, *spatial) label maps -> {class: mean Dice}."""
    return reduce_rows(dice_rows(pred, target, num_classes))
