"""Zero-shot and explanation results stored into a PACS study: `mmfm predict CLIP_RUN URL --classes ... --format dcm
--store URL` stores an SR whose probabilities are the command's JSON output, and `mmfm explain URL --format dcm
--store URL` on the 4-slice series a Parametric Map whose pixels are the saved NIfTI map and that references the
source series; QIDO-RS finds both in the image's study."""

from __future__ import annotations

import json
import re

import nibabel as nib
import numpy as np
import pydicom
import pytest

from mmfm.cli.main import main
from mmfm.data.io.dicom_pm import read_parametric_map
from mmfm.data.io.dicom_sr import read_classification_sr
from mmfm.data.io.dicomweb import DicomwebClient, parse_url
from tests.pacs.test_dicomweb import _first
from tests.workflows.test_dicom_results import write_tiny_clip
from tests.workflows.test_dicom_seg import dciodvfy_errors

STORED = r"stored (\S+) in study (\S+): series (\S+), instance (\S+)"


def _found(pacs, study: str, series: str) -> str:
    """The modality QIDO-RS reports for ``series`` of ``study``."""
    hits = DicomwebClient(parse_url(pacs.root)).search_series(study, {"SeriesInstanceUID": series})
    return hits[0]["00080060"]["Value"][0]


def test_zero_shot_sr_and_explanation_map_are_stored_into_the_study(pacs, pacs_login, tmp_path, capsys):
    clip = write_tiny_clip(tmp_path / "clip")
    src = _first(pacs.single)
    out = tmp_path / "zs"
    assert main(["predict", str(clip), pacs.url(src), "--classes", "liver", "lung", "--out", str(out),
                 "--format", "dcm", "--store", pacs.root, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    case = printed["cases"][0]
    report = out / case["report"]
    assert dciodvfy_errors(report) == []
    assert read_classification_sr(report) == pytest.approx(case["probabilities"], abs=1e-6)
    sr = pydicom.dcmread(report)
    assert sr.StudyInstanceUID == src.StudyInstanceUID and "PatientAge" not in sr
    assert [(s["study"], s["series"]) for s in printed["stored"]] == [(src.StudyInstanceUID, sr.SeriesInstanceUID)]
    assert _found(pacs, src.StudyInstanceUID, sr.SeriesInstanceUID) == "SR"

    volume = _first(pacs.series)
    why = tmp_path / "why"
    assert main(["explain", pacs.url(volume), "--model", str(clip), "--text", "liver lesion", "--out", str(why),
                 "--format", "dcm", "--store", pacs.root]) == 0
    stored = re.findall(STORED, capsys.readouterr().out)
    pm = pydicom.dcmread(why / "text_map.dcm")
    assert dciodvfy_errors(why / "text_map.dcm") == []
    assert pm.ReferencedSeriesSequence[0].SeriesInstanceUID == volume.SeriesInstanceUID
    nifti = np.asarray(nib.load(why / "text.nii.gz").dataobj, np.float32)        # (I, J, 4): the middle slice set
    back = read_parametric_map(why / "text_map.dcm")
    assert back.shape == nifti.shape == (128, 128, 4) and nifti.any() and np.abs(back - nifti).max() < 1e-6
    assert stored == [(pm.Modality, volume.StudyInstanceUID, pm.SeriesInstanceUID, pm.SOPInstanceUID)]
    assert _found(pacs, volume.StudyInstanceUID, pm.SeriesInstanceUID) == pm.Modality


def test_register_reads_series_urls_into_a_private_folder_removed_afterwards(pacs, pacs_login, tmp_path,
                                                                             monkeypatch, capsys):
    import tempfile

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    volume = _first(pacs.series)
    local = tmp_path / "local"
    assert main(["register", pacs.url(volume), str(pacs.series), "--out", str(local), "--mode", "affine",
                 "--iterations", "2", "--levels", "8", "--quiet"]) == 0
    remote = tmp_path / "remote"
    assert main(["register", pacs.url(volume), pacs.url(volume), "--out", str(remote), "--mode", "affine",
                 "--iterations", "2", "--levels", "8", "--quiet", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert rec["fixed"] == json.loads((local / "registration.json").read_text())["fixed"]   # the same series read
    assert rec["moving"]["shape"] == [128, 128, 4]
    assert list(scratch.iterdir()) == []                                 # the retrieved copies are gone
