"""`mmfm data inspect` says where the voxels lie for 2D and 3D alike: the RAS affine, origin, direction cosines and
how oblique each axis is (a slice rotated 30 degrees is not plain "LP"), in --json and in the human output."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmfm.cli.main import main

C, S = np.cos(np.radians(30)), np.sin(np.radians(30))


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_2d_itk_slice_rotated_30_degrees(suffix, tmp_path, capsys):
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.arange(12 * 10, dtype=np.float32).reshape(12, 10))   # 10 columns, 12 rows
    img.SetSpacing((0.7, 1.3))
    img.SetOrigin((10.0, -5.0))
    img.SetDirection((C, -S, S, C))                       # ITK: row-major, columns are the index axes (LPS)
    p = tmp_path / f"slice{suffix}"
    sitk.WriteImage(img, str(p))
    assert main(["data", "inspect", str(p), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["shape"] == [1, 10, 12] and info["spatial_dims"] == 2
    # LPS -> RAS flips x and y: axis i = (cos, sin) in LPS is (-cos, -sin) in RAS; axis j = (-sin, cos) -> (sin, -cos)
    expect = np.array([[-C * 0.7, S * 1.3, 0, -10.0],
                       [-S * 0.7, -C * 1.3, 0, 5.0],
                       [0, 0, 1, 0],
                       [0, 0, 0, 1]])
    assert np.allclose(info["affine"], expect, atol=1e-5)
    assert np.allclose(info["direction"], [[-C, -S, 0], [S, -C, 0]], atol=1e-5)
    assert np.allclose(info["origin"], [-10.0, 5.0, 0.0]) and np.allclose(info["spacing"], [0.7, 1.3])
    assert np.allclose(info["obliquity_deg"], [30, 30], atol=1e-3)
    assert info["orientation"] == "LP" and info["frame"] == "RAS mm"
    # the same image unrotated: no obliquity, axes along the world's
    img.SetDirection((1, 0, 0, 1))
    sitk.WriteImage(img, str(p))
    assert main(["data", "inspect", str(p), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert np.allclose(info["obliquity_deg"], [0, 0]) and np.allclose(info["direction"], [[-1, 0, 0], [0, -1, 0]])


def test_3d_nifti_geometry_in_json_and_human_output(tmp_path, capsys):
    import nibabel as nib

    rot = np.array([[C, -S, 0], [S, C, 0], [0, 0, 1]])   # 30 degrees about the z axis
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([2.0, 2.0, 3.0])
    aff[:3, 3] = [1.0, 2.0, 3.0]
    p = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 5, 6), np.float32), aff), p)
    assert main(["data", "inspect", str(p), "--json", "--modality", "MR"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert np.allclose(info["affine"], aff, atol=1e-5)
    assert np.allclose(info["direction"], rot.T, atol=1e-5) and np.allclose(info["origin"], [1, 2, 3])
    assert np.allclose(info["spacing"], [2, 2, 3]) and np.allclose(info["obliquity_deg"], [30, 30, 0], atol=1e-3)
    assert main(["data", "inspect", str(p), "--modality", "MR"]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith("affine"))
    numbers = [[float(v) for v in line[15:].split()] for line in lines[row:row + 4]]
    assert np.allclose(numbers, aff, atol=1e-3)           # one matrix row a line, under its name
    assert any(line.startswith("direction") for line in lines)
    assert any(line.startswith("obliquity_deg") and "30" in line for line in lines)
