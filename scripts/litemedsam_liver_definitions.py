"""Why LiteMedSAM's liver Dice is about 0.9 in one table and about 0.5 in others: the same model, as shipped, on
the same slices (mini's LiTS test slab, which docs/adaptation.md's `as_shipped` row scores), under each definition
the docs use:

* ``liver_class_as_evaluated``: what ``mmfm.evaluation.evaluate`` reports for a box-prompted multi-class model
  (docs/adaptation.md, the text-prompt table): the liver class alone (tumour is its own class) against the
  liver-without-tumour reference; each class prompted by ONE box around all its pixels on the slice; classes
  painted largest first, so the tumour's mask, from a box spanning every lesion, is painted over the liver's;
* ``liver_class_not_painted_over``: the same liver-class box and reference, the tumour not painted over;
* ``whole_liver_own_box``: liver + tumour labels as one structure, prompted by its own tight box;
* ``whole_liver_box_2px``: the same, the box widened by 2 pixels (scripts/real_promptable_lits.py's definition,
  on every slice of the volume).

Per-slice Dice, mean over the test slices. Writes docs/results/litemedsam_liver.json. A few minutes on 2 cores.

    python scripts/litemedsam_liver_definitions.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "results" / "litemedsam_liver.json"
DEFINITIONS = ("liver_class_as_evaluated", "liver_class_not_painted_over", "whole_liver_own_box",
               "whole_liver_box_2px")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


def segment(model: torch.nn.Module, embedding: torch.Tensor, frame: object, structure: np.ndarray,
            margin: float = 0.0) -> np.ndarray:
    """LiteMedSAM's mask for a box around ``structure`` (I, J) on an embedded slice (rows of the image = j)."""
    from mmfm.tasks.promptable import box_of, decode_prompt

    pred, _ = decode_prompt(model, embedding, frame, box_of(structure.T, margin))
    return pred.T


def main() -> None:
    from mmfm.tasks import TASKS
    from mmfm.tasks.promptable import embed_image
    from mmfm.workflows.config import load_config
    from mmfm.workflows.provenance import provenance
    from mmfm.workflows.supervised import build_split

    cfg = load_config(ROOT / "configs" / "promptable_segmentation.yaml", ["data.eval_splits=[test]"])
    ds, _ = build_split(cfg.data, "test", "promptable_segmentation")
    task = TASKS.build_with("promptable_segmentation", {"network": "litemedsam", "prompt": "box"},
                            {"num_classes": 3, "spatial_dims": 2, "in_channels": 1,
                             "class_names": ["background", "liver", "tumour"]}, "task").eval()
    per: dict[str, list[float]] = {d: [] for d in DEFINITIONS}
    with torch.no_grad():
        for i in range(len(ds)):
            item = ds[i]
            mask = item["mask"][0].numpy()                       # (I, J): 0 background, 1 liver, 2 tumour
            liver, tumour, whole = mask == 1, mask == 2, mask >= 1
            if not liver.any():
                continue
            embedding, frame = embed_image(task.model, item["image"].permute(2, 1, 0).numpy())   # rows = j
            liver_pred = segment(task.model, embedding, frame, liver)
            painted = liver_pred.copy()
            if tumour.any() and tumour.sum() <= liver.sum():   # predict(): larger classes first, the tumour on top
                painted &= ~segment(task.model, embedding, frame, tumour)
            per["liver_class_as_evaluated"].append(dice(painted, liver))
            per["liver_class_not_painted_over"].append(dice(liver_pred, liver))
            per["whole_liver_own_box"].append(dice(segment(task.model, embedding, frame, whole), whole))
            per["whole_liver_box_2px"].append(dice(segment(task.model, embedding, frame, whole, 2.0), whole))
            print(i, {k: round(v[-1], 3) for k, v in per.items()}, flush=True)
    prov = provenance()
    base = {"task": "promptable_segmentation/liver_definitions", "dataset": "mini/slices2d (LiTS #117, test slab)",
            "split": "test", "method": "litemedsam-as_shipped", "seed": 0, "label_fraction": 1.0,
            "provenance": prov}
    recs = [{**base, "metric": d, "value": float(np.mean(v))} for d, v in per.items()]
    recs.append({**base, "metric": "slices", "value": len(per[DEFINITIONS[0]])})
    OUT.write_text(json.dumps(recs, indent=1))
    print(f"{len(recs)} records -> {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    from mmfm.cli.logs import setup as show_progress

    show_progress()   # the library's log lines (progress, decisions), as the mmfm command shows them
    sys.exit(main())
