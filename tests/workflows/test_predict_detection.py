"""`mmfm predict` on a trained detection run: boxes in the input's voxel coordinates and in world millimetres agree
through the input's affine, and the same scan at twice the resolution gives the same boxes in the world."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest

import mmfm
from mmfm.cli.main import main


@pytest.fixture(scope="module")
def det_run(tmp_path_factory):
    """A 2D RetinaNet trained 2 steps on mini's LiTS slices (tumours, mask value 2). Its scores stay near the focal
    prior (~0.01), so task.score_threshold=0.005 makes it report boxes."""
    run = tmp_path_factory.mktemp("det") / "run"
    assert main(["train", "configs/detection_2d.yaml", f"out={run}", "encoder.name=vit_micro", "data.size=[32,32]",
                 "train.max_steps=2", "train.batch_size=4", "train.progress=false", "data.eval_splits=[]",
                 "task.score_threshold=0.005"]) == 0
    return run


def _scans(tmp_path):
    """A CT slice (64 x 32 voxels, rotated, anisotropic, one axis flipped) and the same slice at twice the
    resolution (each voxel split into 2 x 2, the affine's voxel centres moved a quarter voxel inwards): the area
    resize to the 32 x 32 training grid gives both the same model input."""
    rng = np.random.default_rng(0)
    a = np.round(rng.normal(40, 30, (64, 32))).astype(np.float32)      # HU
    a[20:44, 8:20] = 180.0
    c, s = np.cos(0.5), np.sin(0.5)
    aff_a = np.array([[c * -0.8, -s * 1.4, 0, 100.0], [s * -0.8, c * 1.4, 0, -50.0], [0, 0, 5.0, 12.0],
                      [0, 0, 0, 1]])
    aff_b = aff_a.copy()
    aff_b[:3, :2] /= 2
    aff_b[:3, 3] = nib.affines.apply_affine(aff_a, [-0.25, -0.25, 0])
    paths = [tmp_path / "fine_a.nii.gz", tmp_path / "fine_b.nii.gz"]
    nib.save(nib.Nifti1Image(a, aff_a), paths[0])
    nib.save(nib.Nifti1Image(np.kron(a, np.ones((2, 2), np.float32)), aff_b), paths[1])
    return paths


@pytest.mark.realdata
def test_predicted_boxes_agree_in_voxels_and_world_through_the_affine(det_run, tmp_path):
    paths = _scans(tmp_path)
    out = tmp_path / "pred"
    assert main(["predict", str(det_run), *map(str, paths), "--out", str(out), "--modality", "CT", "--quiet"]) == 0
    cases = {c["case"]: c for c in json.loads((out / "detections.json").read_text())}
    assert json.loads((out / "predict.json").read_text())["cases"] == list(cases.values())
    assert set(cases) == {"fine_a", "fine_b"}
    for path in paths:
        nii = nib.load(path)
        boxes = cases[path.name.split(".")[0]]["boxes"]
        assert len(boxes) > 0
        for b in boxes:
            vox = np.asarray(b["voxel"]).reshape(2, 2)                    # min, max corner (voxel edges)
            assert (vox[0] <= vox[1]).all() and (vox >= 0).all() and (vox <= np.asarray(nii.shape) + 0.01).all()
            # the affine maps voxel centres: a box edge e lies at index e - 0.5
            world = nib.affines.apply_affine(nii.affine, np.c_[vox - 0.5, np.zeros(2)])
            assert np.allclose(np.asarray(b["world_mm"]).reshape(2, 3), world, atol=0.02)
            assert b["label"] == "2"                                      # task.classes [2]: the tumour mask value
    with open(out / "detections.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == sum(len(c["boxes"]) for c in cases.values())
    assert [float(v) for v in rows[0]["world_box_mm"].split()] == cases[rows[0]["case"]]["boxes"][0]["world_mm"]

    # the same scan at twice the resolution: twice the voxel coordinates, the same millimetres
    a, b = sorted(cases["fine_a"]["boxes"], key=lambda x: -x["score"]), cases["fine_b"]["boxes"]
    for box in a[:5]:
        twin = min(b, key=lambda x: abs(x["score"] - box["score"]) + np.abs(np.subtract(x["world_mm"],
                                                                                        box["world_mm"])).sum())
        assert abs(twin["score"] - box["score"]) < 1e-4
        assert np.allclose(twin["voxel"], 2 * np.asarray(box["voxel"]), atol=0.05)
        assert np.allclose(twin["world_mm"], box["world_mm"], atol=0.05)

    # the Python API gives the CLI's boxes for an array with the same affine
    api = mmfm.load_trained(det_run).predict(np.asarray(nib.load(paths[0]).dataobj), affine=nib.load(paths[0]).affine,
                                             modality="CT")
    assert api["boxes"] == cases["fine_a"]["boxes"]
