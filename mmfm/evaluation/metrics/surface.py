"""Boundary metrics through MONAI: HD95 (95th-percentile symmetric Hausdorff distance, mm) and normalised surface
Dice (NSD: the share of both boundaries within ``tolerance_mm`` of the other), per foreground class.

Policy (declared, as for Dice in :mod:`mmfm.evaluation.metrics.segmentation`):
* background is excluded;
* an image whose ground truth lacks a class is ignored for that class (NaN, left out of the mean) whether or not
  the prediction has it, since a boundary distance to nothing is undefined (false positives there show in Dice of
  other images and in the foreground Dice);
* a class present in the ground truth but absent from the prediction gets the worst values: NSD 0 and HD95 equal
  to the image diagonal in mm (MONAI returns infinity, which would make every mean infinite).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance, compute_surface_dice
from monai.networks.utils import one_hot


def surface_rows(pred: torch.Tensor, target: torch.Tensor, num_classes: int, spacing: Sequence[float] | None = None,
                 tolerance_mm: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """pred, target: (B, 1, *s) label maps -> (HD95, NSD), each (B, K-1) with NaN where the class is absent from
    the ground truth."""
    nd = pred.ndim - 2
    sp = [float(v) for v in (spacing or [1.0] * nd)]
    p, t = one_hot(pred.long(), num_classes), one_hot(target.long(), num_classes)
    import warnings

    with warnings.catch_warnings():   # MONAI warns for every empty prediction or ground truth; the policy handles it
        warnings.simplefilter("ignore")
        hd = compute_hausdorff_distance(p, t, include_background=False, percentile=95, spacing=sp).float()
        nsd = compute_surface_dice(p, t, [float(tolerance_mm)] * (num_classes - 1), include_background=False,
                                   spacing=sp).float()
    diagonal = float(np.sqrt(sum((s * n) ** 2 for s, n in zip(sp, pred.shape[2:]))))
    present = t[:, 1:].flatten(2).any(-1)               # (B, K-1)
    predicted = p[:, 1:].flatten(2).any(-1)
    hd = torch.where(present & ~predicted, torch.full_like(hd, diagonal), hd)
    nsd = torch.where(present & ~predicted, torch.zeros_like(nsd), nsd)
    nan = torch.full_like(hd, float("nan"))
    return torch.where(present, hd, nan), torch.where(present, nsd, nan)
