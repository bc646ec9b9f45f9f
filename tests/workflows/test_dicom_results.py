"""Zero-shot and explanation results as DICOM, on local files: `mmfm predict CLIP_RUN --classes ... --format dcm`
writes an SR (TID 1500) whose probabilities are those of predictions.json, and `mmfm explain --format dcm` a
Parametric Map whose float pixels are the NIfTI map's, frame by frame in slice order, referencing the source
series; both dciodvfy-clean, without the source's optional PHI."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch

from mmfm.cli.main import main
from mmfm.data.io.dicom_pm import read_parametric_map, write_parametric_map
from mmfm.data.io.dicom_seg import dicom_sources
from mmfm.data.io.dicom_sr import read_classification_sr
from tests.workflows.test_dicom_seg import dciodvfy_errors, write_series


def write_tiny_clip(folder: Path) -> Path:
    """An image-text run folder (``dual/``) of a small random ViT + BERT pair, as `mmfm pretrain` saves one."""
    from mmfm.encoders import build_encoder
    from mmfm.encoders.dual import DualEncoder
    from mmfm.encoders.text import build_text_encoder
    from mmfm.workflows.towers import save_dual

    torch.manual_seed(0)
    dual = DualEncoder(build_encoder("vit_micro", spatial_dims=2, in_channels=1, patch_size=4),
                       build_text_encoder("bert_tiny"))
    dual.image.contract = {"shape": [1, 32, 32]}
    save_dual(dual, {"name": "vit_micro", "spatial_dims": 2, "in_channels": 1, "options": {"patch_size": 4}},
              {"name": "bert_tiny", "options": {}}, "clip", folder / "dual")
    return folder


def test_parametric_map_round_trips_float_values_in_slice_order(tmp_path, dicom_path):
    write_series(dicom_path("CT_small.dcm"), tmp_path / "s")            # file names run against the positions
    sources = dicom_sources(tmp_path / "s")
    values = np.random.default_rng(0).normal(size=(128, 128, 4)).astype(np.float32)
    pm = write_parametric_map(tmp_path / "pm.dcm", values, sources, "gradcam", "run:x", "mmfm 0")
    assert dciodvfy_errors(tmp_path / "pm.dcm") == []
    assert np.array_equal(read_parametric_map(tmp_path / "pm.dcm"), values)           # float32: no quantisation
    assert pm.ReferencedSeriesSequence[0].SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert pm.StudyInstanceUID == sources[0].StudyInstanceUID and "PatientAge" not in pm


def test_zero_shot_sr_and_text_map_of_a_dicom_image(tmp_path, dicom_path, capsys):
    clip, src = write_tiny_clip(tmp_path / "clip"), dicom_path("CT_small.dcm")
    out = tmp_path / "zs"
    assert main(["predict", str(clip), src, "--classes", "liver", "lung", "bone", "--templates", "a CT of {name}.",
                 "--out", str(out), "--format", "dcm", "--quiet"]) == 0
    case = json.loads((out / "predictions.json").read_text())[0]
    record = json.loads((out / "predict.json").read_text())
    assert record["task"] == "zeroshot" and record["prompts"]["lung"] == ["a CT of lung."]
    assert sum(case["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    report = out / case["report"]
    assert dciodvfy_errors(report) == []
    assert read_classification_sr(report) == pytest.approx(case["probabilities"], abs=1e-6)
    text = pydicom.dcmread(report).to_json()
    assert f"sha256:{record['checkpoint_sha256']}" in text and "prompt:a CT of {name}." in text
    why = tmp_path / "why"
    assert main(["explain", src, "--model", str(clip), "--text", "liver lesion", "--out", str(why),
                 "--format", "dcm"]) == 0
    rec = json.loads((why / "explain.json").read_text())
    assert rec["dicom"] == {"text": "text_map.dcm"}                     # the per-word maps stay NIfTI only
    assert dciodvfy_errors(why / "text_map.dcm") == []
    nifti = np.asarray(nib.load(why / "text.nii.gz").dataobj, np.float32)
    assert np.abs(read_parametric_map(why / "text_map.dcm") - nifti.squeeze()).max() < 1e-6
    capsys.readouterr()
    assert main(["predict", str(clip), src, "--out", str(tmp_path / "x")]) == 2
    assert "needs --classes" in capsys.readouterr().err
    assert main(["predict", str(why), src, "--classes", "a", "b", "--out", str(tmp_path / "x")]) == 2
    assert "not an image-text run" in capsys.readouterr().err
    assert main(["explain", str(why / "overlay.png"), "--model", str(clip), "--text", "liver", "--out",
                 str(tmp_path / "y"), "--format", "dcm"]) == 2
    assert "reference DICOM source images" in capsys.readouterr().err
    assert main(["explain", src, "--model", str(clip), "--text", "liver", "--out", str(tmp_path / "z"),
                 "--store", "dicomweb+http://127.0.0.1:9/dicom-web"]) == 2
    assert "add --format dcm" in capsys.readouterr().err
