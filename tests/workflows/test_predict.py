"""`mmfm predict` and `mmfm.load_trained`: a trained run applied to new files, outputs on each input's own grid."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import mmfm
from mmfm.cli.main import main
from mmfm.data import spec
from mmfm.workflows.predict import Preprocessing, segment_grid

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from userdata import write_labelled_folder, write_nifti_seg_folder  # noqa: E402

FAST = ["train.max_steps=3", "train.batch_size=2", "train.ckpt_every=3", "train.progress=false"]


@pytest.fixture(autouse=True)
def _fresh_scans():
    spec._LOADED.clear()
    yield
    spec._LOADED.clear()


class Threshold(torch.nn.Module):
    """A 'segmenter' whose foreground is where the preprocessed intensity exceeds 0.5: its mask is known."""

    num_classes = 2

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([0.5 - x, x - 0.5], dim=1) * 20


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.mark.parametrize("patch", [[16, 16, 16], []])
def test_probabilities_come_back_onto_an_anisotropic_flipped_grid(patch):
    """Resampled to 2 mm (sliding windows or a resize to the training grid) and back: the known mask is found on
    the input's voxels, so axes, flips and offsets survive the round trip."""
    shape = (30, 26, 14)
    affine = np.array([[-1.2, 0, 0, 40.0], [0, 1.5, 0, -20.0], [0, 0, 3.0, 7.0], [0, 0, 0, 1]])
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"))
    ball = ((grid - np.array([18, 10, 8])[:, None, None, None]) ** 2 / np.array([36, 25, 6])[:, None, None, None]
            ).sum(0) < 1
    img = ball[None].astype(np.float32)
    prep = Preprocessing(3, 1, [16, 16, 16], patch, [2.0, 2.0, 2.0])
    aff = np.eye(4)
    aff[:3, :3], aff[:3, 3] = affine[:3, :3], affine[:3, 3]
    probs = segment_grid(Threshold(), img, aff, prep)
    assert probs.shape == (2, *shape) and np.allclose(probs.sum(0), 1, atol=1e-4)
    assert _dice(probs.argmax(0) == 1, ball) > (0.85 if patch else 0.6)


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("seg")
    spec._LOADED.clear()
    root = write_nifti_seg_folder(tmp / "msd", n=6)
    run = tmp / "run"
    assert main(["train", "configs/segmentation_3d.yaml", "data.dataset=MSD", f"data.root={root}",
                 "data.options={modality: CT}", "data.spacing=[2,2,2]", "data.patch=[16,16,16]",
                 "task={name: segmentation, num_classes: 2}", "encoder.name=vit_micro", f"out={run}", *FAST]) == 0
    return root, run


def test_predict_writes_masks_on_each_inputs_grid_for_nifti_and_nrrd(seg_run, tmp_path, capsys):
    import SimpleITK as sitk

    root, run = seg_run
    nii = root / "imagesTr" / "case00_0000.nii.gz"
    nrrd = tmp_path / "scan.nrrd"
    src = sitk.ReadImage(str(root / "imagesTr" / "case01_0000.nii.gz"))
    sitk.WriteImage(src, str(nrrd))
    out = tmp_path / "pred"
    assert main(["predict", str(run), str(nii), str(nrrd), "--out", str(out), "--quiet"]) == 0
    rec = json.loads((out / "predict.json").read_text())
    assert rec["written_by"] == "mmfm predict" and rec["task"] == "segmentation"
    assert [c["case"] for c in rec["cases"]] == ["case00_0000", "scan"]
    assert rec["preprocessing"]["spacing"] == [2.0, 2.0, 2.0] and rec["preprocessing"]["modality"] == "CT"
    ref = nib.load(nii)
    got = nib.load(out / "case00_0000_seg.nii.gz")
    assert got.shape == ref.shape and np.allclose(got.affine, ref.affine)
    assert set(np.unique(np.asarray(got.dataobj))) <= {0, 1}
    got2 = nib.load(out / "scan_seg.nii.gz")
    assert got2.shape == tuple(src.GetSize())                      # NRRD's (i, j, k) grid
    assert np.allclose(np.abs(np.diag(got2.affine))[:3], src.GetSpacing())
    # the same prediction through the Python API, from an array and its affine
    model = mmfm.load_trained(run)
    r = model.predict(np.asarray(ref.dataobj, np.float32), affine=ref.affine)
    assert np.array_equal(r["mask"], np.asarray(got.dataobj)) and r["empty"] == rec["cases"][0]["empty"]
    # a second run into the same folder: refused without --overwrite, done with it
    capsys.readouterr()
    assert main(["predict", str(run), str(nii), "--out", str(out), "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["predict", str(run), str(nii), "--out", str(out), "--quiet", "--overwrite"]) == 0


def test_predict_refuses_bad_input_with_one_line_and_exit_2(seg_run, tmp_path, capsys):
    from PIL import Image

    root, run = seg_run
    nii = root / "imagesTr" / "case00_0000.nii.gz"
    png = tmp_path / "slice.png"
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(png)
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not a nifti file")
    foreign = tmp_path / "theirs"
    foreign.mkdir()
    (foreign / "case00_0000_seg.nii.gz").write_bytes(b"someone else's mask")
    cases = {"2D": ([str(run), str(png)], "3D"), "unreadable": ([str(run), str(bad)], "broken.nii.gz"),
             "not a run": ([str(root), str(nii)], "not a finished training run"),
             "missing": ([str(run), str(tmp_path / "nope.nii.gz")], "not found")}
    for what, (args, needle) in cases.items():
        assert main(["predict", *args, "--out", str(tmp_path / what), "--quiet"]) == 2, what
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err and err.startswith("mmfm: error:"), (what, err)
        assert not (tmp_path / what / "predict.json").exists()
    assert main(["predict", str(run), str(nii), "--out", str(foreign), "--overwrite", "--quiet"]) == 2
    assert "not written by mmfm predict" in capsys.readouterr().err
    assert (foreign / "case00_0000_seg.nii.gz").read_bytes() == b"someone else's mask"


def test_predict_refuses_a_pretraining_run(tmp_path, capsys):
    lab = write_labelled_folder(tmp_path / "lab", n_per_class=4, size=16)
    pre = tmp_path / "pre"
    assert main(["pretrain", "configs/pretrain/mae_2d.yaml", "data.dataset=folder", f"data.root={lab}",
                 "data.size=[16,16]", "encoder.name=vit_micro", "encoder.patch_size=4", f"out={pre}", *FAST]) == 0
    capsys.readouterr()
    png = next((lab / "images").glob("*.png"))
    assert main(["predict", str(pre), str(png), "--out", str(tmp_path / "p")]) == 2
    assert "mmfm predict does not apply" in capsys.readouterr().err


def test_predict_classification_writes_calibrated_probabilities(tmp_path):
    lab = write_labelled_folder(tmp_path / "lab", n_per_class=8, size=16)
    run = tmp_path / "cls"
    assert main(["train", "configs/quickstart_classification.yaml", "data.dataset=folder", f"data.root={lab}",
                 "data.size=[16,16]", "encoder.name=vit_micro", "encoder.patch_size=4", f"out={run}", *FAST]) == 0
    temperature = json.loads((run / "calibration.json").read_text())["temperature"]
    pngs = sorted((lab / "images").glob("*.png"))[:3]
    out = tmp_path / "pred"
    assert main(["predict", str(run), *map(str, pngs), "--out", str(out), "--quiet"]) == 0
    rec = json.loads((out / "predict.json").read_text())
    assert rec["temperature"] == pytest.approx(temperature)
    rows = (out / "predictions.csv").read_text().splitlines()
    assert rows[0] == "case,predicted,p_class0,p_class1" and len(rows) == 4
    cases = json.loads((out / "predictions.json").read_text())
    model = mmfm.load_trained(run)
    x = model._tensor(model.read(pngs[0]), None)
    with torch.no_grad():
        expect = (model.model.logits(x) / temperature).softmax(-1)[0].numpy()
    got = np.array([cases[0]["probabilities"][n] for n in ("class0", "class1")])
    assert np.allclose(got, expect, atol=1e-5) and got.sum() == pytest.approx(1.0, abs=1e-5)


def test_segment_and_serve_apply_a_trained_segmenter(seg_run, tmp_path, capsys):
    from fastapi.testclient import TestClient

    from mmfm.app.server import create_app

    root, run = seg_run
    nii = root / "imagesTr" / "case02_0000.nii.gz"
    ref = nib.load(nii)
    out = tmp_path / "mask.nii.gz"
    assert main(["segment", str(nii), "--model", str(run), "--out", str(out)]) == 0
    assert nib.load(out).shape == ref.shape and np.allclose(nib.load(out).affine, ref.affine)
    assert json.loads((tmp_path / "mask.json").read_text())["model"]["task"] == "segmentation"
    assert main(["segment", str(nii), "--model", str(run), "--box", "1", "1", "5", "5", "--out",
                 str(tmp_path / "m2.nii.gz")]) == 2
    assert "takes no prompt" in capsys.readouterr().err
    with TestClient(create_app(["litemedsam", str(run)]), base_url="http://127.0.0.1") as c:   # loopback only
        kinds = {m["kind"] for m in c.get("/api/models").json()["models"]}
        assert "segmenter" in kinds
        sid = c.post("/api/upload", content=nii.read_bytes(), headers={"X-Filename": nii.name}).json()["id"]
        r = c.post(f"/api/predict/{sid}", json={})
        assert r.status_code == 200 and r.json()["empty"] == (r.json()["foreground"] == 0)
        served = c.get(f"/api/mask/{sid}")
        assert served.status_code == 200
        (tmp_path / "served.nii.gz").write_bytes(served.content)
        served_mask = np.asarray(nib.load(tmp_path / "served.nii.gz").dataobj)
        assert np.array_equal(served_mask, np.asarray(nib.load(out).dataobj))
        assert c.get(f"/api/maskslice/{sid}", params={"k": 3}).headers["content-type"] == "image/png"
        assert c.post(f"/api/predict/{sid}", json={"model": "x", "extra": 1}).status_code == 400
