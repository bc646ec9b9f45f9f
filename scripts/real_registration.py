"""Registration on real scans, through `mmfm register`'s own code path (register_files):

A. Known transforms: Colin27 (mricron-data's ch2bet, real T1 MRI, brain-extracted) moved by a known world transform
   (shift; rotation; scale + shift) and stored on another grid (1.5 mm, i axis reversed); affine registration
   must recover it. Error: distance (mm) between where the truth and the result send brain points.
B. Colin27 -> MNI152 (nilearn's ICBM 2009 template, 2 mm): brain-mask Dice before/after, affine and deformable.
C. TotalSegmentator CT (NIfTI, one patient) -> its DICOM CT (another patient), LNCC; and its MR -> the CT, mutual
   information: Dice of spleen, kidneys and liver labels before/after, folding fraction.

Writes docs/results/registration.json. About 20 minutes on 2 CPU cores.

    python scripts/real_registration.py [--out docs/results/registration.json] [--iterations 100]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.ndimage import affine_transform

sys.path.insert(0, str(Path(__file__).parent))
from real_3d_totalsegmentator import ORGANS, fetch_reference  # noqa: E402

from mmfm.workflows.register import register_files  # noqa: E402


def colin() -> Path:
    from mmfm.data.sources.fetch import mmfm_home

    found = sorted((mmfm_home() / "sources" / "colin27").rglob("ch2bet.nii.gz"))
    if not found:
        raise SystemExit("Colin27 not found: apt-get download mricron-data, unpack it under "
                         "$MMFM_HOME/sources/colin27 (see ../shared/reference/registry-data-and-weights.md, row 5)")
    return found[0]


def transform(shift=(0, 0, 0), rot_deg=(0, 0, 0), scale=1.0) -> np.ndarray:
    ax, ay, az = np.deg2rad(rot_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    t = np.eye(4)
    t[:3, :3] = rz @ ry @ rx * scale
    t[:3, 3] = shift
    return t


def known_transforms(work: Path, iterations: int) -> list[dict]:
    src = nib.load(colin())
    data = np.asarray(src.dataobj, np.float32)
    a = src.affine
    rows = []
    mask = np.argwhere(data > 0)[::997]
    pts = mask @ a[:3, :3].T + a[:3, 3]                           # brain points, world mm
    for name, t in (("shift (8, -6, 5) mm", transform((8, -6, 5))),
                    ("rotation 10 deg (z) + 5 deg (x)", transform(rot_deg=(5, 0, 10))),
                    ("scale 1.08 + shift (4, 4, -3) mm", transform((4, 4, -3), scale=1.08))):
        b = np.diag([-1.5, 1.5, 1.5, 1.0])                        # another grid: 1.5 mm, i reversed
        b[:3, 3] = a[:3, 3] + [a[0, 0] * (data.shape[0] - 1), 0, 0]
        shape = tuple(int(n / 1.5) for n in data.shape)
        m = np.linalg.inv(a) @ np.linalg.inv(t) @ b
        moved = affine_transform(data, m[:3, :3], m[:3, 3], output_shape=shape, order=1)
        nib.save(nib.Nifti1Image(moved.astype(np.float32), b), work / "moved.nii.gz")
        rec = register_files(colin(), work / "moved.nii.gz", work / f"known{len(rows)}", mode="affine",
                             fixed_modality="MR", moving_modality="MR", iterations=iterations, progress=False)
        found = np.array(json.loads((work / f"known{len(rows)}" / "affine.json").read_text())["matrix"])
        err = np.linalg.norm((pts @ found[:3, :3].T + found[:3, 3]) - (pts @ t[:3, :3].T + t[:3, 3]), axis=1)
        rows.append({"transform": name, "error_mm_mean": float(err.mean()), "error_mm_max": float(err.max()),
                     "seconds": rec["seconds"]})
        print(rows[-1], flush=True)
    return rows


def mni(work: Path, iterations: int) -> list[dict]:
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=2)
    brain = datasets.load_mni152_brain_mask(resolution=2)
    nib.save(nib.Nifti1Image(np.asarray(t1.dataobj, np.float32) * (np.asarray(brain.dataobj) > 0), t1.affine),
             work / "mni.nii.gz")
    nib.save(nib.Nifti1Image((np.asarray(brain.dataobj) > 0).astype(np.int16), brain.affine), work / "mni_mask.nii.gz")
    c = nib.load(colin())
    nib.save(nib.Nifti1Image((np.asarray(c.dataobj) > 0).astype(np.int16), c.affine), work / "colin_mask.nii.gz")
    rows = []
    for mode in ("affine", "deformable"):
        rec = register_files(work / "mni.nii.gz", colin(), work / f"mni_{mode}", mode=mode, fixed_modality="MR",
                             moving_modality="MR", moving_labels=str(work / "colin_mask.nii.gz"),
                             fixed_labels=str(work / "mni_mask.nii.gz"), iterations=iterations, progress=False)
        rows.append({"pair": "Colin27 -> MNI152 (brain mask)", "mode": mode, "similarity": "lncc",
                     "dice_before": rec["dice"]["mean_before"], "dice_after": rec["dice"]["mean_after"],
                     "folding_fraction": rec["folding_fraction"], "seconds": rec["seconds"]})
        print(rows[-1], flush=True)
    return rows


def totalseg(work: Path, iterations: int) -> list[dict]:
    ref = fetch_reference()

    def organs(path: Path, out: Path) -> Path:
        seg = nib.load(path)
        lab = np.asarray(seg.dataobj).astype(np.int16)
        keep = np.zeros_like(lab)
        for i, v in enumerate(sorted(ORGANS), start=1):
            keep[lab == v] = i
        nib.save(nib.Nifti1Image(keep, seg.affine), out)
        return out

    rows = []
    pairs = [("CT (patient A) -> DICOM CT (patient B)", ref / "example_ct_dicom", "example_seg_dicom.nii.gz",
              ref / "example_ct_sm.nii.gz", "example_seg.nii.gz", "lncc", "CT"),
             ("MR (patient C) -> CT (patient A)", ref / "example_ct_sm.nii.gz", "example_seg.nii.gz",
              ref / "example_mr_sm.nii.gz", "example_seg_mr.nii.gz", "mi", "MR")]
    for name, fixed, fseg, moving, mseg, sim, mmod in pairs:
        fl, ml = organs(ref / fseg, work / f"f_{fseg}"), organs(ref / mseg, work / f"m_{mseg}")
        for mode in ("affine", "deformable"):
            rec = register_files(fixed, moving, work / f"ts_{sim}_{mode}", mode=mode, similarity=sim,
                                 fixed_modality="CT", moving_modality=mmod, moving_labels=str(ml),
                                 fixed_labels=str(fl), iterations=iterations, progress=False)
            rows.append({"pair": name, "mode": mode, "similarity": sim, "dice_before": rec["dice"]["mean_before"],
                         "dice_after": rec["dice"]["mean_after"], "dice_per_organ_after": rec["dice"]["after"],
                         "folding_fraction": rec["folding_fraction"], "seconds": rec["seconds"]})
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    from mmfm.workflows.provenance import provenance

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="docs/results/registration.json")
    ap.add_argument("--iterations", type=int, default=100)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        out = {"known_transforms": known_transforms(work, args.iterations), "pairs": mni(work, args.iterations)
               + totalseg(work, args.iterations), "iterations": args.iterations,
               "command": "python scripts/real_registration.py", "provenance": provenance()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    from mmfm.cli.logs import setup as show_progress

    show_progress()   # the library's log lines (progress, decisions), as the mmfm command shows them
    main()
