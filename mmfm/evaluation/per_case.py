"""Per-case evidence of a segmentation evaluation: one row per evaluated image, written beside results.json as
``cases_<split>.json`` and ``cases_<split>.csv``, and drawn as best/median/worst overlays.

A row holds the case id (its position in the split, ``<split>-NNN``: never a file name, which may identify a
patient), Dice and HD95 per foreground class, the predicted and the true size of each class (mL when the voxel
size is known, else voxels or pixels) and flags: ``empty_prediction`` (no foreground predicted at all) and
``empty_<class>`` (the class is in the reference but not predicted). HD95 of a class the model did not predict is
missing (``None``) with that flag -- the aggregate metric's policy (:mod:`mmfm.evaluation.metrics.surface`) puts
the image diagonal in the mean; a per-case table shows the fact instead of a placeholder distance.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def case_row(split: str, index: int, pred: Any, target: Any, names: Sequence[str], dice: Any, hd95: Any = None,
             spacing: Sequence[float] = ()) -> dict[str, Any]:
    """One case: ``pred``/``target`` (1, 1, *s) label maps, ``dice``/``hd95`` (K-1,) rows (NaN: class absent from
    the reference), ``names`` the K class names (background first)."""
    p, t = np.asarray(pred).reshape(-1), np.asarray(target).reshape(-1)
    nd = np.asarray(pred).ndim - 2
    unit, what = (float(np.prod(spacing)) / (1000.0 if nd == 3 else 1.0), "ml" if nd == 3 else "mm2") \
        if spacing else (1.0, "voxels" if nd == 3 else "pixels")
    row: dict[str, Any] = {"case": f"{split}-{index:03d}", "split": split, "index": index,
                           "empty_prediction": not bool((p > 0).any()), "size_unit": what,
                           "hd95_unit": "mm" if spacing else ("voxels" if nd == 3 else "pixels")}
    for c, name in enumerate(names[1:], start=1):
        n_pred, n_true = int((p == c).sum()), int((t == c).sum())
        d = float(dice[c - 1])
        row[f"dice_{name}"] = None if math.isnan(d) else round(d, 4)
        if hd95 is not None:
            h = float(hd95[c - 1])
            row[f"hd95_{name}"] = None if (math.isnan(h) or (n_true and not n_pred)) else round(h, 3)
        row[f"pred_{name}"] = round(n_pred * unit, 4)
        row[f"true_{name}"] = round(n_true * unit, 4)
        row[f"empty_{name}"] = bool(n_true and not n_pred)
    return row


def write_cases(out: Path, split: str, rows: list[dict[str, Any]]) -> tuple[Path, Path]:
    """``cases_<split>.json`` and ``.csv`` in ``out`` (each written whole, then renamed)."""
    from mmfm.evaluation.results import write_json_atomic

    out.mkdir(parents=True, exist_ok=True)
    js = out / f"cases_{split}.json"
    write_json_atomic(js, rows)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows({k: ("" if r.get(k) is None else r.get(k)) for k in keys} for r in rows)
    tmp = out / f".cases_{split}.csv.partial"
    tmp.write_text(buf.getvalue())
    tmp.replace(out / f"cases_{split}.csv")
    return js, out / f"cases_{split}.csv"


def read_cases(run: Path) -> dict[str, list[dict[str, Any]]]:
    """split -> rows of every ``cases_<split>.json`` in ``run`` (a file that is not a list of rows is skipped)."""
    found = {}
    for path in sorted(run.glob("cases_*.json")):
        try:
            rows = json.loads(path.read_text())
        except (ValueError, OSError):
            continue
        if isinstance(rows, list) and all(isinstance(r, dict) for r in rows):
            found[path.stem[len("cases_"):]] = rows
    return found


def mean_dice(row: dict[str, Any]) -> float | None:
    vals = [v for k, v in row.items() if k.startswith("dice_") and isinstance(v, (int, float))]
    return float(np.mean(vals)) if vals else None


def empty_note(split: str, rows: list[dict[str, Any]]) -> str | None:
    """A plain sentence when the model predicts nothing on some (or every) case of ``split``."""
    empty = [r["case"] for r in rows if r.get("empty_prediction")]
    if not empty:
        return None
    if len(empty) == len(rows):
        return (f"The model predicts NOTHING (no foreground voxel) on any of the {len(rows)} {split} cases: its "
                "Dice is 0 and its HD95 undefined there; the HD95 in the results table is the policy's worst value "
                "(the image diagonal), not a measured distance.")
    return (f"The model predicts nothing on {len(empty)} of {len(rows)} {split} cases ({', '.join(empty[:10])}"
            f"{', ...' if len(empty) > 10 else ''}); their HD95 is missing in the per-case table and counted as "
            "the image diagonal in the results table.")


def picks(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Worst, median and best case by mean foreground Dice (cases without a reference foreground left out)."""
    scored = sorted((d, r["index"], r) for r in rows if (d := mean_dice(r)) is not None)
    if not scored:
        return {}
    return {"worst": scored[0][2], "median": scored[len(scored) // 2][2], "best": scored[-1][2]}


def markdown_tables(cases: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Markdown: per split, the empty-prediction sentence and the per-case table."""
    lines: list[str] = []
    for split, rows in cases.items():
        if not rows:
            continue
        keys = [k for k in rows[0] if k not in ("split", "index", "size_unit", "hd95_unit")]
        lines += [f"## Per-case results ({split}; sizes in {rows[0].get('size_unit', 'voxels')}, HD95 in "
                  f"{rows[0].get('hd95_unit', 'mm')})", ""]
        note = empty_note(split, rows)
        if note:
            lines += [f"**{note}**", ""]
        lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        for r in rows:
            lines.append("| " + " | ".join(_cell(r.get(k)) for k in keys) + " |")
        lines.append("")
    return lines


def _cell(v: Any) -> str:
    if v is None:
        return "missing"
    if isinstance(v, bool):
        return "YES" if v else ""
    return f"{v:g}" if isinstance(v, float) else str(v)
