"""The sentence a run's report opens with: how good is this model, in one line.

Chosen from the run's result records alone: the split (test, else validation, else the first one recorded), the
full-label records, the headline metric of the task (:data:`HEADLINE_METRICS`, in order; else the first metric
that is not a calibration, count or cost figure), the best method on it, its mean over seeds with the spread, and
n, the evaluated samples when the run recorded them (``support``, ``reports``, ``questions``, ...).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, is_dataclass
from typing import Any

from mmfm.evaluation.rounding import format_number

# first match wins: overlap for segmentation, then class-balanced accuracy (mini's classes are imbalanced), report
# and VQA scores, retrieval, landmarks, continual learning
HEADLINE_METRICS = ("dice_foreground", "mean_dice", "dice", "balanced_accuracy", "accuracy", "closed_accuracy",
                    "CE_F1", "ROUGE-L", "t2i_R@1", "i2t_R@1", "R@1", "mAP", "hit@3px", "final_mean", "auroc", "F1",
                    "loss")
COUNTS = ("support", "reports", "questions", "samples", "cases", "n")
NOT_HEADLINES = ("ece", "brier", "temperature", "pixel_ece", "trainable_fraction", "dp_epsilon", "noise_multiplier",
                 "classes_evaluated", "empty_prediction", "distinct_texts", "median_rank")
LOWER_IS_BETTER = ("loss", "final_mean_forgetting", "mean_forgetting")


def _as_dict(r: Any) -> dict[str, Any] | None:
    if is_dataclass(r) and not isinstance(r, type):
        return asdict(r)
    return dict(r) if isinstance(r, Mapping) else None


def _value(r: dict[str, Any]) -> float | None:
    v = r.get("value")
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


def _fraction(r: dict[str, Any]) -> float:
    f = r.get("label_fraction", 1.0)
    return float(f) if isinstance(f, (int, float)) and not isinstance(f, bool) else 1.0


def _metric(records: list[dict[str, Any]]) -> str | None:
    names = [str(r.get("metric")) for r in records]
    for m in HEADLINE_METRICS:
        if m in names:
            return m
    return next((m for m in names if m not in NOT_HEADLINES and m not in COUNTS and not m.endswith("_unscaled")
                 and "chance" not in m), None)


def run_headline(records: Iterable[Any]) -> str | None:
    """One sentence on how good the run's model is, from its result records (``ResultRecord``s or their dicts);
    None when no record holds a number."""
    recs = [d for d in map(_as_dict, records) if d is not None and _value(d) is not None]
    if not recs:
        return None
    splits = list(dict.fromkeys(str(r.get("split")) for r in recs))
    split = next((s for s in ("test", "val") if s in splits), splits[0])
    recs = [r for r in recs if str(r.get("split")) == split]
    top = max(_fraction(r) for r in recs)
    recs = [r for r in recs if _fraction(r) == top]
    metric = _metric(recs)
    if metric is None:
        return None
    by_method: dict[str, list[float]] = {}
    seeds: dict[str, set[str]] = {}
    for r in recs:
        if str(r.get("metric")) == metric:
            by_method.setdefault(str(r.get("method")), []).append(_value(r))  # type: ignore[arg-type]
            seeds.setdefault(str(r.get("method")), set()).add(str(r.get("seed")))
    pick = min if metric in LOWER_IS_BETTER else max
    method = pick(by_method, key=lambda m: sum(by_method[m]) / len(by_method[m]))
    values = by_method[method]
    mean = sum(values) / len(values)
    if len(values) > 1:
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        runs = "seeds" if len(seeds[method]) == len(values) else "runs"
        score = f"{format_number(mean)} ± {format_number(sd, 2)} (mean ± sd over {len(values)} {runs})"
    else:
        score = f"{format_number(mean)} (1 seed)"
    dataset = next(str(r.get("dataset")) for r in recs if str(r.get("method")) == method)
    counts = [_value(r) for r in recs if str(r.get("metric")) in COUNTS and str(r.get("method")) == method]
    n = f", n = {format_number(round(counts[0]))}" if counts else ""
    labels = f" at {top:.0%} of the labels" if top < 1 else ""
    among = f", the best of {len(by_method)} methods" if len(by_method) > 1 else ""
    what = "training loss at the last step" if metric == "loss" else metric
    return f"{method}{among}: {what} {score} on the {split} split of {dataset}{n}{labels}."
