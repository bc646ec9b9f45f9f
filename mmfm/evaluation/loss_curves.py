"""The training curves of a run (``metrics.jsonl``), each drawn once.

An objective with one loss term logs it twice: as ``loss`` (the total) and under its own name (``contrast_loss``,
``mae_loss``, ...), with the same value at every step. Drawing both put two lines on top of each other and the
legend named the training loss twice; a term whose curve is the total's is left out.
"""

from __future__ import annotations

import math
from typing import Any


def _number(v: Any) -> float | None:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


def loss_series(rows: list[dict[str, Any]], extra: tuple[str, ...] = ()) -> dict[str, list[tuple[float, float]]]:
    """``{name: [(step, value), ...]}`` for ``loss``, every ``*_loss`` term and the ``extra`` keys, from the rows of
    ``metrics.jsonl``; points whose step or value is not a finite number are left out, and a term that repeats the
    total (the same value at every step) is dropped."""
    keys = sorted({k for r in rows for k in r if k == "loss" or k.endswith("_loss") or k in extra})
    series: dict[str, list[tuple[float, float]]] = {}
    for k in keys:
        pts = [(_number(r.get("step")), _number(r.get(k))) for r in rows]
        kept = [(s, v) for s, v in pts if s is not None and v is not None]
        if kept:
            series[k] = kept
    total = series.get("loss")
    if total:
        for k in [k for k in series if k != "loss" and k.endswith("_loss")]:
            if len(series[k]) == len(total) and all(
                    a[0] == b[0] and math.isclose(a[1], b[1], rel_tol=1e-6, abs_tol=1e-9)
                    for a, b in zip(series[k], total)):
                del series[k]
    return series


def draw_losses(ax: Any, series: dict[str, list[tuple[float, float]]]) -> None:
    """One line per series on the matplotlib axes ``ax``, with the step on x and a legend."""
    for name, pts in series.items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name)
    ax.set_xlabel("step")
    ax.legend(fontsize=8)
