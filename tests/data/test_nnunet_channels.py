"""Multi-channel nnU-Net cases (issue 32): ``imagesTr/<case>_0000``, ``_0001``, ... are one image of several
channels, named by ``dataset.json`` (``channel_names``, nnU-Net v2, which lists no ``training`` cases), read from
real NIfTI files on disk; a missing channel or a channel count the JSON does not declare is a clear error."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mmfm.data.catalog import load_dataset
from mmfm.data.spec import labelled
from mmfm.errors import InputFileError
from mmfm.workflows.config import DataConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from userdata import write_nifti_seg_folder  # noqa: E402


def two_channel_folder(root: Path, n: int = 3) -> Path:
    """nnU-Net v2 layout: channel 0 as written by write_nifti_seg_folder, channel 1 = 1000 + 10 x channel 0."""
    write_nifti_seg_folder(root, n=n)
    for img in sorted((root / "imagesTr").glob("*_0000.nii.gz")):
        ch0 = nib.load(img)
        nib.save(nib.Nifti1Image(1000 + 10 * np.asarray(ch0.dataobj, np.float32), ch0.affine),
                 img.parent / img.name.replace("_0000", "_0001"))
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T2", "1": "ADC"},
                                                   "labels": {"background": 0, "lesion": 1},
                                                   "numTraining": n, "file_ending": ".nii.gz"}))
    return root


def test_channels_of_a_case_are_one_image_in_order(tmp_path):
    root = two_channel_folder(tmp_path / "ds")
    samples = load_dataset("MSD", root, modality="MR")
    assert len(samples) == 3 and [r["case"] for r in samples.records] == ["case00", "case01", "case02"]
    s = samples[1]
    img = next(iter(s["images"].values()))
    ch0 = np.asarray(nib.load(root / "imagesTr" / "case01_0000.nii.gz").dataobj, np.float32)
    assert img.array.shape == (2, *ch0.shape)
    assert np.allclose(img.array[0], ch0) and np.allclose(img.array[1], 1000 + 10 * ch0)
    assert img.meta["channels"] == ["T2", "ADC"]
    want = np.asarray(nib.load(root / "labelsTr" / "case01.nii.gz").dataobj)
    assert s["mask"].sum() == want.sum() > 0


def test_training_items_have_both_channels(tmp_path):
    root = two_channel_folder(tmp_path / "ds")
    cfg = DataConfig(dataset="MSD", root=str(root), options={"modality": "MR"}, size=[16, 16, 8])
    ds, _ = labelled(cfg, "train", "segmentation", train=True)
    item = ds[0]
    assert item["image"].shape == (2, 16, 16, 8) and item["mask"].shape == (1, 16, 16, 8)


def test_a_missing_channel_file_is_named(tmp_path):
    root = two_channel_folder(tmp_path / "ds")
    (root / "imagesTr" / "case02_0000.nii.gz").unlink()
    with pytest.raises(InputFileError, match="case02 lacks channel file.*case02_0000"):
        load_dataset("MSD", root, modality="MR")


def test_channel_count_must_match_dataset_json(tmp_path):
    root = two_channel_folder(tmp_path / "ds")
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T2", "1": "ADC", "2": "DWI"},
                                                   "labels": {"background": 0, "lesion": 1}}))
    with pytest.raises(InputFileError, match="names 3 channels .*cases have 2"):
        load_dataset("MSD", root, modality="MR")


def test_channels_off_one_grid_are_refused(tmp_path):
    root = two_channel_folder(tmp_path / "ds")
    f = root / "imagesTr" / "case00_0001.nii.gz"
    im = nib.load(f)
    nib.save(nib.Nifti1Image(np.asarray(im.dataobj)[:-2], im.affine), f)
    samples = load_dataset("MSD", root, modality="MR")
    with pytest.raises(InputFileError, match="not on the grid of case00_0000"):
        samples[0]


def test_single_channel_v2_folder_reads_as_before(tmp_path):
    root = write_nifti_seg_folder(tmp_path / "ds")
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0}}))
    samples = load_dataset("MSD", root)
    assert len(samples) == 4 and "channel_files" not in samples.records[0]
    assert next(iter(samples[0]["images"].values())).array.shape[0] == 1
