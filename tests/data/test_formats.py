"""The format registry (mmfm.data.io.formats): a format chosen by name and first bytes, files misnamed or
unnamed get the rename that fixes them, and a registered format is read by every caller of read_image."""

from __future__ import annotations

import gzip
import shutil

import nibabel as nib
import numpy as np
import pytest
from PIL import Image as PILImage

from mmfm.data.io import image_format, image_info, read_image
from mmfm.data.io.formats import FORMATS, ImageFormat, register_format
from mmfm.data.sample import Image
from mmfm.errors import InputFileError


def _nifti(path, shape=(6, 5, 4)):
    arr = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    nib.save(nib.Nifti1Image(arr, np.diag([1.5, 1.5, 3.0, 1.0])), str(path))
    return arr


def test_a_dicom_file_without_a_suffix_is_read_by_its_preamble(tmp_path, dicom_path):
    named = tmp_path / "IM0001"                     # as scanners and PACS exports name them
    src = dicom_path("CT_small.dcm")
    shutil.copy(src, named)
    assert image_format(named) == "dicom"
    a, b = read_image(named), read_image(src)
    np.testing.assert_array_equal(a.array, b.array)
    assert image_info(named) == image_info(src)


def test_a_png_without_a_suffix_is_read_by_its_signature(tmp_path):
    arr = (np.arange(48).reshape(6, 8) * 5).astype(np.uint8)
    PILImage.fromarray(arr).save(tmp_path / "x.png")
    (tmp_path / "x.png").rename(tmp_path / "scan")
    img = read_image(tmp_path / "scan")
    assert image_format(tmp_path / "scan") == "raster"
    np.testing.assert_array_equal(img.array[0].T, arr)


def test_a_file_whose_content_is_another_format_is_refused_with_the_rename(tmp_path, dicom_path):
    fake = tmp_path / "slice.png"
    shutil.copy(dicom_path("CT_small.dcm"), fake)
    with pytest.raises(InputFileError) as e:
        read_image(fake)
    assert "DICOM" in str(e.value) and "rename" in str(e.value)


def test_a_gzip_stream_named_nii_says_to_rename_it(tmp_path):
    _nifti(tmp_path / "v.nii.gz")
    wrong = tmp_path / "v.nii"
    wrong.write_bytes((tmp_path / "v.nii.gz").read_bytes())
    with pytest.raises(InputFileError) as e:
        read_image(wrong)
    assert "gzip" in str(e.value) and "v.nii.gz" in str(e.value)


@pytest.mark.parametrize("gz", [False, True])
def test_nifti_without_a_suffix_is_recognised_and_the_rename_named(tmp_path, gz):
    src = tmp_path / ("v.nii.gz" if gz else "v.nii")
    arr = _nifti(src)
    bare = tmp_path / "volume"
    shutil.copy(src, bare)
    with pytest.raises(InputFileError) as e:
        read_image(bare)
    fix = "volume.nii.gz" if gz else "volume.nii"
    assert "NIfTI" in str(e.value) and fix in str(e.value)
    bare.rename(tmp_path / fix)                   # the fix works
    np.testing.assert_array_equal(read_image(tmp_path / fix).array[0], arr)


def test_unrecognised_content_lists_the_formats(tmp_path):
    p = tmp_path / "notes"
    p.write_text("not an image at all\n")
    with pytest.raises(InputFileError) as e:
        image_format(p)
    assert "NIfTI" in str(e.value) and "DICOM" in str(e.value)


def test_a_missing_file_with_a_known_suffix_says_not_found(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        read_image(tmp_path / "absent.nii.gz")


def test_a_registered_format_is_read_by_read_image_and_recognised_by_its_bytes(tmp_path):
    def read(p, modality, voi_lut):
        data = np.frombuffer(p.read_bytes()[8:], dtype=np.float32).reshape(1, 4, 4)
        return Image(array=data.copy(), modality=modality or "unknown", affine=np.eye(4))

    fmt = ImageFormat("toy", "toy raw (.toy)", (".toy",), read,
                      lambda p: {"spatial_dims": 2, "depth": 1, "channels": 1}, magic=lambda h: h[:8] == b"TOYRAW01")
    register_format(fmt)
    try:
        body = np.arange(16, dtype=np.float32)
        for name in ("a.toy", "a.bin"):
            (tmp_path / name).write_bytes(b"TOYRAW01" + body.tobytes())
            assert image_format(tmp_path / name) == "toy"
            np.testing.assert_array_equal(read_image(tmp_path / name).array.ravel(), body)
        assert image_info(tmp_path / "a.toy")["spatial_dims"] == 2
    finally:
        FORMATS.pop("toy")


def test_gzip_bomb_head_costs_only_the_head(tmp_path):
    """A gzip stream that inflates to gigabytes: the sniff inflates a few hundred bytes and stops."""
    p = tmp_path / "bomb"
    with gzip.open(p, "wb") as g:
        for _ in range(64):
            g.write(b"\0" * (1 << 24))             # 1 GiB of zeros, ~1 MB compressed
    with pytest.raises(InputFileError, match="unrecognised"):
        image_format(p)


def test_a_folder_scan_lists_a_misnamed_image_with_its_reason_and_passes_over_other_files(tmp_path, dicom_path):
    from mmfm.data.catalog.folder import scan_folder

    _nifti(tmp_path / "good.nii.gz")
    shutil.copy(dicom_path("CT_small.dcm"), tmp_path / "slice.png")     # a DICOM saved under a PNG name
    shutil.copy(dicom_path("CT_small.dcm"), tmp_path / "IM0001")        # a DICOM without a suffix: read
    (tmp_path / "notes").write_text("free text")                        # not an image: left alone
    images, skipped, others = scan_folder(tmp_path)
    assert sorted(r["format"] for r in images) == ["dicom", "nifti"]
    assert len(skipped) == 1 and "content is DICOM" in skipped[0]["reason"]
    assert others == 1
