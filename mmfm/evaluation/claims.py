"""Claims stated from results: the one sentence a report leads with, computed from the records it summarises."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np

from mmfm.evaluation.results import ResultRecord


def _mean_sd(x: np.ndarray) -> tuple[float, float]:
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0


def pretraining_headline(records: Iterable[ResultRecord], fractions: Iterable[float] = (0.01, 0.1),
                         metric: str = "balanced_accuracy", task: str = "classification/linear") -> str:
    """For each label fraction: the pretrained starting point chosen on the VALIDATION split (highest mean over
    seeds; the test split is never used to choose) against the random initialisation chosen the same way, both
    scored on test: mean ± sample sd (n seeds), the difference in points, whether it lies outside one sd of both,
    and the per-seed paired difference where the arms share seeds (seed s draws the same labelled subset for
    both). Random baselines are the methods named ``*-random``; every other method is a pretrained start. Records
    without a validation split: the arms are chosen by their test mean, and the sentence says so."""
    by: dict[tuple[str, str, float], dict[int, float]] = defaultdict(dict)
    for r in records:
        if r.metric == metric and r.task == task and r.split in ("val", "test"):
            by[(r.split, r.method, r.label_fraction)][r.seed] = r.value
    parts, chosen_on = [], set()
    for f in fractions:
        test = {m: v for (s, m, fr), v in by.items() if s == "test" and fr == f}
        val = {m: v for (s, m, fr), v in by.items() if s == "val" and fr == f and m in test}
        pre = [m for m in test if not m.endswith("-random")]
        rnd = [m for m in test if m.endswith("-random")]
        if not pre or not rnd:
            continue
        split = "val" if all(m in val for m in pre + rnd) else "test"
        chosen_on.add(split)
        score = val if split == "val" else test
        best, base = (max(sorted(ms), key=lambda m: np.mean(list(score[m].values()))) for ms in (pre, rnd))
        (ma, sd_a), (mb, sd_b) = (_mean_sd(np.asarray(list(test[m].values()))) for m in (best, base))
        apart = abs(ma - mb) > max(sd_a, sd_b)
        shared = sorted(set(test[best]) & set(test[base]))
        paired = ""
        if len(shared) > 1:
            pm, ps = _mean_sd(np.asarray([test[best][s] - test[base][s] for s in shared]))
            paired = f"; paired by seed {100 * pm:+.1f} ± {100 * ps:.1f}"
        parts.append(f"at {f:.0%} of the labels {best} reaches {ma:.3f} ± {sd_a:.3f} against {mb:.3f} ± {sd_b:.3f} "
                     f"for {base} ({100 * (ma - mb):+.1f} points, {'outside' if apart else 'within'} one sd; "
                     f"n = {len(test[best])} and {len(test[base])}{paired})")
    if not parts:
        return "No pretrained-vs-random comparison was recorded."
    how = ("each arm chosen on the validation split" if chosen_on == {"val"} else
           "arms chosen by their test mean (no validation records), so the gap is optimistic" if chosen_on == {"test"}
           else "arms chosen on validation where it was recorded, else by their test mean")
    return f"Linear-probe {metric.replace('_', ' ')} on the test split ({how}): " + "; ".join(parts) + "."
