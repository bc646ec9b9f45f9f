"""A real 3D run through the user-data path: pretrain a 3D encoder on a plain folder of real CT/MR volumes, then
fine-tune 4-organ segmentation (spleen, right kidney, left kidney, liver) with random patches and sliding-window
inference, and score Dice per organ against TotalSegmentator's reference label maps.

    python scripts/real_3d_totalsegmentator.py [--out runs/real3d] [--seeds 0] [--pretrain-steps 200]
                                               [--finetune-steps 300]

Data (fetched from PyPI once, SHA-256 checked): the reference files in the source distribution of
``totalsegmentator`` 2.18.0 (example CT 122x101x30 at 3 mm, the DICOM CT series 512x512x20, the MR 117x91x20,
the larger example CT 122x101x112 without labels) and the LiTS CT volume of ``liver-ct-segmentation-package``
(unlabelled here). The label maps are TotalSegmentator's own outputs kept as regression references: SILVER
labels, not manual ground truth. Which scans share a patient is not documented; ``example_ct`` and
``example_ct_sm`` share a grid and are treated as one patient.

Protocol: leave-one-scan-out over the three labelled scans (CT, DICOM CT, MR). For each held-out scan, the encoder
is pretrained (SimCLR, vit_micro 3D, 32^3 patches at 6 mm, i.e. 19 cm of context) on a plain folder of every
*other* volume (so no test voxel is seen, even unlabelled), then fine-tuned on the two other labelled scans; the
same fine-tuning from random initialisation is the baseline. Results: ``OUT/results.json`` and
``docs/results/real_3d.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform

ROOT = Path(__file__).resolve().parents[1]
SDIST = "totalsegmentator-2.18.0.tar.gz"
SDIST_SHA256 = "5d4223ef93973bc36d710869d11e7742ead2c154c72f7f9edcaaadd5b6c4bd03"
REF = "totalsegmentator-2.18.0/tests/reference_files"
ORGANS = {1: "spleen", 2: "kidney_right", 3: "kidney_left", 5: "liver"}   # TotalSegmentator v2 ids (CT and MR)
NAMES = ["background", "spleen", "kidney_right", "kidney_left", "liver"]
CASES = {"ct": ("example_ct_sm.nii.gz", "example_seg.nii.gz"),
         "ctdicom": ("example_ct_dicom", "example_seg_dicom.nii.gz"),
         "mr": ("example_mr_sm.nii.gz", "example_seg_mr.nii.gz")}
PATIENT_OF = {"example_ct.nii.gz": "ct", "example_ct_sm.nii.gz": "ct", "example_ct_dicom": "ctdicom",
              "example_mr_sm.nii.gz": "mr"}


def fetch_reference() -> Path:
    from mmfm.data.sources.fetch import mmfm_home, sha256

    cache = mmfm_home() / "sources" / "totalsegmentator"
    cache.mkdir(parents=True, exist_ok=True)
    tgz = cache / SDIST
    if not tgz.exists():
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        "totalsegmentator==2.18.0", "-d", str(cache)], check=True)
    if sha256(tgz) != SDIST_SHA256:
        raise SystemExit(f"{tgz}: checksum mismatch; delete it and run again")
    ref = cache / REF
    if not ref.exists():
        with tarfile.open(tgz) as tf:
            tf.extractall(cache, members=[m for m in tf.getmembers() if m.name.startswith(REF)], filter="data")
    return ref


def lits_volume() -> Path:
    from mmfm.data.sources.fetch import extract_member, fetch, mmfm_home
    from mmfm.data.sources.mini import SOURCES

    cache = mmfm_home() / "sources"
    whl = fetch(SOURCES["lits"], cache)
    return extract_member(whl, "liver_ct_segmentation_package/data/img_117.mrc", cache / "lits" / "img_117.mrc")


def labelled_case(ref: Path, img: str, seg: str, organs: dict[int, str] = ORGANS
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, label map with ``organs`` renumbered 1.., affine) of one reference scan, on the grid mmfm reads."""
    from mmfm.data.io import read_image

    im = read_image(ref / img)            # the DICOM series is written as NIfTI on the grid mmfm reads
    s = nib.load(ref / seg)
    labels = np.asarray(s.dataobj).astype(np.int16)
    # dcm2niix flips the DICOM rows (LAS) where mmfm keeps the file's order (LPS -> RAS affine with j < 0):
    # the same voxels in space; bring the label map to the image's axis order, then check the grids agree
    t = ornt_transform(io_orientation(s.affine), io_orientation(im.affine))
    labels = apply_orientation(labels, t)
    affine = s.affine @ inv_ornt_aff(t, s.shape)
    if labels.shape != im.spatial_shape or not np.allclose(affine, im.affine, atol=1e-2):
        raise SystemExit(f"{seg} is not on the grid of {img} as mmfm reads it")
    remapped = np.zeros(labels.shape, np.uint8)
    for new, old in enumerate(organs, start=1):
        remapped[labels == old] = new
    return im.array[0].astype(np.float32), remapped, im.affine


def build_data(ref: Path, out: Path) -> None:
    """``labelled/`` (imagesTr + labelsTr, 4 organs) and one unlabelled folder per held-out scan."""
    lab = out / "labelled"
    (lab / "imagesTr").mkdir(parents=True, exist_ok=True)
    (lab / "labelsTr").mkdir(parents=True, exist_ok=True)
    for case, (img, seg) in CASES.items():
        image, remapped, affine = labelled_case(ref, img, seg)
        nib.save(nib.Nifti1Image(image, affine), lab / "imagesTr" / f"{case}.nii.gz")
        nib.save(nib.Nifti1Image(remapped, affine), lab / "labelsTr" / f"{case}.nii.gz")
    volumes = {**{name: ref / name for name in PATIENT_OF}, "lits_img_117.mrc": lits_volume()}
    for held in CASES:
        folder = out / f"unlabelled_without_{held}"
        folder.mkdir(parents=True, exist_ok=True)
        for name, src in volumes.items():
            if PATIENT_OF.get(name) == held:
                continue
            dst = folder / name
            if not dst.exists():
                (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
        others = [c for c in CASES if c != held]
        (out / f"split_{held}.json").write_text(json.dumps({"train": others, "val": [], "test": [held]}))


def mmfm(*args: str) -> None:
    r = subprocess.run([sys.executable, "-m", "mmfm.cli.main", *args], cwd=ROOT)
    if r.returncode:
        raise SystemExit(f"mmfm {' '.join(args[:2])} failed ({r.returncode})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/real3d")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--pretrain-steps", type=int, default=200)
    ap.add_argument("--finetune-steps", type=int, default=300)
    a = ap.parse_args()
    out = (ROOT / a.out).resolve()
    ref = fetch_reference()
    build_data(ref, out / "data")
    # one intensity rule for CT and MR alike (0.5-99.5th percentiles per volume): DICOM CT would otherwise get
    # the CT window and the NIfTI volumes (no modality recorded) the percentile preset
    common = ["data.spacing=[6,6,6]", "data.patch=[32,32,32]", "data.presets={CT: percentile, MR: percentile}",
              "data.patches_per_volume=16", f"data.cache={out / 'cache'}",
              "train.batch_size=4", "train.progress=false"]
    records = []
    mmfm("data", "prepare", "folder", "--root", str(out / "data" / "unlabelled_without_ct"), "--out",
         str(out / "card_unlabelled_without_ct"))
    for held in CASES:
        for seed in a.seeds:
            pre = out / f"pretrain_without_{held}_s{seed}"
            mmfm("pretrain", "configs/pretrain/simclr_3d.yaml", "data.dataset=folder",
                 f"data.root={out / 'data' / f'unlabelled_without_{held}'}", "encoder.name=vit_micro",
                 *common, f"train.max_steps={a.pretrain_steps}",
                 f"train.ckpt_every={a.pretrain_steps}", f"train.seed={seed}", f"out={pre}")
            task = f"task={{name: segmentation, num_classes: 5, class_names: {NAMES}, decoder_channels: 16}}"
            for method, enc in (("pretrained", f"encoder.weights={pre}"), ("scratch", "encoder.name=vit_micro")):
                run = out / f"seg_{method}_test_{held}_s{seed}"
                mmfm("train", "configs/segmentation_3d.yaml", "data.dataset=MSD",
                     f"data.root={out / 'data' / 'labelled'}", "data.options={modality: unknown}",
                     f"data.splits_file={out / 'data' / f'split_{held}.json'}", "data.eval_splits=[test]", task, enc,
                     *common, f"train.max_steps={a.finetune_steps}", f"train.ckpt_every={a.finetune_steps}",
                     f"train.seed={seed}", "optim.lr=0.003", f"out={run}", "method=vit_micro-" + (
                         "simclr" if method == "pretrained" else "scratch"))
                for r in json.loads((run / "results.json").read_text()):
                    r["dataset"] = f"totalsegmentator-reference (held out: {held}; silver labels)"
                    records.append(r)
    publish(records, out, "real_3d")


def publish(records: list[dict], out: Path, name: str) -> None:
    """Write the records to OUT/results.json and docs/results/<name>.json, then regenerate the doc tables. A record
    without provenance (made by the calling script) gets this machine's, now."""
    from mmfm.workflows.provenance import provenance

    here = provenance()
    records = [r if r.get("provenance") else {**r, "provenance": here} for r in records]
    (out / "results.json").write_text(json.dumps(records, indent=1))
    dst = ROOT / "docs" / "results" / f"{name}.json"
    dst.write_text(json.dumps(records, indent=1))
    print(f"{len(records)} records -> {dst.relative_to(ROOT)}")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "doc_tables.py"), "write"], check=True)


if __name__ == "__main__":
    from mmfm.cli.logs import setup as show_progress

    show_progress()   # the library's log lines (progress, decisions), as the mmfm command shows them
    main()
