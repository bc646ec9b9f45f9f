"""`mmfm predict` with a detection run trained on a COCO-style folder (PNG images + annotations.json): boxes for
PNG and NIfTI inputs in voxel and world coordinates, and a 2D run on a volume detecting slice by slice, each
slice's boxes the same as for that slice given alone."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from mmfm.cli.main import main
from mmfm.data import spec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tasks"))
from test_detection import _coco_folder  # noqa: E402


@pytest.fixture(scope="module")
def detection_run(tmp_path_factory):
    spec._LOADED.clear()
    root = tmp_path_factory.mktemp("coco")
    _coco_folder(root / "coco", n=12)
    out = root / "run"
    assert main(["train", "configs/detection_2d.yaml", "data.dataset=coco_boxes", f"data.root={root / 'coco'}",
                 "data.options={image_dir: imgs}", "data.size=[32,32]", "encoder.name=vit_micro",
                 "encoder.patch_size=4", "train.max_steps=2", "train.batch_size=4", "train.progress=false",
                 "data.eval_splits=[test]", f"out={out}"]) == 0
    return root


def _boxes(folder: Path) -> list[dict]:
    return [b for c in json.loads((folder / "detections.json").read_text()) for b in c["boxes"]]


def test_detection_run_predicts_boxes_on_png_nifti_and_volumes(detection_run, tmp_path):
    root = detection_run
    pngs = [root / "coco" / "imgs" / f"im{i:02d}.png" for i in range(3)]
    planes = [np.asarray(Image.open(p)).T.astype(np.float32) for p in pngs]     # (i = column, j = row)
    aff = np.diag([0.8, 0.7, 2.5, 1.0])
    aff[:3, 3] = [-10.0, 5.0, 30.0]
    nib.save(nib.Nifti1Image(planes[2], aff), tmp_path / "slice.nii.gz")
    nib.save(nib.Nifti1Image(np.stack(planes, -1), aff), tmp_path / "vol.nii.gz")

    assert main(["predict", str(root / "run"), str(pngs[2]), "--out", str(tmp_path / "png")]) == 0
    assert main(["predict", str(root / "run"), str(tmp_path / "slice.nii.gz"), "--out", str(tmp_path / "nii")]) == 0
    assert main(["predict", str(root / "run"), str(tmp_path / "vol.nii.gz"), "--out", str(tmp_path / "vol")]) == 0

    png, nii, vol = _boxes(tmp_path / "png"), _boxes(tmp_path / "nii"), _boxes(tmp_path / "vol")
    assert png and [b["voxel"] for b in png] == [b["voxel"] for b in nii]    # same pixels, same boxes
    for b in nii:                                  # inside the 48 x 40 image; world = affine at the edges
        i0, j0, i1, j1 = b["voxel"]
        assert 0 <= i0 < i1 <= 48 and 0 <= j0 < j1 <= 40 and b["label"] == "lesion"
        assert np.allclose(b["world_mm"][:2], [0.8 * (i0 - 0.5) - 10, 0.7 * (j0 - 0.5) + 5], atol=0.02)
    on_slice_2 = [b for b in vol if b["slice"] == 2]
    assert [b["voxel"][:2] + b["voxel"][3:5] for b in on_slice_2] == [b["voxel"] for b in nii]
    assert all(b["voxel"][2] == b["slice"] and b["voxel"][5] == b["slice"] + 1 for b in vol)
    assert all(np.isclose(b["world_mm"][2], 2.5 * (b["slice"] - 0.5) + 30, atol=0.02) for b in vol)
    rows = list(csv.reader((tmp_path / "vol" / "detections.csv").open()))
    assert rows[0][:3] == ["case", "label", "score"] and len(rows) == len(vol) + 1
