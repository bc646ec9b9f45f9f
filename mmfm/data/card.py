"""The data card of a user's dataset (a folder or a catalog dataset at ``data.root``), as ``mini`` has one:
counts per split, modality, format and dimensionality, label balance, patients, the cases of each split, the
spacing range (from the headers), every file that was skipped with the reason, and for masks: their formats, the
voxels of each label value, the empty ones and those on another grid than their image.
File names are shown as :func:`mmfm.data.catalog.folder.shown_name` shows them
(DICOM names pseudonymised)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from mmfm.data import catalog_data
from mmfm.data.catalog.masks import check_mask, image_path
from mmfm.errors import InputFileError


def _with_header(r: dict[str, Any]) -> dict[str, Any]:
    """A record with its header facts (format, dims, spacing) where its layout did not read them at load time."""
    if "spatial_dims" in r and "format" in r:
        return r
    from mmfm.data.io import image_format, image_info

    p = image_path(r)
    try:
        return {**r, "format": r.get("format") or image_format(p), **image_info(p, r.get("series_uid"))}
    except InputFileError:
        return r


def _format(p: Path) -> str:
    from mmfm.data.io import image_format

    try:
        return image_format(p)
    except InputFileError:
        return "?"


def _case_name(r: dict[str, Any], i: int) -> str:
    return str(r.get("name") or r.get("case") or i)


def mask_summary(recs: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """Masks of the cases: formats, voxels per label value over all cases, the empty ones, those resampled onto
    their image's grid and those that cannot be (by case name); unreadable masks with the reason."""
    voxels: Counter[int] = Counter()
    out: dict[str, Any] = {"n": 0, "by_format": {}, "voxels_per_label": {}, "empty": [], "resampled": [],
                           "off_grid": [], "unreadable": []}
    formats: Counter[str] = Counter()
    for r, name in zip(recs, names):
        if r.get("mask") is None:
            continue
        out["n"] += 1
        formats[str(r.get("mask_format") or _format(Path(r["mask"])))] += 1
        try:
            m = check_mask(r)
        except InputFileError as e:
            out["unreadable"].append({"case": name, "reason": e.what})
            continue
        voxels.update(m["voxels"])
        if not any(v for k, v in m["voxels"].items() if k != 0):
            out["empty"].append(name)
        if m["grid"] == "other":
            out["resampled"].append(name)
        elif m["grid"] in ("apart", "dims"):
            out["off_grid"].append(name)
    out["by_format"] = dict(formats)
    out["voxels_per_label"] = {str(k): v for k, v in sorted(voxels.items())}
    return out


def user_card(data: Any) -> dict[str, Any]:
    every = catalog_data.all_samples(data)
    recs = [_with_header(r) for r in every.records]
    case_names = [_case_name(r, i) for i, r in enumerate(recs)]
    groups = [r.get("patient") or r.get("case") or str(i) for i, r in enumerate(recs)]
    assign = catalog_data.assign_splits(data, every)
    names = every.class_names
    splits: dict[str, Any] = {}
    for s in catalog_data.SPLITS:
        idx = [i for i, a in enumerate(assign) if a == s]
        c: dict[str, Any] = {"n": len(idx), "patients": len({groups[i] for i in idx}),
                             "by_modality": dict(Counter(recs[i].get("modality", "unknown") for i in idx)),
                             "by_format": dict(Counter(recs[i].get("format", "?") for i in idx)),
                             "by_dims": dict(Counter(f"{recs[i]['spatial_dims']}D" for i in idx
                                                     if "spatial_dims" in recs[i]))}
        if every.labels is not None:
            c["by_label"] = dict(Counter(names[every.labels[i]] if names else every.labels[i] for i in idx))
        c["slices"] = int(sum(recs[i].get("depth", 1) for i in idx if recs[i].get("spatial_dims") == 3))
        c["cases"] = [case_names[i] for i in idx]
        splits[s] = c
    spacings = [r["spacing"] for r in recs if r.get("spacing")]
    rng: dict[str, Any] = {}
    for nd in (2, 3):
        sp = np.asarray([v for v in spacings if len(v) == nd], dtype=np.float64)
        if len(sp):
            rng[f"{nd}D"] = {"min": sp.min(0).round(4).tolist(), "max": sp.max(0).round(4).tolist(), "n": len(sp)}
    scan = every.scan
    return {"name": data.dataset, "dataset": data.dataset, "samples": len(recs), "classes": names,
            "splits": splits, "split_rule": (f"from {Path(data.splits_file).name}" if data.splits_file else
                                             f"by patient (or by image), {catalog_data.SPLITS}, "
                                             f"seed {data.split_seed}"),
            "spacing_mm": rng, "skipped": scan.get("skipped", []), "other_files": scan.get("other_files", 0),
            "no_spacing": sum(1 for r in recs if not r.get("spacing")),
            "no_spacing_formats": dict(Counter(r.get("format", "?") for r in recs if not r.get("spacing"))),
            "unmasked": scan.get("unmasked", 0),
            **({"masks": mask_summary(recs, case_names)} if any(r.get("mask") is not None for r in recs) else {})}


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
        lines.append(f"- {card['no_spacing']} image(s) record no spacing ({card.get('no_spacing_formats', {})}): "
                     "1 mm per voxel is assumed")
    lines += ["", "## Cases per split", ""]
    lines += [f"- {s}: {', '.join(c['cases']) or 'none'}" for s, c in card["splits"].items() if "cases" in c]
    masks = card.get("masks")
    if masks:
        lines += ["", f"## Masks ({masks['n']}, label maps)", "", f"- formats: {masks['by_format']}",
                  f"- voxels per label value: {masks['voxels_per_label']}",
                  f"- empty (background only): {', '.join(masks['empty']) or 'none'}",
                  f"- on another grid than their image, resampled nearest-neighbour onto it: "
                  f"{', '.join(masks['resampled']) or 'none'}",
                  f"- apart from their image in space (cannot be used): {', '.join(masks['off_grid']) or 'none'}"]
        lines += [f"- unreadable: {u['case']}: {u['reason']}" for u in masks["unreadable"]]
        if card.get("unmasked"):
            lines.append(f"- {card['unmasked']} image(s) without a mask are left out")
    lines += ["", f"## Skipped ({len(card['skipped'])})", ""]
    lines += [f"- {s['file']}: {s['reason']}" for s in card["skipped"]] or ["none"]
    lines += ["", f"{card['other_files']} other file(s) (not images: CSV, JSON, text, detached raw data) were left "
                  "alone."]
    return "\n".join(lines) + "\n"
