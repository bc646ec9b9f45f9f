"""Checks before training (issue 32, item 2): 3D segmentation trains from a folder of NRRD/MHA/NIfTI images with
masks beside them, and what would fail later (an empty split, an unknown label value, a mask off its image's grid)
stops `mmfm train` before the first step with its key=value fix; the log starts with precision, device and the
data decisions; a NaN names the precision and only an existing checkpoint."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from mmfm.cli.main import main
from mmfm.data import spec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from test_user_masks import N, tumour_case, write_suffix_folder, write_volume  # noqa: E402

SEG = ["configs/segmentation_3d.yaml", "data.dataset=folder", "data.patch=[16,16,16]", "encoder.name=vit_micro",
       "task={name: segmentation, num_classes: 2}", "train.max_steps=2", "train.batch_size=2",
       "train.progress=false", "train.precision=fp32"]


@pytest.fixture(autouse=True)
def _fresh():
    spec._LOADED.clear()
    spec._SAID.clear()
    from mmfm.engine import trainer

    trainer._ANNOUNCED.clear()


def splits(tmp_path: Path, **names: list[str]) -> Path:
    p = tmp_path / "splits.json"
    p.write_text(json.dumps(names))
    return p


@pytest.mark.parametrize(("image_ext", "mask"), [("nrrd", "_seg.nii.gz"), ("mha", "_mask.nrrd"),
                                                 ("nii.gz", "_label.mha")])
def test_3d_segmentation_trains_from_user_masks_and_the_log_starts_with_its_decisions(tmp_path, capsys, image_ext,
                                                                                      mask):
    root = write_suffix_folder(tmp_path / "f", image_ext=image_ext, mask=mask)
    out = tmp_path / "run"
    assert main(["train", *SEG, f"data.root={root}", f"out={out}"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[mmfm]")]
    assert lines[0].startswith("[mmfm] precision fp32 (train.precision=fp32") and "device cpu" in lines[0]
    assert lines[1].startswith("[mmfm] data: 5 case(s) in folder: train ")
    assert lines[2].startswith("[mmfm] spacing: ") and "[2.0, 2.0, 4.0]" in lines[2]
    recs = json.loads((out / "results.json").read_text())
    assert {r["split"] for r in recs} == {"val", "test"} and any(r["metric"] == "dice_1" for r in recs)


def test_an_empty_evaluation_split_is_refused_before_training_with_the_fix(tmp_path, capsys):
    root = write_suffix_folder(tmp_path / "f")
    sp = splits(tmp_path, train=[f"p{i}/scan.nrrd" for i in range(4)], test=["p4/scan.nrrd"])
    out = tmp_path / "run"
    assert main(["train", *SEG, f"data.root={root}", f"data.splits_file={sp}", f"out={out}"]) == 2
    err = capsys.readouterr().err
    assert "val of data.eval_splits is empty" in err and "data.eval_splits=[test]" in err
    assert not out.exists()                                       # nothing built, nothing written
    assert main(["train", *SEG, f"data.root={root}", f"data.splits_file={sp}", "data.eval_splits=[test]",
                 f"out={out}"]) == 0


def test_a_label_value_the_task_does_not_know_is_refused(tmp_path, capsys):
    root = write_suffix_folder(tmp_path / "f", mask="_seg.nii.gz")
    m = np.zeros((N, N, N), np.uint8)
    m[4:8, 4:8, 4:8] = 3
    write_volume(root / "p2" / "scan_seg.nii.gz", m)
    args = [a if not a.startswith("task=") else "task={name: segmentation, num_classes: 3}" for a in SEG]
    assert main(["train", *args, f"data.root={root}", f"out={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert "holds the label value 3" in err and "task.num_classes=4" in err and "p2/scan.nrrd" in err


def test_a_mask_off_its_image_grid_is_refused(tmp_path, capsys):
    root = write_suffix_folder(tmp_path / "f")
    _, ball = tumour_case(np.random.default_rng(9))
    write_volume(root / "p1" / "scan_seg.nii.gz", ball, origin=(900.0, 0.0, 0.0))
    assert main(["train", *SEG, f"data.root={root}", f"out={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert "off their image's grid" in err and "p1/scan.nrrd" in err and "data.splits_file" in err


def test_nan_names_the_precision_suggests_fp32_and_no_missing_checkpoint(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MMFM_NATIVE_BF16", "1")
    root = write_suffix_folder(tmp_path / "f")
    args = [a for a in SEG if not a.startswith(("train.precision", "train.max_steps"))]
    assert main(["train", *args, "train.precision=auto", "train.max_steps=3", "train.ckpt_every=100",
                 "optim.lr=1e30", "optim.warmup_steps=0", f"data.root={root}", f"out={tmp_path / 'run'}"]) == 2
    captured = capsys.readouterr()
    assert "[mmfm] precision bf16 (train.precision=auto" in captured.out
    err = captured.err
    assert "non-finite" in err or "the loss became" in err
    assert "train.precision=fp32 (this run used bf16)" in err and "no checkpoint was written yet" in err
    assert "re-run to resume" not in err
