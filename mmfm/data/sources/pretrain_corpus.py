"""``pretrain-corpus``: every real CT and MR volume that ships offline in registry packages, as one unlabelled
folder for vision pretraining (``mmfm data prepare pretrain-corpus``).

Sources: TotalSegmentator 2.18.0's test references (a CT, a 20-slice CT DICOM series, an MR; source distribution),
LiTS case 117 (liver-ct-segmentation-package), Colin27 (mricron-data), the MNI152 template (nilearn) and the CT / MR
DICOM test files of pydicom and pydicom-data.

Layout (``data.dataset=folder``, read by every command like any user folder)::

    pretrain-corpus/
      CT/<volume>.nii.gz      intensities already through the modality's preset, in [0, 1] (read with the preset
      MR/<volume>.nii.gz      ``unit``: data.presets.unknown=unit), RAS, axial slices along the last axis
      splits.json             the patient-level split (data.splits_file)
      volumes.csv             one row per volume: file, modality, patient, split, source, shape, spacing, labels
      card.md, card.json      the data card

Mini's downstream tasks are cut from LiTS #117, Colin27 and MNI152: the corpus keeps only the slab of each that
mini puts in ``train``, so pretraining on it never sees a validation or test slice of mini.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from mmfm.data.presets import get_preset
from mmfm.data.sources.fetch import Source, mmfm_home, start_build
from mmfm.data.sources.mini import PRESET_BY_MODALITY, SLABS, SOURCES, lits_files
from mmfm.data.splits import group_split
from mmfm.errors import MMFMError

NAME, VERSION = "pretrain-corpus", 1
TOTALSEG = Source("totalsegmentator", "2.18.0", "pypi-sdist", "totalsegmentator-2.18.0.tar.gz",
                  "5d4223ef93973bc36d710869d11e7742ead2c154c72f7f9edcaaadd5b6c4bd03",
                  "Apache-2.0 (package); the example CT is probably a TotalSegmentator dataset case (CC-BY-4.0, "
                  "unverified)", "https://pypi.org/project/TotalSegmentator/")
TS_REF = "totalsegmentator-2.18.0/tests/reference_files"
# (file in TS_REF, corpus name, patient, silver label map in TS_REF). example_ct_sm is a 30-slice crop of
# example_ct (same grid): left out, it would count one scan twice.
TS_VOLUMES = [("example_ct.nii.gz", "ts-example-ct", "ts-ct", "example_seg_fast_force_split.nii.gz"),
              ("example_ct_dicom", "ts-example-ct-dicom", "ts-ct-dicom", "example_seg_dicom.nii.gz"),
              ("example_mr_sm.nii.gz", "ts-example-mr", "ts-mr", "example_seg_mr.nii.gz")]
# one uncompressed copy of each distinct CT / MR image among pydicom's and pydicom-data's test files
DICOM_FILES = ["693_UNCI.dcm", "CT_small.dcm", "eCT_Supplemental.dcm", "MR2_UNCI.dcm", "MR_small.dcm",
               "emri_small.dcm", "MR-SIEMENS-DICOM-WithOverlays.dcm"]
MIN_DEPTH = 8           # thinner multi-frame images are kept as 2D frames (a 3D crop of 2 slices is padding)
OWN_FILES = {"card.json", "card.md", "splits.json", "volumes.csv"}


class _Corpus:
    """Volumes written into a folder, with their facts for volumes.csv and the card."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.rows: list[dict[str, Any]] = []

    def add(self, array: np.ndarray, affine: np.ndarray, modality: str, name: str, patient: str, source: str,
            labels: str = "", split: str = "") -> None:
        """``array``: one 2D image (I, J) or volume (I, J, K) in scanner units, ``affine`` index -> RAS mm."""
        scaled = get_preset(PRESET_BY_MODALITY[modality])(array[None].astype(np.float32))[0]
        img = nib.Nifti1Image(np.clip(scaled, 0, 1).astype(np.float32), affine)
        if array.ndim == 3:
            img = nib.as_closest_canonical(img)   # RAS: axial slices along the last axis
        img.set_data_dtype(np.uint8)              # nibabel stores 8 bits with a scale factor: [0, 1] on reading
        rel = f"{modality}/{name}.nii.gz"
        (self.root / modality).mkdir(parents=True, exist_ok=True)
        nib.save(img, str(self.root / rel))
        zooms = [round(float(z), 3) for z in img.header.get_zooms()[:array.ndim]]
        self.rows.append({"file": rel, "modality": modality, "patient": patient, "split": split, "source": source,
                          "shape": "x".join(str(s) for s in img.shape), "spacing": "x".join(map(str, zooms)),
                          "slices": int(img.shape[2]) if array.ndim == 3 else 1, "labels": labels})


def _train_slab(n: int) -> int:
    """How many slices from the start of an axis mini assigns to ``train`` (fractions of :data:`SLABS`)."""
    return int(np.ceil(SLABS["train"][1] * n))


def _lits(c: _Corpus, cache: Path) -> dict[str, Any]:
    from mmfm.data.io.mrc import read_mrc

    img = read_mrc(lits_files(cache)[0], "CT")               # (1, x, y, z), z = mini's slab axis
    keep = _train_slab(img.array.shape[-1])
    c.add(img.array[0, :, :, :keep], img.affine, "CT", "lits-117", "lits-117", "LiTS #117", split="train",
          labels=f"manual liver + tumour (lab_117.mrc, slices 0-{keep - 1})")
    s = SOURCES["lits"]
    return {"package": s.name, "version": s.version, "sha256": s.sha256, "licence": s.licence,
            "used": f"img_117.mrc, slices 0-{keep - 1} of {img.array.shape[-1]} (mini's train slab)"}


def _brain_slab(c: _Corpus, t1: nib.Nifti1Image, brain: np.ndarray, name: str, source: str) -> str:
    """Keep the inferior slices up to the end of mini's train slab of the brain (mini slabs the brain's extent)."""
    t1 = nib.as_closest_canonical(t1)
    zs = np.flatnonzero(brain.reshape(-1, brain.shape[2]).sum(axis=0) > 500)
    lo, hi = int(zs[0]), int(zs[-1])
    keep = lo + _train_slab(hi - lo + 1)
    c.add(np.asarray(t1.dataobj, dtype=np.float32)[:, :, :keep], t1.affine, "MR", name, name, source, split="train")
    return f"axial slices 0-{keep - 1} of {t1.shape[2]} (up to the end of mini's train slab)"


def _colin(c: _Corpus, cache: Path) -> dict[str, Any]:
    from mmfm.data.sources.fetch import extract_member, fetch

    s = SOURCES["colin27"]
    installed = Path("/usr/share/mricron/templates")
    try:
        deb = fetch(s, cache)
        ch2 = extract_member(deb, "usr/share/mricron/templates/ch2.nii.gz", cache / "colin27" / "ch2.nii.gz")
        bet = extract_member(deb, "usr/share/mricron/templates/ch2bet.nii.gz", cache / "colin27" / "ch2bet.nii.gz")
    except MMFMError:
        if not (installed / "ch2.nii.gz").exists():
            raise
        ch2, bet = installed / "ch2.nii.gz", installed / "ch2bet.nii.gz"
    brain = nib.as_closest_canonical(nib.load(str(bet))).get_fdata() > 0
    used = _brain_slab(c, nib.load(str(ch2)), brain, "colin27", "Colin27 T1 (ch2)")
    return {"package": s.name, "version": s.version, "sha256": s.sha256, "licence": s.licence,
            "used": f"ch2.nii.gz, {used}"}


def _mni(c: _Corpus) -> dict[str, Any]:
    try:
        from nilearn import __version__ as nv
        from nilearn import datasets
    except ImportError:
        raise MMFMError("nilearn is not installed", "pip install nilearn (it bundles the MNI152 template)") from None
    t1 = datasets.load_mni152_template(resolution=1)
    gm = nib.as_closest_canonical(datasets.load_mni152_gm_template(resolution=1)).get_fdata()
    wm = nib.as_closest_canonical(datasets.load_mni152_wm_template(resolution=1)).get_fdata()
    used = _brain_slab(c, t1, (gm + wm) > 0.5, "mni152", "MNI ICBM152 2009 (nilearn)")
    return {"package": "nilearn", "version": nv, "licence": "BSD-3 (nilearn); MNI template permissive notice",
            "used": f"MNI152 T1 1 mm, {used}"}


def totalsegmentator_references(cache: Path | None = None) -> Path:
    """TotalSegmentator's ``tests/reference_files`` from its verified source distribution (the wheel lacks them)."""
    cache = (cache or mmfm_home() / "sources") / "totalsegmentator"
    ref = cache / TS_REF
    if not ref.is_dir():
        from mmfm.data.sources.fetch import fetch

        tgz = fetch(TOTALSEG, cache)
        with tarfile.open(tgz) as tf:
            tf.extractall(cache, members=[m for m in tf.getmembers() if m.name.startswith(TS_REF + "/")],
                          filter="data")
    return ref


def _totalseg(c: _Corpus, cache: Path) -> dict[str, Any]:
    from mmfm.data.io import read_image

    ref = totalsegmentator_references(cache)
    for file, name, patient, seg in TS_VOLUMES:
        modality = "MR" if "_mr" in file else "CT"
        img = read_image(ref / file, modality=modality)
        c.add(img.array[0], img.affine, modality, name, patient, f"TotalSegmentator reference {file}",
              labels=f"silver: TotalSegmentator's own output {seg} (not manual)")
    return {"package": TOTALSEG.name, "version": TOTALSEG.version, "sha256": TOTALSEG.sha256,
            "licence": TOTALSEG.licence, "used": ", ".join(f for f, *_ in TS_VOLUMES)}


def _dicoms(c: _Corpus) -> dict[str, Any]:
    try:
        import pydicom
        from pydicom.data import get_testdata_file
    except ImportError:
        raise MMFMError("pydicom is not installed", "pip install pydicom pydicom-data") from None
    from mmfm.data.io.dicom import read_dicom_file

    used = []
    for file in DICOM_FILES:
        path = get_testdata_file(file, download=False)   # never the online fallback: it retries and hangs offline
        if path is None:
            continue
        img = read_dicom_file(str(path))
        stem = "pydicom-" + Path(file).stem.lower().replace("_", "-")
        arr = img.array[0]
        if arr.ndim == 3 and arr.shape[-1] < MIN_DEPTH:    # a few frames: 2D images
            for k in range(arr.shape[-1]):
                c.add(arr[..., k], img.affine, img.modality, f"{stem}-f{k}", stem, f"pydicom test file {file}")
        else:
            c.add(arr, img.affine, img.modality, stem, stem, f"pydicom test file {file}")
        used.append(file)
    if not used:
        raise MMFMError("no CT or MR test file of pydicom / pydicom-data found", "pip install pydicom-data")
    return {"package": "pydicom + pydicom-data", "version": pydicom.__version__, "licence": "MIT (pydicom, "
            "pydicom-data)", "used": ", ".join(used)}


def _assign_splits(rows: list[dict[str, Any]]) -> None:
    """Patient-level: mini's sources stay in train (already cut); the others 70/15/15 by patient, seed 0."""
    free = [r for r in rows if not r["split"]]
    # one item per slice, so the shares are of slices (a 112-slice CT weighs more than a single image)
    per_slice = [(i, r["patient"]) for i, r in enumerate(free) for _ in range(r["slices"])]
    splits = group_split([p for _, p in per_slice], {"train": 0.7, "val": 0.15, "test": 0.15})
    for (i, _), s in zip(per_slice, splits):
        free[i]["split"] = s


def _card(rows: list[dict[str, Any]], sources: dict[str, Any], missing: dict[str, str], seconds: float
          ) -> dict[str, Any]:
    counts = {s: {"volumes": sum(r["split"] == s for r in rows), "slices": sum(r["slices"] for r in rows
                                                                                 if r["split"] == s),
                  "patients": len({r["patient"] for r in rows if r["split"] == s}),
                  "by_modality": {m: sum(r["split"] == s and r["modality"] == m for r in rows) for m in ("CT", "MR")}}
              for s in ("train", "val", "test")}
    return {"name": NAME, "version": VERSION, "built_seconds": round(seconds, 1), "sources": sources,
            "missing_sources": missing, "counts": counts, "volumes": rows,
            "presets": {m: get_preset(PRESET_BY_MODALITY[m]).to_dict() for m in ("CT", "MR")},
            "read_with": "data.dataset=folder data.root=<this folder> data.splits_file=<this folder>/splits.json "
                         "data.presets.unknown=unit",
            "derivation": [
                "Intensities went through the modality's preset when the corpus was built (CT: ct_abdomen, "
                "W400/L40 HU -> [0, 1]; MR: mri_percentile) and are stored as 8 bits with a NIfTI scale factor: "
                "read them with the preset 'unit' (data.presets.unknown=unit).",
                "Volumes are reoriented to RAS (axial slices along the last axis); spacing is the scanner's.",
                "LiTS #117, Colin27 and MNI152 keep only the slices mini puts in its train slab, so no validation "
                "or test slice of mini's tasks is in the corpus; they are in the corpus's train split.",
                "The other volumes are split 70/15/15 of their slices by patient (seed 0). Which TotalSegmentator "
                "references share a patient is not documented: each is taken as its own; example_ct_sm (a crop of "
                "example_ct) is left out.",
                f"Multi-frame DICOM images with fewer than {MIN_DEPTH} frames are stored as 2D frames.",
                "Unlabelled for pretraining. Labels that exist for these volumes (column 'labels'): LiTS manual "
                "liver/tumour; TotalSegmentator SILVER labels (its own model's output, kept as regression "
                "references, not manual ground truth). None are copied into the corpus.",
                "Privacy: no DICOM tag is stored; volumes are named by their source file, never by patient."]}


def card_markdown(card: dict[str, Any]) -> str:
    lines = [f"# Data card: {card['name']} (v{card['version']})", "", "## Sources", "",
             "| source | package | version | licence | used |", "|---|---|---|---|---|"]
    lines += [f"| {k} | {s['package']} | {s['version']} | {s['licence']} | {s['used']} |"
              for k, s in card["sources"].items()]
    if card["missing_sources"]:
        lines += ["", "**Missing sources** (the rest was built): " +
                  "; ".join(f"{k}: {v}" for k, v in card["missing_sources"].items())]
    lines += ["", "## Counts", "", "| split | volumes | patients | slices | CT | MR |", "|---|---|---|---|---|---|"]
    lines += [f"| {s} | {c['volumes']} | {c['patients']} | {c['slices']} | {c['by_modality']['CT']} | "
              f"{c['by_modality']['MR']} |" for s, c in card["counts"].items()]
    lines += ["", "## Volumes", "", "| file | modality | split | shape | spacing (mm) | labels |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {r['file']} | {r['modality']} | {r['split']} | {r['shape']} | {r['spacing']} | "
              f"{r['labels'] or '-'} |" for r in card["volumes"]]
    lines += ["", f"Read it with: `{card['read_with']}`", "", "## How it was derived", ""]
    return "\n".join(lines + [f"- {d}" for d in card["derivation"]]) + "\n"


def is_corpus_folder(root: Path) -> bool:
    """True only for a folder this module built: its card says so and it holds nothing else."""
    try:
        card = json.loads((root / "card.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(card, dict) or card.get("name") != NAME:
        return False
    return all(p.name in OWN_FILES or (p.is_dir() and p.name in ("CT", "MR")) for p in root.iterdir())


def build_pretrain_corpus(root: Path | None = None, force: bool = False, progress: bool = True) -> Path:
    """Build the corpus into ``root`` (default ``$MMFM_HOME/data/pretrain-corpus``) atomically; return its path.
    A finished corpus is kept (``force`` rebuilds it); a folder mmfm did not build is never touched."""
    home = mmfm_home()
    root = Path(root) if root else home / "data" / NAME
    tmp = start_build(root, is_corpus_folder, "a pretraining corpus", NAME, force)
    if tmp is None:
        return root
    cache = home / "sources"
    t0 = time.time()
    c = _Corpus(tmp)
    sources: dict[str, Any] = {}
    missing: dict[str, str] = {}
    steps: list[tuple[str, str, Callable[[], dict[str, Any]]]] = [
        ("TotalSegmentator references (totalsegmentator sdist)", "totalsegmentator", lambda: _totalseg(c, cache)),
        ("LiTS CT (liver-ct-segmentation-package)", "lits", lambda: _lits(c, cache)),
        ("Colin27 MRI (mricron-data)", "colin27", lambda: _colin(c, cache)),
        ("MNI152 template (nilearn)", "mni152", lambda: _mni(c)),
        ("pydicom / pydicom-data CT and MR", "pydicom", lambda: _dicoms(c))]
    for title, key, step in steps:
        if progress:
            print(f"[{NAME}] {title} ...", flush=True)
        try:
            sources[key] = step()
        except MMFMError as e:
            missing[key] = str(e).splitlines()[0]   # the problem, without the hint
            print(f"[{NAME}] skipped {title}: {missing[key]}", flush=True)
    if not c.rows:
        shutil.rmtree(tmp, ignore_errors=True)   # our own partial folder
        raise MMFMError(f"no source could be fetched; {NAME} was not built", "see the messages above")
    _assign_splits(c.rows)
    splits = {s: [r["file"] for r in c.rows if r["split"] == s] for s in ("train", "val", "test")}
    (tmp / "splits.json").write_text(json.dumps(splits, indent=1))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(c.rows[0]))
    w.writeheader()
    w.writerows(c.rows)
    (tmp / "volumes.csv").write_text(buf.getvalue())
    card = _card(c.rows, sources, missing, time.time() - t0)
    (tmp / "card.json").write_text(json.dumps(card, indent=2))
    (tmp / "card.md").write_text(card_markdown(card))
    root.parent.mkdir(parents=True, exist_ok=True)
    if root.exists():   # an empty folder, or a corpus mmfm built (checked above): swap it out
        old = root.with_name(root.name + f".old-{os.getpid()}")
        os.replace(root, old)
        os.replace(tmp, root)
        shutil.rmtree(old) if is_corpus_folder(old) else old.rmdir()
    else:
        os.replace(tmp, root)
    return root

