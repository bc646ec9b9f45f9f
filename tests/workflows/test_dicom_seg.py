"""DICOM outputs: a SEG and an RTSTRUCT on a CT series, read back with highdicom / rt-utils and compared voxel by
voxel with the source pixels and with the NIfTI result; validated by dciodvfy (dicom3tools); no optional PHI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut

from mmfm.cli.main import main
from mmfm.data.io.dicom import read_dicom_series
from mmfm.data.io.dicom_seg import dicom_sources, property_codes, write_rtstruct, write_seg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from userdata import write_nifti_seg_folder  # noqa: E402

FAST = ["train.max_steps=3", "train.batch_size=2", "train.ckpt_every=3", "train.progress=false"]


def write_series(src: str, folder: Path, n: int = 4, step: float = 2.5) -> list[Path]:
    """``n`` distinct slices (the source shifted by 7 columns per slice) of one series; file names run against the
    slice positions, so an order taken from the names would be wrong. Returns the files in position order."""
    folder.mkdir(parents=True, exist_ok=True)
    series, files = pydicom.uid.generate_uid(), []
    for k in range(n):
        ds = pydicom.dcmread(src)
        ds.PixelData = np.roll(ds.pixel_array, 7 * k, axis=1).tobytes()
        ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], float(ds.ImagePositionPatient[2]) + k * step]
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series, pydicom.uid.generate_uid()
        ds.PatientAge, ds.PatientWeight = "042Y", 71.5            # optional PHI: must not reach the outputs
        files.append(folder / f"slice_{n - 1 - k}.dcm")
        ds.save_as(files[-1])
    return files


def dciodvfy_errors(path: Path) -> list[str]:
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy not installed (Debian dicom3tools; make setup installs it)")
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


@pytest.fixture()
def series(tmp_path, dicom_path):
    files = write_series(dicom_path("CT_small.dcm"), tmp_path / "series")
    img = read_dicom_series(tmp_path / "series")
    hu = img.array[0]                                                   # (I, J, K)
    labels = np.zeros(hu.shape, np.uint8)
    labels[hu > np.percentile(hu, 60)] = 1
    labels[hu > np.percentile(hu, 93)] = 2
    labels[:, :, 0] = 0                                                 # an empty slice
    return tmp_path / "series", files, labels


def test_seg_frames_line_up_with_the_source_pixels_and_pass_dciodvfy(series, tmp_path):
    folder, files, labels = series
    sources = dicom_sources(folder)
    assert [s.SOPInstanceUID for s in sources] == [pydicom.dcmread(f).SOPInstanceUID for f in files]
    write_seg(tmp_path / "seg.dcm", labels, {1: "liver", 2: "liver tumour"}, sources, "litemedsam", "mmfm test")
    assert dciodvfy_errors(tmp_path / "seg.dcm") == []
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    assert seg.SegmentationType == "BINARY" and seg.StudyInstanceUID == sources[0].StudyInstanceUID
    assert seg.PatientID == sources[0].PatientID                        # required to file it with the study
    for tag in ("PatientAge", "PatientWeight", "OtherPatientIDsSequence", "StudyDescription", "InstitutionName"):
        assert tag not in seg
    liver, tumour = seg.get_segment_description(1), seg.get_segment_description(2)
    assert (liver.segment_label, liver.segmented_property_type.value) == ("liver", "10200004")
    assert (tumour.segmented_property_type.value, tumour.segmented_property_category.value) == ("108369006",
                                                                                                "49755003")
    # each source file's own pixels, thresholded as the label map was, against the SEG frames that reference it
    lo, hi = np.percentile(read_dicom_series(folder).array, [60, 93])
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f)
        hu = apply_modality_lut(ds.pixel_array, ds)                     # (rows, columns), as stored
        px = seg.get_pixels_by_source_instance([ds.SOPInstanceUID], segment_numbers=[1, 2])[0]
        if k == 0:
            assert not px.any()
            continue
        assert np.array_equal(px[..., 1], hu > hi)
        assert np.array_equal(px[..., 0], (hu > lo) & ~(hu > hi))


def test_rtstruct_contours_fill_back_to_the_mask_and_pass_dciodvfy(series, tmp_path):
    from rt_utils import RTStructBuilder

    folder, _, labels = series
    target = tmp_path / "organs.rtstruct.dcm"
    write_rtstruct(target, labels, {1: "liver", 2: "tumour"}, dicom_sources(folder))
    assert dciodvfy_errors(target) == []
    ds = pydicom.dcmread(target)
    assert "PatientAge" not in ds and "PatientWeight" not in ds and ds.Modality == "RTSTRUCT"
    rt = RTStructBuilder.create_from(str(folder), str(target))
    assert rt.get_roi_names() == ["liver", "tumour"]
    for value, name in ((1, "liver"), (2, "tumour")):
        got = rt.get_roi_mask_by_name(name)                             # (rows, columns, K) in position order
        want = np.transpose(labels == value, (1, 0, 2))
        assert 2 * (got & want).sum() / (got.sum() + want.sum()) > 0.9  # a contour's polygon vs its pixels


def test_property_codes_name_known_organs_and_fall_back_to_tissue():
    assert property_codes("Liver")[1].value == "10200004"
    assert property_codes("left_kidney")[1].value == "64033007"
    assert property_codes("liver tumour")[1].value == "108369006"
    assert property_codes("thing")[1].value == "85756007"


def test_segment_writes_a_seg_of_two_structures_on_a_dicom_file_that_matches_its_nifti(tmp_path, dicom_path,
                                                                                         capsys):
    src = dicom_path("CT_small.dcm")
    prompts = ["--box", "20", "20", "70", "70", "--label", "liver", "--box", "60", "50", "100", "90", "--label",
               "spleen", "--quiet"]
    assert main(["segment", src, *prompts, "--out", str(tmp_path / "organs.nii.gz")]) == 0
    assert main(["segment", src, *prompts, "--out", str(tmp_path / "organs_seg.dcm")]) == 0
    rec = json.loads((tmp_path / "organs_seg.json").read_text())
    assert rec["labels"] == {"1": "liver", "2": "spleen"} and rec["mask"]["format"] == "SEG"
    labels = np.asarray(nib.load(tmp_path / "organs.nii.gz").dataobj)  # (I, J)
    assert set(np.unique(labels)) == {0, 1, 2}
    assert dciodvfy_errors(tmp_path / "organs_seg.dcm") == []
    seg = hd.seg.segread(tmp_path / "organs_seg.dcm")
    assert [seg.get_segment_description(i).segment_label for i in (1, 2)] == ["liver", "spleen"]
    px = seg.get_pixels_by_source_instance([pydicom.dcmread(src).SOPInstanceUID], segment_numbers=[1, 2])[0]
    for value in (1, 2):
        assert np.array_equal(px[..., value - 1], (labels == value).T)
    out = capsys.readouterr().out
    assert "1 = liver" in out and "2 = spleen" in out


@pytest.mark.slow
def test_segment_writes_seg_and_rtstruct_of_a_series_that_match_its_nifti(series, tmp_path):
    folder, files, _ = series
    prompts = ["--slice", "2", "--box", "20", "20", "70", "70", "--label", "liver", "--box", "60", "50", "100",
               "90", "--label", "spleen", "--modality", "CT", "--quiet"]
    for out in ("organs.nii.gz", "organs_seg.dcm", "organs_rt.rtstruct.dcm"):
        assert main(["segment", str(folder), *prompts, "--out", str(tmp_path / out)]) == 0
    assert json.loads((tmp_path / "organs_rt.json").read_text())["mask"]["format"] == "RTSTRUCT"
    labels = np.asarray(nib.load(tmp_path / "organs.nii.gz").dataobj)  # (I, J, K) in position order
    assert dciodvfy_errors(tmp_path / "organs_seg.dcm") == []
    assert dciodvfy_errors(tmp_path / "organs_rt.rtstruct.dcm") == []
    seg = hd.seg.segread(tmp_path / "organs_seg.dcm")
    uids = [pydicom.dcmread(f).SOPInstanceUID for f in files]
    px = seg.get_pixels_by_source_instance(uids, segment_numbers=[1, 2])  # (K, rows, columns, 2)
    for value in (1, 2):
        assert np.array_equal(px[..., value - 1], np.transpose(labels == value, (2, 1, 0)))


def test_a_dcm_out_for_non_dicom_input_is_refused(tmp_path, capsys):
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 3), np.float32), np.eye(4)), tmp_path / "ct.nii.gz")
    assert main(["segment", str(tmp_path / "ct.nii.gz"), "--slice", "1", "--box", "1", "1", "5", "5",
                 "--out", str(tmp_path / "mask.dcm")]) == 2
    assert "references DICOM source images" in capsys.readouterr().err
    assert not (tmp_path / "mask.dcm").exists()


def test_predict_format_dcm_writes_a_seg_equal_to_its_nifti(series, tmp_path, capsys):
    folder, files, _ = series
    root = write_nifti_seg_folder(tmp_path / "msd", n=4)
    run = tmp_path / "run"
    assert main(["train", "configs/segmentation_3d.yaml", "data.dataset=MSD", f"data.root={root}",
                 "data.options={modality: CT}", "data.spacing=[2,2,2]", "data.patch=[16,16,16]",
                 "task={name: segmentation, num_classes: 2}", "encoder.name=vit_micro", f"out={run}", *FAST]) == 0
    assert main(["predict", str(run), str(folder), "--out", str(tmp_path / "nii"), "--quiet"]) == 0
    assert main(["predict", str(run), str(folder), "--out", str(tmp_path / "dcm"), "--format", "dcm",
                 "--quiet"]) == 0
    labels = np.asarray(nib.load(tmp_path / "nii" / "series_seg.nii.gz").dataobj)
    seg = hd.seg.segread(tmp_path / "dcm" / "series_seg.dcm")
    assert dciodvfy_errors(tmp_path / "dcm" / "series_seg.dcm") == []
    uids = [pydicom.dcmread(f).SOPInstanceUID for f in files]
    px = seg.get_pixels_by_source_instance(uids, segment_numbers=[1])[..., 0]
    assert np.array_equal(px, np.transpose(labels == 1, (2, 1, 0)))
    nii = tmp_path / "msd" / "imagesTr" / "case00_0000.nii.gz"
    capsys.readouterr()
    assert main(["predict", str(run), str(nii), "--out", str(tmp_path / "x"), "--format", "dcm"]) == 2
    assert "not DICOM" in capsys.readouterr().err


def test_sources_take_instance_uids_from_the_meta_header_and_refuse_a_series_without_study_uids(series, tmp_path,
                                                                                                   capsys):
    """An anonymiser that empties the dataset's SOP Class/Instance UIDs leaves them in the file meta header (the
    same values by the standard): the SEG references those. A series without Study/Series Instance UIDs cannot be
    referenced: `mmfm segment --out x.dcm` says so in one line before running the model, and writes nothing."""
    folder, _, labels = series
    uids = [pydicom.dcmread(f).SOPInstanceUID for f in sorted(folder.iterdir())]
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID          # as a real file's meta header
        ds.SOPClassUID, ds.SOPInstanceUID = "", ""
        ds.save_as(f)
    sources = dicom_sources(folder)
    assert sorted(str(ds.SOPInstanceUID) for ds in sources) == sorted(uids)
    write_seg(tmp_path / "a.dcm", labels, {1: "liver", 2: "bone"}, sources, "test", "mmfm test")
    refs = {str(r.ReferencedSOPInstanceUID) for f in hd.seg.segread(tmp_path / "a.dcm").PerFrameFunctionalGroupsSequence
            for r in f.DerivationImageSequence[0].SourceImageSequence}
    assert refs <= set(uids) and refs
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        ds.StudyInstanceUID = ""
        ds.save_as(f)
    out = tmp_path / "b.dcm"
    assert main(["segment", str(folder), "--slice", "1", "--box", "10", "10", "60", "60", "--out", str(out),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "StudyInstanceUID" in err and "nii.gz" in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob("b*"))
