"""DICOM reading: geometry against pydicom, MONOCHROME1, VOI LUT, multi-frame, codecs, series, privacy."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from mmfm.data.io import read_image
from mmfm.data.io.dicom import read_dicom_file, read_dicom_series


def test_ct_geometry_matches_pydicom(dicom_path):
    p = dicom_path("CT_small.dcm")
    ds = pydicom.dcmread(p)
    img = read_image(p)
    assert img.modality == "CT" and img.array.shape == (1, ds.Columns, ds.Rows)
    # values are Hounsfield units: the modality LUT applied, transposed to (column, row) index order
    np.testing.assert_allclose(img.array[0], apply_modality_lut(ds.pixel_array, ds).T)
    ps = [float(v) for v in ds.PixelSpacing]
    assert img.spacing == pytest.approx((ps[1], ps[0]))
    iop = np.array(ds.ImageOrientationPatient, float)
    lps_to_ras = np.array([-1, -1, 1])
    np.testing.assert_allclose(img.affine[:3, 3], lps_to_ras * np.array(ds.ImagePositionPatient, float))
    np.testing.assert_allclose(img.affine[:3, 0], lps_to_ras * iop[:3] * ps[1])
    np.testing.assert_allclose(img.affine[:3, 1], lps_to_ras * iop[3:] * ps[0])
    # the world position of voxel (i=col 5, j=row 7) per DICOM PS3.3 C.7.6.2.1.1
    world_lps = np.array(ds.ImagePositionPatient, float) + 5 * ps[1] * iop[:3] + 7 * ps[0] * iop[3:]
    np.testing.assert_allclose((img.affine @ [5, 7, 0, 1])[:3], lps_to_ras * world_lps)


def test_monochrome1_is_inverted(dicom_path):
    p = dicom_path("RG1_UNCI.dcm")
    ds = pydicom.dcmread(p)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    raw = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds).astype(np.float32)
    img = read_image(p)
    np.testing.assert_allclose(img.array[0], (raw.max() + raw.min() - raw).T)
    assert img.modality == "XR"


def test_voi_lut_optional(dicom_path):
    p = dicom_path("MR_small.dcm")
    ds = pydicom.dcmread(p)
    plain = read_dicom_file(p, voi_lut=False).array[0]
    np.testing.assert_allclose(plain, apply_modality_lut(ds.pixel_array, ds).T)
    if "WindowCenter" in ds:
        windowed = read_dicom_file(p, voi_lut=True).array[0]
        np.testing.assert_allclose(windowed, apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds).T,
                                   rtol=1e-5)


def test_multiframe_puts_frames_last(dicom_path):
    p = dicom_path("emri_small.dcm")
    ds = pydicom.dcmread(p)
    img = read_image(p)
    assert img.array.shape == (1, ds.Columns, ds.Rows, int(ds.NumberOfFrames))
    np.testing.assert_allclose(img.array[0, :, :, 3], ds.pixel_array[3].T.astype(np.float32))


def test_colour_ultrasound_has_three_channels(dicom_path):
    img = read_image(dicom_path("US1_UNCR.dcm"))
    assert img.modality == "US" and img.array.shape[0] == 3 and img.array.ndim == 3


@pytest.mark.parametrize("compressed",
                         ["MR_small_jp2klossless.dcm", "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm"])
def test_lossless_codecs_match_uncompressed(dicom_path, compressed):
    ref = read_image(dicom_path("MR_small.dcm")).array
    np.testing.assert_array_equal(read_image(dicom_path(compressed)).array, ref)


def _write_series(src: str, folder, n: int = 5, step: float = 2.5) -> list[float]:
    base = pydicom.dcmread(src)
    z0 = float(base.ImagePositionPatient[2])
    order = [3, 0, 4, 1, 2][:n]
    for k in order:  # written in shuffled order and shuffled names: the reader must sort by position
        ds = pydicom.dcmread(src)
        ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1], z0 + k * step]
        ds.InstanceNumber = k + 1
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        arr = ds.pixel_array.copy()
        arr[0, 0] = 100 * k  # a marker to identify the slice
        ds.PixelData = arr.tobytes()
        ds.save_as(folder / f"img_{(7 * k) % 5}.dcm")
    return [z0 + k * step for k in range(n)]


def test_series_sorted_along_normal(dicom_path, tmp_path):
    src = dicom_path("CT_small.dcm")
    _write_series(src, tmp_path)
    vol = read_dicom_series(tmp_path)
    ds = pydicom.dcmread(src)
    assert vol.array.shape == (1, ds.Columns, ds.Rows, 5)
    slope, inter = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    markers = (vol.array[0, 0, 0, :] - inter) / slope
    np.testing.assert_allclose(markers, [0, 100, 200, 300, 400])
    normal = np.cross(np.array(ds.ImageOrientationPatient[:3], float), np.array(ds.ImageOrientationPatient[3:], float))
    assert vol.spacing[2] == pytest.approx(2.5 * np.linalg.norm(normal))
    assert vol.spatial_dims == 3 and len(vol.orientation) == 3


def test_series_with_two_series_is_refused(dicom_path, tmp_path):
    src = dicom_path("CT_small.dcm")
    _write_series(src, tmp_path, n=2)
    other = pydicom.dcmread(src)
    other.SeriesInstanceUID = pydicom.uid.generate_uid()
    other.save_as(tmp_path / "other.dcm")
    from mmfm.errors import InputFileError

    with pytest.raises(InputFileError, match="2 series"):
        read_dicom_series(tmp_path)


def test_no_phi_in_metadata(dicom_path, tmp_path):
    src = dicom_path("CT_small.dcm")
    ds = pydicom.dcmread(src)
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Doe^Jane", "MRN-123456", "19700101"
    p = tmp_path / "phi.dcm"
    ds.save_as(p)
    img = read_image(p)
    text = repr(img.meta)
    for phi in ("Doe", "Jane", "MRN-123456", "19700101"):
        assert phi not in text
    assert img.meta["ids"]["patient_id"].startswith("patient-")
    # the pseudonym is stable, so splits by patient still work
    assert read_image(p).meta["ids"]["patient_id"] == img.meta["ids"]["patient_id"]


def test_dicom_folder_via_read_image(dicom_path, tmp_path):
    _write_series(dicom_path("CT_small.dcm"), tmp_path, n=3)
    assert read_image(tmp_path).array.shape[-1] == 3
    shutil.rmtree(tmp_path)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "MR2_UNCI.dcm"])
def test_geometry_matches_nibabel_nicom(dicom_path, name):
    """An independent implementation of the DICOM geometry (nibabel.nicom, LPS, voxel axes (row, column)) rather
    than the formula the reader itself uses: same in-plane axes and origin, same pixel values."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nibabel calls its DICOM wrappers experimental
        from nibabel.nicom import dicomwrappers

        w = dicomwrappers.wrapper_from_file(dicom_path(name))
        ref_affine = np.asarray(w.affine)
        ref_data = np.squeeze(np.asarray(w.get_data())) if name != "MR2_UNCI.dcm" else None
    img = read_image(dicom_path(name))
    ours_lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ img.affine            # RAS -> LPS
    # our voxel axes are (i = column, j = row); nibabel's are (row, column)
    np.testing.assert_allclose(ours_lps[:3, [1, 0, 3]], ref_affine[:3, [0, 1, 3]], atol=1e-4)
    if ref_data is not None:
        np.testing.assert_allclose(img.array[0], ref_data.T, rtol=1e-6)
