"""Text-prompted vs box-prompted segmentation on real CT (docs/downstream.md, issue "Downstream clinical tasks").

    python scripts/real_text_prompt.py [--out runs/text_prompt] [--seeds 0 1 2] [--steps 400] [--no-litemedsam]

Data: axial slices of the TotalSegmentator reference CT and DICOM CT series (spleen, right kidney, left kidney,
liver, stomach: TotalSegmentator's own outputs, SILVER labels) and of LiTS case 117 (liver and liver tumour, manual
labels), every slice with a labelled structure written as a 2D NIfTI pair (``imagesTr``/``labelsTr``, read by
mmfm's ``MSD`` layout). Held-back slices: per scan, slabs of 6 slices, every fourth slab is test, and the slice on
each side of a test slab is left out (no near-duplicate of a test slice is trained on).

Models, the same SAM-style architecture (vit_mini encoder + SAM prompt encoder and mask decoder, 64 px input,
from scratch) trained the same number of steps on the same slices, per seed:
  * ``text``: the structure's name (frozen MiniLM embedding) is the only prompt; test = every class by name;
  * ``box``: a jittered box around the structure (MedSAM's recipe); test = the reference box of every class present;
plus LiteMedSAM as shipped (box prompts, no training) on the same test slices, as a reference.
Dice per class on test slices where the class is present (MONAI, ignore_empty); for text prompts also the
fraction of test slices *without* the class where something was predicted for it (box prompts cannot be asked
for an absent structure). Results: ``OUT/results.json`` and ``docs/results/text_prompt.json``.

Note on labels: LiTS labels only liver and tumour; its slices also show kidneys and stomach, which the
text-prompted model is then taught to leave empty when asked for them on a LiTS slice (the partial-label problem
the CLIP-Driven Universal Model addresses with per-dataset label masks, which mmfm does not have yet).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from real_3d_totalsegmentator import fetch_reference, labelled_case, publish  # noqa: E402

CLASSES = ["background", "spleen", "right kidney", "left kidney", "liver", "stomach", "liver tumour"]
TS_ORGANS = {1: "spleen", 2: "kidney_right", 3: "kidney_left", 5: "liver", 6: "stomach"}   # TS v2 ids -> 1..5
TS_CASES = {"tsct": ("example_ct_sm.nii.gz", "example_seg.nii.gz"),
            "tsdicom": ("example_ct_dicom", "example_seg_dicom.nii.gz")}
SLAB, EVERY = 6, 4


def slab_split(n: int) -> list[str]:
    """'train' / 'test' / '' (left out) for each of n slices: every fourth slab of 6 is test, 1-slice gaps."""
    out = ["test" if (z // SLAB) % EVERY == EVERY - 1 else "train" for z in range(n)]
    for z in range(n):
        if out[z] == "train" and any(0 <= z + d < n and out[z + d] == "test" for d in (-1, 1)):
            out[z] = ""
    return out


def build(out: Path) -> dict[str, list[str]]:
    from mmfm.data.io.mrc import read_mrc_array
    from mmfm.data.sources.mini import lits_files

    ref = fetch_reference()
    volumes = {}
    for case, (img, seg) in TS_CASES.items():
        image, labels, affine = labelled_case(ref, img, seg, TS_ORGANS)
        volumes[case] = (image, labels, affine)
    img_p, lab_p = lits_files()
    ct, _ = read_mrc_array(img_p)                     # (z, y, x), HU
    lab, _ = read_mrc_array(lab_p)
    lits = np.zeros(lab.shape, np.uint8)
    lits[lab == 1], lits[lab == 2] = 4, 6             # liver, liver tumour
    volumes["lits"] = (np.transpose(ct, (2, 1, 0)).astype(np.float32), np.transpose(lits, (2, 1, 0)), np.eye(4))
    (out / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out / "labelsTr").mkdir(parents=True, exist_ok=True)
    splits: dict[str, list[str]] = {"train": [], "test": []}
    for case, (image, labels, affine) in volumes.items():
        where = slab_split(image.shape[2])
        for z in range(image.shape[2]):
            if not where[z] or not labels[..., z].any():
                continue
            name = f"{case}_{z:03d}"
            nib.save(nib.Nifti1Image(image[..., z], affine), out / "imagesTr" / f"{name}.nii.gz")
            nib.save(nib.Nifti1Image(labels[..., z], affine), out / "labelsTr" / f"{name}.nii.gz")
            splits[where[z]].append(name)
    (out / "splits.json").write_text(json.dumps(splits))
    return splits


def mmfm(*args: str) -> None:
    r = subprocess.run([sys.executable, "-m", "mmfm.cli.main", *args], cwd=ROOT)
    if r.returncode:
        raise SystemExit(f"mmfm {' '.join(args[:2])} failed ({r.returncode})")


def data_args(data: Path) -> list[str]:
    return ["data.dataset=MSD", f"data.root={data}", f"data.splits_file={data / 'splits.json'}",
            "data.options={modality: CT}", "data.size=[128,128]", "data.eval_splits=[test]"]


def absent_rate(run: Path, data: Path) -> dict[str, float]:
    """Text prompts: per class, the fraction of test slices without it where the model predicted it anyway."""
    import torch

    from mmfm.workflows.config import load_config
    from mmfm.workflows.supervised import build_split, load_trained

    model, _ = load_trained(run)
    cfg = load_config(run / "config.yaml", [])
    ds, _ = build_split(cfg.data, "test", "promptable_segmentation")
    hits, totals = np.zeros(len(CLASSES)), np.zeros(len(CLASSES))
    with torch.no_grad():
        for i in range(len(ds)):
            item = ds[i]
            pred = model.predict(item["image"][None])[0, 0]
            present = set(torch.unique(item["mask"]).tolist())
            for c in range(1, len(CLASSES)):
                if c not in present:
                    totals[c] += 1
                    hits[c] += bool((pred == c).any())
    return {f"predicted_when_absent_{CLASSES[c]}": float(hits[c] / totals[c]) for c in range(1, len(CLASSES))
            if totals[c]}


def litemedsam_rows(data: Path) -> dict[str, float]:
    from mmfm.evaluation.evaluate import evaluate
    from mmfm.tasks import TASKS
    from mmfm.workflows.config import load_config
    from mmfm.workflows.supervised import build_split

    cfg = load_config(ROOT / "configs" / "promptable_segmentation.yaml", data_args(data))
    ds, _ = build_split(cfg.data, "test", "promptable_segmentation")
    model = TASKS.build_with("promptable_segmentation", {"network": "litemedsam", "prompt": "box"},
                             {"num_classes": len(CLASSES), "spatial_dims": 2, "in_channels": 1,
                              "class_names": CLASSES}, "task")
    return evaluate(model, ds, "promptable_segmentation", class_names=CLASSES)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/text_prompt")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--no-litemedsam", action="store_true", help="skip the LiteMedSAM reference row")
    a = ap.parse_args()
    out = (ROOT / a.out).resolve()
    splits = build(out / "data")
    print(f"{len(splits['train'])} training and {len(splits['test'])} test slices", flush=True)
    from mmfm.workflows.provenance import provenance

    records = []

    def add(metrics: dict[str, float], method: str, seed: int, prov: dict | None = None) -> None:
        for metric, value in metrics.items():
            if metric != "classes_evaluated":
                records.append({"task": "promptable_segmentation", "dataset": "TotalSegmentator refs + LiTS #117",
                                "split": "test", "method": method, "metric": metric, "value": float(value),
                                "seed": seed, "label_fraction": 1.0, "provenance": prov or provenance()})

    for seed in a.seeds:
        for prompt in ("text", "box"):
            run = out / f"{prompt}_s{seed}"
            mmfm("train", "configs/promptable_segmentation.yaml", *data_args(out / "data"),
                 f"task={{name: promptable_segmentation, network: encoder, prompt: {prompt}, input_size: 64, "
                 f"decoder_dim: 64, num_classes: {len(CLASSES)}, class_names: {json.dumps(CLASSES)}}}",
                 "encoder.name=vit_mini", "encoder.patch_size=4", f"train.max_steps={a.steps}",
                 f"train.ckpt_every={a.steps}", "train.batch_size=8", "optim.lr=0.0005", f"train.seed={seed}",
                 "train.progress=false", f"method=vit_mini-{prompt}-prompt", f"out={run}")
            for r in json.loads((run / "results.json").read_text()):
                add({r["metric"]: r["value"]}, r["method"], seed, r.get("provenance"))
            if prompt == "text":
                add(absent_rate(run, out / "data"), f"vit_mini-{prompt}-prompt", seed, provenance(run))
    if not a.no_litemedsam:
        add(litemedsam_rows(out / "data"), "litemedsam-box-prompt (as shipped)", 0)
    publish(records, out, "text_prompt")


if __name__ == "__main__":
    from mmfm.cli.logs import setup as show_progress

    show_progress()   # the library's log lines (progress, decisions), as the mmfm command shows them
    main()
