"""Claims stated from results: the one sentence a report leads with, computed from the records it summarises."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np

from mmfm.evaluation.results import ResultRecord


def pretraining_headline(records: Iterable[ResultRecord], fractions: Iterable[float] = (0.01, 0.1),
                         metric: str = "balanced_accuracy", task: str = "classification/linear") -> str:
    """For each label fraction: the best pretrained starting point (highest mean over seeds) against the best random
    initialisation, mean ± sample sd (n seeds), the difference in points and whether it lies outside one sd of
    both. Random baselines are the methods named ``*-random``; every other method is a pretrained start."""
    by: dict[tuple[str, float], list[float]] = defaultdict(list)
    for r in records:
        if r.metric == metric and r.task == task:
            by[(r.method, r.label_fraction)].append(r.value)
    parts = []
    for f in fractions:
        arms = {m: np.asarray(v) for (m, fr), v in by.items() if fr == f}
        pre = {m: v for m, v in arms.items() if not m.endswith("-random")}
        rnd = {m: v for m, v in arms.items() if m.endswith("-random")}
        if not pre or not rnd:
            continue
        best = max(pre, key=lambda m: pre[m].mean())
        base = max(rnd, key=lambda m: rnd[m].mean())
        a, b = pre[best], rnd[base]
        sd_a, sd_b = (float(x.std(ddof=1)) if len(x) > 1 else 0.0 for x in (a, b))
        d = 100 * (a.mean() - b.mean())
        apart = abs(a.mean() - b.mean()) > max(sd_a, sd_b)
        parts.append(f"at {f:.0%} of the labels {best} reaches {a.mean():.3f} ± {sd_a:.3f} against "
                     f"{b.mean():.3f} ± {sd_b:.3f} for {base} ({d:+.1f} points, "
                     f"{'outside' if apart else 'within'} one sd; n = {len(a)} and {len(b)})")
    if not parts:
        return "No pretrained-vs-random comparison was recorded."
    return ("Linear-probe " + metric.replace("_", " ") + " on the test split: " + "; ".join(parts) + ".")
