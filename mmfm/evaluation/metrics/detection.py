"""Detection metrics, 2D and 3D: mean average precision (MONAI's COCO metric) and FROC (MONAI's FROC).

Policy:

* a prediction is a true positive when its IoU with a not-yet-matched reference box of the same class reaches
  ``iou`` (default 0.1, the usual lesion-detection threshold; 0.5 is also reported for mAP), predictions taken in
  descending score order (greedy, as the LUNA16 / nnDetection evaluations);
* FROC: sensitivity (over all reference boxes) at 1/8, 1/4, 1/2, 1, 2, 4 and 8 false positives per image, and
  their mean (the "FROC score");
* images without reference boxes count (their predictions are false positives); when no image has a reference
  box, sensitivity and mAP are undefined (NaN), never 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from monai.data.box_utils import box_iou

FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    return np.asarray(box_iou(np.asarray(a, np.float32), np.asarray(b, np.float32)))


def match(pred_boxes: np.ndarray, pred_scores: np.ndarray, gt_boxes: np.ndarray, iou: float = 0.1) -> np.ndarray:
    """Whether each prediction (in its given order) is a true positive, matched greedily by descending score."""
    tp = np.zeros(len(pred_boxes), bool)
    if len(gt_boxes) == 0 or len(pred_boxes) == 0:
        return tp
    overlaps = _iou(pred_boxes, gt_boxes)
    taken = np.zeros(len(gt_boxes), bool)
    for p in np.argsort(-np.asarray(pred_scores), kind="stable"):
        cand = np.where(~taken, overlaps[p], -1.0)
        g = int(np.argmax(cand))
        if cand[g] >= iou:
            tp[p], taken[g] = True, True
    return tp


def froc(preds: Sequence[dict[str, np.ndarray]], gts: Sequence[dict[str, np.ndarray]], iou: float = 0.1,
         fp_rates: Sequence[float] = FP_RATES) -> dict[str, float]:
    """Class-agnostic FROC over images: ``{"sensitivity@<r>fp": ..., "froc": mean}``."""
    from monai.metrics import compute_froc_curve_data, compute_froc_score

    tp_probs, fp_probs = [], []
    n_targets = sum(len(g["boxes"]) for g in gts)
    for p, g in zip(preds, gts):
        tp = match(p["boxes"], p["scores"], g["boxes"], iou)
        tp_probs.extend(np.asarray(p["scores"])[tp].tolist())
        fp_probs.extend(np.asarray(p["scores"])[~tp].tolist())
    if n_targets == 0:
        return {**{f"sensitivity@{r:g}fp": float("nan") for r in fp_rates}, "froc": float("nan")}
    if not fp_probs:   # no false positive at any threshold: every true positive counts at every rate
        value = len(tp_probs) / n_targets
        return {**{f"sensitivity@{r:g}fp": value for r in fp_rates}, "froc": value}
    fps, sens = compute_froc_curve_data(np.asarray(fp_probs, float), np.asarray(tp_probs, float), n_targets,
                                        len(gts))
    out = {}
    for r in fp_rates:
        out[f"sensitivity@{r:g}fp"] = float(compute_froc_score(fps, sens, (r,)))
    out["froc"] = float(np.mean([out[f"sensitivity@{r:g}fp"] for r in fp_rates]))
    return out


def mean_ap(preds: Sequence[dict[str, np.ndarray]], gts: Sequence[dict[str, np.ndarray]], class_names: Sequence[str],
            ious: Sequence[float] = (0.1, 0.5)) -> dict[str, float]:
    """mAP at each IoU threshold (MONAI's COCO metric, up to 100 detections per image): ``{"map@0.1": ...}``."""
    from monai.apps.detection.metrics.coco import COCOMetric
    from monai.apps.detection.metrics.matching import matching_batch

    if sum(len(g["boxes"]) for g in gts) == 0:
        return {f"map@{t:g}": float("nan") for t in ious}
    metric = COCOMetric(classes=list(class_names), iou_list=list(ious), iou_range=(ious[0], ious[0], 1.0),
                        max_detection=(100,), per_class=False, verbose=False)
    results = matching_batch(_iou, list(ious) if len(ious) > 1 else [ious[0]],
                             [np.asarray(p["boxes"], np.float32) for p in preds],
                             [np.asarray(p["labels"]) for p in preds], [np.asarray(p["scores"]) for p in preds],
                             [np.asarray(g["boxes"], np.float32) for g in gts], [np.asarray(g["labels"]) for g in gts],
                             max_detections=100)
    scores = metric(results)[0]
    out = {}
    for t in ious:   # with per_class=False these are already the mean over classes
        out[f"map@{t:g}"] = float(scores.get(f"AP_IoU_{t:.2f}_MaxDet_100", float("nan")))
    return out
