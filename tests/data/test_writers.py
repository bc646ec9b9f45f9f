"""The writer registry (mmfm.data.io.writers): each writer's file reads back through mmfm's readers with the same
voxels and the same RAS geometry, a NIfTI mask of a NIfTI keeps that file's own header, the writer follows the
final name when the target is a staging path, and a name or array no writer takes is a ConfigError."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from mmfm.data.io import read_image
from mmfm.data.io.writers import write_image, writer_for
from mmfm.errors import ConfigError


def _oblique(nd: int) -> np.ndarray:
    a = np.eye(4)
    rot = np.array([[0.96, -0.28, 0], [0.28, 0.96, 0], [0, 0, 1.0]])
    a[:3, :3] = rot @ np.diag([0.8, 0.7, 2.5])
    a[:3, 3] = [-30.0, 12.0, 40.0]
    if nd == 2:
        a[:3, 2], a[2, :3], a[2, 3] = [0, 0, 1], [0, 0, 1], 0.0
    return a


@pytest.mark.parametrize("name", ["m.nii.gz", "m.nii", "m.mha", "m.nrrd"])
@pytest.mark.parametrize("nd", [2, 3])
def test_each_volume_writer_reads_back_with_its_voxels_and_geometry(tmp_path, name, nd):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 5, size=(7, 6, 5)[:nd]).astype(np.uint8)
    affine = _oblique(nd)
    write_image(tmp_path / name, data, affine)
    img = read_image(tmp_path / name)
    np.testing.assert_array_equal(img.array[0], data)
    np.testing.assert_allclose(img.affine[:nd, :nd], affine[:nd, :nd], atol=1e-5)
    np.testing.assert_allclose(img.affine[:nd, 3], affine[:nd, 3], atol=1e-5)


def test_png_writes_rows_by_columns_and_colour(tmp_path):
    grey = np.arange(12, dtype=np.uint8).reshape(4, 3) * 20          # (I = columns, J = rows)
    write_image(tmp_path / "g.png", grey)
    np.testing.assert_array_equal(read_image(tmp_path / "g.png").array[0], grey)
    rgb = np.stack([grey, grey + 1, grey + 2], -1)
    write_image(tmp_path / "c.png", rgb)
    np.testing.assert_array_equal(np.moveaxis(read_image(tmp_path / "c.png").array, 0, -1), rgb)
    with pytest.raises(ConfigError, match="8-bit"):
        write_image(tmp_path / "f.png", grey.astype(np.float32))
    with pytest.raises(ConfigError, match="3D"):
        write_image(tmp_path / "v.png", np.zeros((4, 4, 5), np.uint8))


def test_a_mask_of_a_nifti_keeps_its_header(tmp_path):
    src = nib.Nifti1Image(np.zeros((5, 4, 3), np.float32), _oblique(3))
    src.set_qform(_oblique(3), code=2)
    src.set_sform(_oblique(3), code=4)
    src.header.set_xyzt_units("mm", "sec")
    src.header["scl_slope"], src.header["scl_inter"] = 2.0, 1.0
    nib.save(src, tmp_path / "src.nii.gz")
    mask = np.ones((5, 4, 3), np.uint8)
    write_image(tmp_path / "mask.nii.gz", mask, np.eye(4), like=tmp_path / "src.nii.gz")
    out = nib.load(tmp_path / "mask.nii.gz")
    assert int(out.header["qform_code"]) == 2 and int(out.header["sform_code"]) == 4
    assert out.header.get_xyzt_units() == ("mm", "sec") and out.get_data_dtype() == np.uint8
    np.testing.assert_allclose(out.affine, _oblique(3))
    np.testing.assert_array_equal(np.asarray(out.dataobj), mask)          # no scaling carried over


def test_the_final_name_picks_the_writer_for_a_staging_path(tmp_path):
    staged = tmp_path / ".mask.nrrd.mmfm-partial"
    write_image(staged, np.ones((3, 3, 2), np.uint8), np.eye(4), name=tmp_path / "mask.nrrd")
    assert staged.read_bytes()[:4] == b"NRRD"
    staged = tmp_path / ".mask.nii.gz.mmfm-partial"
    write_image(staged, np.ones((3, 3, 2), np.uint8), np.eye(4), name="mask.nii.gz")
    assert staged.read_bytes()[:2] == b"\x1f\x8b"


def test_an_unknown_suffix_names_the_writable_ones():
    with pytest.raises(ConfigError) as e:
        writer_for("mask.jpg")
    assert ".nii.gz" in str(e.value) and ".nrrd" in str(e.value)
