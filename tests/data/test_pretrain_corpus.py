"""`mmfm data prepare pretrain-corpus`: every real CT/MR volume shipped offline, as an unlabelled folder with a
patient-level split and a data card, read by `mmfm pretrain` as 2D slices and as 3D patches."""

from __future__ import annotations

import csv
import json
import sys
from collections import defaultdict

import nibabel as nib
import numpy as np
import pytest

from mmfm.cli.main import main
from mmfm.data.sources.pretrain_corpus import build_pretrain_corpus, is_corpus_folder


@pytest.fixture(scope="module")
def corpus():
    return build_pretrain_corpus(progress=False)   # $MMFM_HOME/data/pretrain-corpus, built once per machine


def _read(corpus, *overrides):
    return [f"data.root={corpus}", f"data.splits_file={corpus / 'splits.json'}", "data.dataset=folder",
            "data.presets.unknown=unit", "train.max_steps=3", "train.progress=false", *overrides]


@pytest.mark.realdata
def test_corpus_layout_split_and_card(corpus):
    card = json.loads((corpus / "card.json").read_text())
    assert card["name"] == "pretrain-corpus" and not card["missing_sources"]
    assert set(card["sources"]) == {"totalsegmentator", "lits", "colin27", "mni152", "pydicom"}
    rows = list(csv.DictReader(open(corpus / "volumes.csv")))
    assert {r["modality"] for r in rows} == {"CT", "MR"} and len(rows) >= 12
    splits = json.loads((corpus / "splits.json").read_text())
    listed = {f: s for s, files in splits.items() for f in files}
    assert listed == {r["file"]: r["split"] for r in rows}                  # every volume in exactly one split
    by_patient = defaultdict(set)
    for r in rows:
        by_patient[r["patient"]].add(r["split"])
    assert all(len(s) == 1 for s in by_patient.values())                    # patient-level
    assert all(card["counts"][s]["volumes"] > 0 for s in ("train", "val", "test"))
    assert sum(c["slices"] for c in card["counts"].values()) == sum(int(r["slices"]) for r in rows)
    # mini's tasks come from these three: only mini's train slab is here (LiTS: 57 of 128 slices), in train
    mini_derived = {r["patient"]: r for r in rows if r["patient"] in ("lits-117", "colin27", "mni152")}
    assert len(mini_derived) == 3 and all(r["split"] == "train" for r in mini_derived.values())
    assert mini_derived["lits-117"]["shape"] == "128x128x57"
    silver = [r for r in rows if r["labels"].startswith("silver")]
    assert {r["patient"] for r in silver} == {"ts-ct", "ts-ct-dicom", "ts-mr"}
    assert "SILVER" in (corpus / "card.md").read_text()
    # intensities already through the modality preset: [0, 1], RAS with axial slices last
    ct = nib.load(str(corpus / "CT" / "ts-example-ct.nii.gz"))
    a = np.asarray(ct.dataobj, dtype=np.float32)
    assert a.min() >= 0 and 0.95 < a.max() <= 1.0 and nib.aff2axcodes(ct.affine) == ("R", "A", "S")
    assert ct.shape == (122, 101, 112) and ct.header.get_zooms() == (3.0, 3.0, 3.0)


@pytest.mark.realdata
def test_idempotent_refuses_foreign_folders_and_says_what_is_missing(corpus, tmp_path, monkeypatch, capsys):
    stamp = (corpus / "card.json").stat().st_mtime_ns
    assert main(["data", "prepare", "pretrain-corpus", "--root", str(corpus)]) == 0
    assert (corpus / "card.json").stat().st_mtime_ns == stamp and "# Data card: pretrain-corpus" in \
        capsys.readouterr().out
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert main(["data", "prepare", "pretrain-corpus", "--root", str(foreign)]) == 2
    err = capsys.readouterr().err
    assert "is not a pretraining corpus built by mmfm" in err and "Traceback" not in err
    assert (foreign / "notes.txt").read_text() == "keep me" and not is_corpus_folder(foreign)
    # a package that is not installed: that source is skipped with one line, the rest is built
    monkeypatch.setitem(sys.modules, "nilearn", None)
    built = build_pretrain_corpus(tmp_path / "partial", progress=False)
    card = json.loads((built / "card.json").read_text())
    assert card["missing_sources"] == {"mni152": "nilearn is not installed"}
    assert not (built / "MR" / "mni152.nii.gz").exists() and (built / "CT" / "lits-117.nii.gz").exists()


@pytest.mark.realdata
def test_pretrain_reads_it_as_2d_slices(corpus, tmp_path):
    out = tmp_path / "s2d"
    assert main(["pretrain", "configs/pretrain/simclr_2d.yaml", f"out={out}", "data.size=[32,32]",
                 "train.batch_size=4", *_read(corpus)]) == 0
    spec = json.loads((out / "encoder" / "encoder.json").read_text())
    assert spec["spatial_dims"] == 2 and spec["pretrain_data"] == "folder:train"


@pytest.mark.realdata
def test_pretrain_reads_it_as_3d_patches(corpus, tmp_path):
    out = tmp_path / "s3d"   # the corpus's 2D images are left out of a 3D run (said once in the log)
    assert main(["pretrain", "configs/pretrain/simclr_3d.yaml", f"out={out}", "data.patch=[32,32,32]",
                 "data.spacing=[2,2,2]", "train.batch_size=2", *_read(corpus)]) == 0
    assert json.loads((out / "encoder" / "encoder.json").read_text())["spatial_dims"] == 3
