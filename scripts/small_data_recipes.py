"""Five labelled volumes or fewer: train a 3D segmenter, or draw one box? Both on the same held-out cases.

    python scripts/small_data_recipes.py [--out runs/small_data] [--seeds 0 1 2] [--steps 200]
                                         [--methods trained prompted] [--folds lits117 tsct ...]

The situation of issue 32: a researcher with a handful of labelled volumes trains on all but one and tests on the
one left out, rotating. Every distinct liver-labelled volume that ships offline is a case (4, so each fold trains
on 3 and tests on 1):

* ``lits117``: LiTS case 117 (liver-ct-segmentation-package), CT 128^3 cropped around the liver, MANUAL liver
  (+ tumour, merged into liver here); the MRC file records no voxel size, read as 1 mm (as mmfm reads it);
* ``tsct``: TotalSegmentator 2.18.0's ``example_ct`` (3 mm, 122x101x112) with ``example_seg_fast_force_split``;
* ``tsctdicom``: its DICOM CT series ``example_ct_dicom`` (512x512x20, 0.98x0.98x2 mm) with ``example_seg_dicom``;
* ``tsmr``: its MR ``example_mr_sm`` (3 mm, 117x91x20) with ``example_seg_mr``.

The TotalSegmentator label maps are its own model's outputs kept as regression references: SILVER labels, not
manual. ``example_ct_sm`` is a 30-slice crop of ``example_ct`` and is not used (one scan counted twice). Liver is
TotalSegmentator id 5 (CT and MR) and LiTS values 1 (liver) + 2 (tumour inside the liver).

Methods, both scored with one function on each held-out case's own grid (Dice; HD95 in mm, MONAI):

* ``trained``: ``mmfm train configs/small_data/liver_3d.yaml`` on the other cases (BasicUNet, 3 mm, 32^3 patches
  half on the liver, Dice+CE, augmentation, ``--steps`` steps, seeds ``--seeds``), then ``mmfm predict`` on the
  held-out image (sliding window, mask back on the input's grid);
* ``prompted``: ``mmfm segment`` with LiteMedSAM and ONE box: the reference liver's bounding box on the axial slice
  where the liver is largest, 3 voxels wider on each side (what a user draws), propagated through the volume.
  No training, so no seeds.

Resumable: a finished run or prediction is reused, an interrupted ``mmfm train`` resumes from its checkpoint.
Results: ``OUT/results.json`` and ``docs/results/small_data.json`` (one record per case, method, seed and metric),
then the table in docs/user_data.md (scripts/doc_tables.py). Keep it on few cores: OMP_NUM_THREADS=1 nice ...
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_3d_totalsegmentator import ROOT, fetch_reference, labelled_case  # noqa: E402

CONFIG = "configs/small_data/liver_3d.yaml"
LIVER = {5: "liver"}                  # TotalSegmentator v2 id, CT and MR
TS_CASES = {"tsct": ("example_ct.nii.gz", "example_seg_fast_force_split.nii.gz", "CT"),
            "tsctdicom": ("example_ct_dicom", "example_seg_dicom.nii.gz", "CT"),
            "tsmr": ("example_mr_sm.nii.gz", "example_seg_mr.nii.gz", "MR")}
CASES = ["lits117", *TS_CASES]
MODALITY = {"lits117": "CT", **{c: v[2] for c, v in TS_CASES.items()}}
LABELS = {"lits117": "manual (LiTS)", **{c: "silver (TotalSegmentator output)" for c in TS_CASES}}
BOX_MARGIN = 3                        # voxels added on each side of the reference box (a user's box is not tight)


def build_cases(out: Path) -> Path:
    """``OUT/data``: imagesTr/<case>.nii.gz (scanner units) and labelsTr/<case>.nii.gz (0 background, 1 liver)."""
    from mmfm.data.io.mrc import read_mrc
    from mmfm.data.sources.fetch import mmfm_home
    from mmfm.data.sources.mini import lits_files

    data = out / "data"
    if (data / "done").exists():
        return data
    for sub in ("imagesTr", "labelsTr"):
        (data / sub).mkdir(parents=True, exist_ok=True)
    img_path, lab_path = lits_files(mmfm_home() / "sources")
    img, lab = read_mrc(img_path, "CT"), read_mrc(lab_path, "CT")
    cases = {"lits117": (img.array[0].astype(np.float32), (lab.array[0] > 0).astype(np.uint8), img.affine)}
    ref = fetch_reference()
    for case, (image, seg, _) in TS_CASES.items():
        cases[case] = labelled_case(ref, image, seg, LIVER)
    for case, (image, mask, affine) in cases.items():
        nib.save(nib.Nifti1Image(image, affine), data / "imagesTr" / f"{case}.nii.gz")
        nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), data / "labelsTr" / f"{case}.nii.gz")
        print(f"{case}: {image.shape}, liver {int(mask.sum())} voxels")
    (data / "done").write_text("")
    return data


def score(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]) -> dict[str, float | None]:
    """Dice and HD95 (mm) of two binary volumes on one grid (MONAI); HD95 None when the prediction is empty."""
    import torch
    from monai.metrics import compute_dice, compute_hausdorff_distance

    p = torch.from_numpy(pred.astype(bool))[None, None].float()
    t = torch.from_numpy(ref.astype(bool))[None, None].float()
    onehot = lambda x: torch.cat([1 - x, x], dim=1)    # noqa: E731
    d = float(compute_dice(onehot(p), onehot(t), include_background=False)[0, 0])
    h = None
    if pred.any():
        h = float(compute_hausdorff_distance(onehot(p), onehot(t), include_background=False, percentile=95,
                                             spacing=list(spacing))[0, 0])
    return {"dice_liver": round(d, 4), "hd95_liver_mm": None if h is None else round(h, 2),
            "pred_ml": round(float(pred.astype(bool).sum() * np.prod(spacing)) / 1000, 2),
            "true_ml": round(float(ref.astype(bool).sum() * np.prod(spacing)) / 1000, 2)}


def mmfm(*args: str) -> None:
    r = subprocess.run([sys.executable, "-m", "mmfm.cli.main", *args], cwd=ROOT)
    if r.returncode:
        raise RuntimeError(f"mmfm {' '.join(args[:2])} failed ({r.returncode})")


def reference(data: Path, case: str) -> tuple[np.ndarray, tuple[float, ...]]:
    ref = nib.load(data / "labelsTr" / f"{case}.nii.gz")
    return np.asarray(ref.dataobj) > 0, tuple(float(z) for z in ref.header.get_zooms()[:3])


def trained(data: Path, out: Path, held: str, seed: int, steps: int) -> dict:
    split = out / f"split_{held}.json"
    split.write_text(json.dumps({"train": [c for c in CASES if c != held], "val": [], "test": [held]}))
    run = out / f"trained_{held}_{steps}steps_s{seed}"
    if not (run / "results.json").exists():
        mmfm("train", CONFIG, f"data.root={data}", f"data.splits_file={split}", f"data.cache={out / 'cache'}",
             f"train.max_steps={steps}", f"train.ckpt_every={max(1, steps // 3)}", f"train.seed={seed}", f"out={run}")
    pred_dir = run / "predict"
    mask = pred_dir / f"{held}_seg.nii.gz"
    if not mask.exists():
        mmfm("predict", str(run), str(data / "imagesTr" / f"{held}.nii.gz"), "--out", str(pred_dir), "--overwrite")
    ref, spacing = reference(data, held)
    return score(np.asarray(nib.load(mask).dataobj) == 1, ref, spacing)


def one_box(ref: np.ndarray) -> tuple[int, list[int]]:
    """(axial slice, box x0 y0 x1 y1) -- the slice where the reference is largest; for axis 2 a box's x is the
    first voxel index (i), y the second (j) (``mmfm segment``'s convention)."""
    k = int(ref.sum(axis=(0, 1)).argmax())
    ii, jj = np.nonzero(ref[:, :, k])
    n_i, n_j = ref.shape[:2]
    return k, [max(0, int(ii.min()) - BOX_MARGIN), max(0, int(jj.min()) - BOX_MARGIN),
               min(n_i - 1, int(ii.max()) + BOX_MARGIN), min(n_j - 1, int(jj.max()) + BOX_MARGIN)]


def prompted(data: Path, out: Path, held: str) -> dict:
    ref, spacing = reference(data, held)
    k, box = one_box(ref)
    mask = out / "prompted" / f"{held}.nii.gz"
    mask.parent.mkdir(parents=True, exist_ok=True)
    if not mask.exists():
        mmfm("segment", str(data / "imagesTr" / f"{held}.nii.gz"), "--box", *map(str, box), "--slice", str(k),
             "--modality", MODALITY[held], "--out", str(mask), "--overwrite", "--quiet")
    return {**score(np.asarray(nib.load(mask).dataobj) > 0, ref, spacing), "slice": k, "box": box}


def records(held: str, method: str, seed: int, m: dict, extra: dict) -> list[dict]:
    base = {"task": "segmentation", "dataset": f"small-data liver (held out: {held}; {LABELS[held]})",
            "split": "test", "method": method, "seed": seed, "label_fraction": 1.0, "case": held,
            "modality": MODALITY[held], **extra}
    out = [{**base, "metric": "dice_liver", "value": m["dice_liver"]}]
    if m["hd95_liver_mm"] is not None:
        out.append({**base, "metric": "hd95_liver_mm", "value": m["hd95_liver_mm"]})
    out.append({**base, "metric": "empty_prediction", "value": float(m["pred_ml"] == 0)})
    return [{**r, "pred_ml": m["pred_ml"], "true_ml": m["true_ml"]} for r in out]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/small_data")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=200, help="training steps per fold and seed")
    ap.add_argument("--methods", nargs="+", default=["prompted", "trained"], choices=["prompted", "trained"])
    ap.add_argument("--folds", nargs="+", default=CASES, choices=CASES, help="held-out cases to run")
    ap.add_argument("--no-publish", action="store_true", help="do not write docs/results/small_data.json")
    ap.add_argument("--collect", action="store_true", help="run nothing: publish the finished scores in OUT")
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    out = (ROOT / a.out).resolve()
    data = build_cases(out)
    scores = out / "scores"                # one file per finished (case, method, seed): the script resumes from them
    scores.mkdir(exist_ok=True)
    method_name = {"trained": f"trained: basicunet-3mm-patch32 ({a.steps} steps)",
                   "prompted": "prompted: litemedsam one box"}
    for held in ([] if a.collect else a.folds):
        for method in a.methods:
            for seed in (a.seeds if method == "trained" else [0]):
                done = scores / f"{held}_{method}_{a.steps if method == 'trained' else 0}_s{seed}.json"
                if done.exists():
                    continue
                m = (trained(data, out, held, seed, a.steps) if method == "trained" else prompted(data, out, held))
                extra = {k: m.pop(k) for k in ("slice", "box") if k in m}
                print(f"{held} {method} seed {seed}: {m}", flush=True)
                done.write_text(json.dumps(records(held, method_name[method], seed, m, extra), indent=1))
    recs = [r for f in sorted(scores.glob("*.json")) for r in json.loads(f.read_text())]
    if not a.no_publish:
        publish(recs, out)


def publish(recs: list[dict], out: Path) -> None:
    """OUT/results.json and docs/results/small_data.json, then this study's table only (doc_tables write small-data)."""
    from mmfm.workflows.provenance import provenance

    here = provenance()
    recs = [r if r.get("provenance") else {**r, "provenance": here} for r in recs]
    for dst in (out / "results.json", ROOT / "docs" / "results" / "small_data.json"):
        dst.write_text(json.dumps(recs, indent=1))
    print(f"{len(recs)} records -> docs/results/small_data.json")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "doc_tables.py"), "write", "small-data"], check=True)


if __name__ == "__main__":
    from mmfm.cli.logs import setup as show_progress

    show_progress()   # the library's log lines (progress, decisions), as the mmfm command shows them
    main()
