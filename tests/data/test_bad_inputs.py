"""Every bad input of the core issue gives a typed error that names the file and the problem."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from PIL import Image as PILImage

from mmfm.data.catalog import load_dataset
from mmfm.data.io import read_image
from mmfm.data.io.reports import read_csv_reports, read_text_report
from mmfm.data.modality import canonical_modality
from mmfm.data.sample import Ids, Image, Report, make_sample
from mmfm.engine.checkpoint import load_checkpoint, save_checkpoint
from mmfm.errors import CheckpointError, InputFileError, SampleError, UnknownNameError


def _nifti(path, data=None):
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32) if data is None else data, np.eye(4)), path)
    return path


def _truncate(src, dst, keep: float = 0.5):
    b = open(src, "rb").read()
    open(dst, "wb").write(b[: int(len(b) * keep)])
    return dst


def test_missing_file(tmp_path):
    with pytest.raises(InputFileError, match="file not found") as e:
        read_image(tmp_path / "nope.nii.gz")
    assert "nope.nii.gz" in str(e.value)


@pytest.mark.parametrize("name", ["empty.dcm", "empty.nii.gz", "empty.png"])
def test_zero_byte_files(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(InputFileError, match="empty"):
        read_image(tmp_path / name)


def test_truncated_dicom(tmp_path, dicom_path):
    p = _truncate(dicom_path("CT_small.dcm"), tmp_path / "cut.dcm", 0.6)
    with pytest.raises(InputFileError, match="cut.dcm") as e:
        read_image(p)
    assert "truncated" in str(e.value) or "decode" in str(e.value)


def test_truncated_nifti_and_png(tmp_path):
    big = _nifti(tmp_path / "big.nii.gz", np.random.default_rng(0).normal(size=(40, 40, 40)).astype(np.float32))
    with pytest.raises(InputFileError, match="NIfTI"):
        read_image(_truncate(big, tmp_path / "cut.nii.gz"))
    png = tmp_path / "a.png"
    PILImage.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(png)
    with pytest.raises(InputFileError, match="truncated or corrupt"):
        read_image(_truncate(png, tmp_path / "cut.png"))


def test_not_a_dicom(tmp_path):
    p = tmp_path / "x.dcm"
    p.write_bytes(b"hello world" * 40)
    with pytest.raises(InputFileError, match="not a DICOM"):
        read_image(p)


def test_dicom_without_pixel_data(tmp_path, dicom_path):
    ds = pydicom.dcmread(dicom_path("CT_small.dcm"))
    del ds.PixelData
    p = tmp_path / "nopix.dcm"
    ds.save_as(p)
    with pytest.raises(InputFileError, match="no pixel data"):
        read_image(p)


def test_nan_and_inf_pixels(tmp_path):
    data = np.zeros((8, 8, 8), np.float32)
    data[1, 2, 3], data[4, 4, 4] = np.nan, np.inf
    img = read_image(_nifti(tmp_path / "nan.nii.gz", data), modality="CT")
    with pytest.raises(SampleError, match="2 NaN/Inf"):
        make_sample({"CT": img}, ids=Ids("nan"))


def test_mask_does_not_match_image():
    img = Image(np.zeros((1, 16, 16), np.float32), "CT")
    with pytest.raises(SampleError, match="does not match image grid"):
        make_sample({"CT": img}, mask=np.zeros((1, 16, 12), np.int64), ids=Ids("m"))


def test_wrong_dimensions():
    with pytest.raises(SampleError, match="expected"):
        make_sample({"CT": Image(np.zeros((16,), np.float32), "CT")}, ids=Ids("d"))


def test_empty_and_enormous_reports(tmp_path):
    (tmp_path / "empty.txt").write_text("   \n")
    with pytest.raises(InputFileError, match="empty"):
        read_text_report(tmp_path / "empty.txt")
    (tmp_path / "huge.txt").write_text("FINDINGS: " + "normal lungs. " * 20_000)
    with pytest.raises(InputFileError, match="characters"):
        read_text_report(tmp_path / "huge.txt")
    with pytest.raises(SampleError, match="empty"):
        make_sample(None, report=Report(text=""), ids=Ids("r"))
    (tmp_path / "r.csv").write_text("id,report\n1,FINDINGS: ok.\n2,\n")
    with pytest.raises(InputFileError, match="line 3"):
        list(read_csv_reports(tmp_path / "r.csv", text_column="report", id_column="id"))


def test_csv_row_pointing_at_missing_image(tmp_path):
    (tmp_path / "img").mkdir()
    PILImage.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "img" / "a.png")
    (tmp_path / "captions.csv").write_text("image,text\nimg/a.png,Normal.\nimg/missing.png,Effusion.\n")
    with pytest.raises(InputFileError, match="line 3: img/missing.png"):
        load_dataset("ROCO", tmp_path)


def test_unknown_modality_and_dataset():
    with pytest.raises(UnknownNameError, match="unknown modality"):
        canonical_modality("XRAYZ")
    with pytest.raises(UnknownNameError, match="did you mean MIMIC-CXR"):
        load_dataset("MIMIC-CXRR", ".")


def test_corrupt_and_mismatched_checkpoint(tmp_path):
    model = torch.nn.Linear(4, 2)
    ck = save_checkpoint(tmp_path / "ck", model, state={"step": 1})
    with pytest.raises(CheckpointError, match="does not match"):
        load_checkpoint(ck, torch.nn.Linear(4, 3))
    (ck / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(ck, model)
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(tmp_path / "nothing", model)
    (ck / "state.json").write_text("{broken")
    with pytest.raises(CheckpointError, match="corrupt state.json"):
        load_checkpoint(ck, model)


def test_cli_reports_bad_file_without_traceback(tmp_path):
    bad = tmp_path / "scan.dcm"
    bad.write_bytes(b"")
    r = subprocess.run([sys.executable, "-m", "mmfm.cli.main", "data", "inspect", str(bad)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "scan.dcm: file is empty" in r.stderr and "Traceback" not in r.stderr


def test_gzip_that_is_not_nifti(tmp_path):
    p = tmp_path / "fake.nii.gz"
    with gzip.open(p, "wb") as f:
        f.write(b"not a nifti header" * 30)
    with pytest.raises(InputFileError, match="NIfTI"):
        read_image(p)
    shutil.rmtree(tmp_path)
