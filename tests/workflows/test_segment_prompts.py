"""`mmfm segment` prompts for one structure beyond one box: more prompted slices (--slice-box, or "boxes" in
--prompts) and correction clicks on any slice (--click / --negative-click, or "clicks"), recorded in the JSON;
every misuse is a one-line error with exit status 2 before any work."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from mmfm.cli.main import main


def _two_part_volume(path):
    """40 x 36 x 8 CT-like volume: one structure in slices 1..2 and again in 5..6, nothing in 3..4."""
    i, j, k = np.mgrid[:40, :36, :8]
    part = ((i - 20) / 9.0) ** 2 + ((j - 18) / 8.0) ** 2 <= 1
    obj = part & (((k >= 1) & (k <= 2)) | ((k >= 5) & (k <= 6)))
    vol = np.where(obj, 150.0, -100.0).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, np.diag([0.8, 0.8, 2.5, 1.0])), path)
    ii, jj = np.nonzero(part[:, :, 0])
    return obj, [int(ii.min()) - 1, int(jj.min()) - 1, int(ii.max()) + 1, int(jj.max()) + 1]


@pytest.mark.long
def test_a_second_prompted_slice_reaches_the_part_one_box_cannot(tmp_path):
    obj, box = _two_part_volume(tmp_path / "ct.nii.gz")
    base = ["segment", str(tmp_path / "ct.nii.gz"), "--modality", "CT", "--quiet", "--slice", "2",
            "--box", *map(str, box)]
    assert main([*base, "--out", str(tmp_path / "one.nii.gz")]) == 0
    one = np.asarray(nib.load(tmp_path / "one.nii.gz").dataobj) > 0
    assert one[:, :, 2].any() and not one[:, :, 5:7].any()          # propagation stops at the empty slices
    assert main([*base, "--slice-box", "6", *map(str, box), "--out", str(tmp_path / "two.nii.gz")]) == 0
    two = np.asarray(nib.load(tmp_path / "two.nii.gz").dataobj) > 0
    assert all(two[:, :, k].any() for k in (1, 2, 5, 6))
    assert 2 * (two & obj).sum() / (two.sum() + obj.sum()) > 0.8
    rec = json.loads((tmp_path / "two.json").read_text())
    assert rec["prompt"]["boxes"] == [{"slice": 6, "box": [float(v) for v in box]}]
    assert rec["engine"]["used"] in ("onnx", "torch")


def test_a_negative_click_corrects_its_slice_and_is_recorded(tmp_path):
    _, box = _two_part_volume(tmp_path / "ct.nii.gz")
    base = ["segment", str(tmp_path / "ct.nii.gz"), "--modality", "CT", "--quiet", "--slice", "2",
            "--box", *map(str, box)]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    assert main([*base, "--negative-click", "1", str(cx), str(cy), "--out", str(tmp_path / "click.nii.gz")]) == 0
    assert main([*base, "--out", str(tmp_path / "plain.nii.gz")]) == 0
    plain, click = (np.asarray(nib.load(tmp_path / f"{n}.nii.gz").dataobj) > 0 for n in ("plain", "click"))
    assert not np.array_equal(plain[:, :, 1], click[:, :, 1]) and np.array_equal(plain[:, :, 2], click[:, :, 2])
    rec = json.loads((tmp_path / "click.json").read_text())
    assert rec["prompt"]["clicks"] == [{"slice": 1, "point": [cx, cy], "positive": False}]
    assert 1 in rec["corrected_slices"]["1"]


def test_prompts_json_boxes_and_clicks_are_the_flags_structure(tmp_path):
    from mmfm.errors import ConfigError
    from mmfm.workflows.segment import _structures, load_prompts

    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([{"label": "organ", "slice": 2, "box": [1, 2, 30, 31],
                                    "boxes": [{"slice": 6, "box": [1, 2, 30, 31]}],
                                    "clicks": [{"slice": 1, "point": [15, 16], "positive": False}]}]))
    from_json = _structures(None, [], [], None, load_prompts(prompts))[0]
    from_flags = _structures([1, 2, 30, 31], [], [], 2, None, [{"slice": 6, "box": [1, 2, 30, 31]}],
                             [{"slice": 1, "point": [15, 16], "positive": False}])[0]
    assert {**from_json, "label": None} == from_flags
    prompts.write_text(json.dumps([{"label": "organ", "slice": 2, "box": [1, 2, 30, 31], "clicks": [[1, 15, 16]]}]))
    with pytest.raises(ConfigError, match="clicks"):
        _structures(None, [], [], None, load_prompts(prompts))


BAD = [
    (["--slice", "2", "--box", "10", "10", "30", "30", "--slice-box", "12", "10", "10", "30", "30"], "out of range"),
    (["--slice", "2", "--box", "10", "10", "30", "30", "--slice-box", "2", "10", "10", "30", "30"],
     "prompted twice"),
    (["--slice", "2", "--box", "10", "10", "30", "30", "--click", "1.5", "5", "5"], "whole number"),
    (["--slice", "2", "--box", "10", "10", "30", "30", "--click", "3", "5", "400"], "outside"),
    (["--slice", "2", "--box", "10", "10", "30", "30", "--label", "a", "--slice-box", "3", "1", "1", "9", "9"],
     "--prompts"),
]


@pytest.mark.parametrize("args,message", BAD)
def test_bad_slice_boxes_and_clicks_are_one_line_errors(tmp_path, capsys, args, message):
    _two_part_volume(tmp_path / "ct.nii.gz")
    out = tmp_path / "m.nii.gz"
    assert main(["segment", str(tmp_path / "ct.nii.gz"), "--modality", "CT", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and not out.exists()


def test_slice_boxes_on_a_2d_image_are_refused_and_help_names_the_flags(tmp_path, capsys):
    from PIL import Image

    Image.fromarray(np.full((30, 30), 80, np.uint8)).save(tmp_path / "img.png")
    assert main(["segment", str(tmp_path / "img.png"), "--box", "2", "2", "20", "20", "--click", "0", "5", "5",
                 "--out", str(tmp_path / "m.png")]) == 2
    assert "for volumes" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["segment", "--help"])
    text = capsys.readouterr().out
    assert all(flag in text for flag in ("--slice-box", "--click", "--negative-click", "--engine"))
