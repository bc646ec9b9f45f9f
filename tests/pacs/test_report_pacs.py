"""Classification results as a DICOM SR (TID 1500): `mmfm predict --format dcm` on a series URL of the test PACS
writes a report per input that dciodvfy finds no error in, whose probabilities are those of predictions.json, and that
`--store URL` stores into the image's study, where QIDO-RS finds it as an SR series."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pydicom
import pytest

from mmfm.cli.main import main
from mmfm.data.io.dicom_sr import read_classification_sr
from mmfm.data.io.dicomweb import DicomwebClient, parse_url
from tests.pacs.test_dicomweb import _first
from tests.workflows.test_dicom_seg import dciodvfy_errors

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from userdata import write_labelled_folder  # noqa: E402

FAST = ["train.max_steps=3", "train.batch_size=2", "train.ckpt_every=3", "train.progress=false"]


def test_a_classification_sr_of_a_pacs_series_is_valid_and_stored_into_its_study(pacs, pacs_login, tmp_path, capsys):
    lab = write_labelled_folder(tmp_path / "lab", n_per_class=8, size=16)
    run = tmp_path / "cls"
    assert main(["train", "configs/quickstart_classification.yaml", "data.dataset=folder", f"data.root={lab}",
                 "data.size=[16,16]", "encoder.name=vit_micro", "encoder.patch_size=4", f"out={run}", *FAST]) == 0
    src = _first(pacs.single)
    out = tmp_path / "pred"
    assert main(["predict", str(run), pacs.url(src), "--out", str(out), "--format", "dcm", "--quiet",
                 "--store", pacs.root]) == 0
    stored = re.search(r"stored SR in study (\S+): series (\S+), instance (\S+)", capsys.readouterr().out)
    case = json.loads((out / "predictions.json").read_text())[0]
    assert case["case"] == src.SOPInstanceUID                             # the series' one instance, by its UID
    report = out / case["report"]
    assert dciodvfy_errors(report) == []
    assert read_classification_sr(report) == pytest.approx(case["probabilities"], abs=1e-6)
    sr = pydicom.dcmread(report)
    assert sr.Modality == "SR" and sr.StudyInstanceUID == src.StudyInstanceUID and "PatientAge" not in sr
    params = sr.ContentSequence[-1].ContentSequence                       # the measurement group
    assert any("sha256:" in str(item.get("TextValue", "")) for p in params for item in p.get("ContentSequence", []))
    assert stored and stored.groups() == (src.StudyInstanceUID, sr.SeriesInstanceUID, sr.SOPInstanceUID)
    found = DicomwebClient(parse_url(pacs.root)).search_series(src.StudyInstanceUID,
                                                               {"SeriesInstanceUID": sr.SeriesInstanceUID})
    assert found[0]["00080060"]["Value"] == ["SR"]
    assert main(["predict", str(run), pacs.url(src), "--out", str(tmp_path / "p2"), "--store", pacs.root]) == 2
    assert "add --format dcm" in capsys.readouterr().err
    assert main(["explain", pacs.url(src), "--model", str(run), "--out", str(tmp_path / "why")]) == 0
    assert json.loads((tmp_path / "why" / "explain.json").read_text())["maps"]          # read from the PACS URL
