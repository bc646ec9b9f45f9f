"""The data card of a user's dataset (a folder or a catalog dataset at ``data.root``), as ``mini`` has one:
counts per split, modality, format and dimensionality, label balance, patients, the spacing range, and every file
that was skipped with the reason. File names are shown as :func:`mmfm.data.catalog.folder.shown_name` shows them
(DICOM names pseudonymised)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from mmfm.data import spec


def user_card(data: Any) -> dict[str, Any]:
    every = spec.all_samples(data)
    recs = every.records
    groups = [r.get("patient") or r.get("case") or str(i) for i, r in enumerate(recs)]
    assign = spec.assign_splits(data, every)
    names = every.class_names
    splits: dict[str, Any] = {}
    for s in spec.SPLITS:
        idx = [i for i, a in enumerate(assign) if a == s]
        c: dict[str, Any] = {"n": len(idx), "patients": len({groups[i] for i in idx}),
                             "by_modality": dict(Counter(recs[i].get("modality", "unknown") for i in idx)),
                             "by_format": dict(Counter(recs[i].get("format", "?") for i in idx)),
                             "by_dims": dict(Counter(f"{recs[i]['spatial_dims']}D" for i in idx
                                                     if "spatial_dims" in recs[i]))}
        if every.labels is not None:
            c["by_label"] = dict(Counter(names[every.labels[i]] if names else every.labels[i] for i in idx))
        c["slices"] = int(sum(recs[i].get("depth", 1) for i in idx if recs[i].get("spatial_dims") == 3))
        splits[s] = c
    spacings = [r["spacing"] for r in recs if r.get("spacing")]
    rng: dict[str, Any] = {}
    for nd in (2, 3):
        sp = np.asarray([v for v in spacings if len(v) == nd], dtype=np.float64)
        if len(sp):
            rng[f"{nd}D"] = {"min": sp.min(0).round(4).tolist(), "max": sp.max(0).round(4).tolist(), "n": len(sp)}
    scan = every.scan
    return {"name": spec.name(data), "dataset": data.dataset, "samples": len(recs), "classes": names,
            "splits": splits, "split_rule": (f"from {Path(data.splits_file).name}" if data.splits_file else
                                             f"by patient (or by image), {spec.SPLITS}, seed {data.split_seed}"),
            "spacing_mm": rng, "skipped": scan.get("skipped", []), "other_files": scan.get("other_files", 0),
            "no_spacing": sum(1 for r in recs if not r.get("spacing"))}


def card_markdown(card: dict[str, Any]) -> str:
    lines = [f"# Data card: {card['name']}", "", f"{card['samples']} images or volumes; split {card['split_rule']}.",
             "", "| split | n | patients | 3D slices | by modality | by format | by dims | by label |",
             "|---|---|---|---|---|---|---|---|"]
    for s, c in card["splits"].items():
        lines.append(f"| {s} | {c['n']} | {c['patients']} | {c['slices']} | {c['by_modality']} | {c['by_format']} | "
                     f"{c['by_dims']} | {c.get('by_label', '-')} |")
    lines += ["", "## Spacing (mm, per axis)", ""]
    for nd, r in card["spacing_mm"].items():
        lines.append(f"- {nd}: min {r['min']}, max {r['max']} ({r['n']} images)")
    if card["no_spacing"]:
        lines.append(f"- {card['no_spacing']} image(s) record no spacing (PNG/JPEG/TIFF, MRC without a voxel size): "
                     "1 mm per voxel is assumed")
    lines += ["", f"## Skipped ({len(card['skipped'])})", ""]
    lines += [f"- {s['file']}: {s['reason']}" for s in card["skipped"]] or ["none"]
    lines += ["", f"{card['other_files']} other file(s) (not images: CSV, JSON, text, detached raw data) were left "
                  "alone."]
    return "\n".join(lines) + "\n"
