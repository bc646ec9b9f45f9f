"""Attacks on the image readers (issue 24, items 1 and 5): a detached MetaImage/NRRD header that names a file
outside its own folder, messages that would tell whether an outside file exists, and headers that promise more
voxels than the file can hold (every codec)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mmfm.data.io import read_image
from mmfm.errors import InputFileError

SECRET = b"TOP-SECRET-" * 64          # 704 bytes: a 16 x 11 x 4 uint8 volume, read back byte for byte


def _mhd(folder: Path, data_file: str, name: str = "scan.mhd", dims: str = "16 11 4") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / name
    p.write_text(f"ObjectType = Image\nNDims = 3\nDimSize = {dims}\nElementType = MET_UCHAR\n"
                 f"ElementDataFile = {data_file}\n")
    return p


def _nhdr(folder: Path, data_file: str, key: str = "data file") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / "scan.nhdr"
    p.write_text(f"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 16 11 4\nencoding: raw\n{key}: {data_file}\n\n")
    return p


@pytest.fixture()
def secret(tmp_path) -> Path:
    f = tmp_path / "outside" / "secret.bin"
    f.parent.mkdir()
    f.write_bytes(SECRET)
    return f


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink"])
@pytest.mark.parametrize("writer", ["mhd", "nhdr", "nhdr-datafile", "mha"])
def test_detached_data_file_outside_the_header_folder_is_refused(tmp_path, secret, how, writer):
    scans = tmp_path / "scans"
    if how == "absolute":
        target = str(secret)
    elif how == "dotdot":
        target = "../outside/secret.bin"
    else:
        scans.mkdir()
        os.symlink(secret, scans / "link.raw")
        target = "link.raw"
    if writer == "mhd":
        p = _mhd(scans, target)
    elif writer == "mha":                              # an attached-looking name with a detached data file
        p = _mhd(scans, target, name="scan.mha")
    else:
        p = _nhdr(scans, target, "datafile" if writer == "nhdr-datafile" else "data file")
    with pytest.raises(InputFileError) as e:
        read_image(p)
    msg = str(e.value)
    assert "outside" in msg and "secret" not in msg and str(tmp_path / "outside") not in msg


def test_a_missing_outside_file_and_an_existing_one_get_the_same_message(tmp_path, secret):
    a = _mhd(tmp_path / "a", str(secret))
    b = _mhd(tmp_path / "b", str(secret.with_name("nothing-here.bin")))
    msgs = []
    for p in (a, b):
        with pytest.raises(InputFileError) as e:
            read_image(p)
        msgs.append(e.value.what)
    assert msgs[0] == msgs[1] and "704" not in msgs[0]          # neither existence nor size leaks


def test_list_and_pattern_data_files_are_confined_too(tmp_path, secret):
    p = tmp_path / "s" / "scan.mhd"
    p.parent.mkdir()
    p.write_text("ObjectType = Image\nNDims = 3\nDimSize = 16 11 4\nElementType = MET_UCHAR\n"
                 f"ElementDataFile = LIST\n{secret}\n")
    with pytest.raises(InputFileError, match="outside"):
        read_image(p)
    q = _mhd(tmp_path / "t", "../outside/secret%d.bin 1 1 1")
    (tmp_path / "outside" / "secret1.bin").write_bytes(SECRET)
    with pytest.raises(InputFileError, match="outside"):
        read_image(q)


def test_honest_detached_headers_still_read(tmp_path):
    vol = np.arange(16 * 11 * 4, dtype=np.uint8)
    for p in (_mhd(tmp_path / "m", "scan.raw"), _nhdr(tmp_path / "n", "./scan.raw")):
        (p.parent / "scan.raw").write_bytes(vol.tobytes())
        img = read_image(p)
        assert img.array.shape == (1, 16, 11, 4) and img.array[0, 1, 0, 0] == 1 and img.array[0, 0, 1, 0] == 16
    sub = tmp_path / "deep" / "data"
    sub.mkdir(parents=True)
    (sub / "v.raw").write_bytes(vol.tobytes())
    assert read_image(_mhd(tmp_path / "deep", "data/v.raw")).array.sum() == vol.astype(np.float32).sum()


def test_pixel_budget_refuses_before_decoding(tmp_path):
    from PIL import Image as PILImage

    from mmfm.data.io.checks import voxel_budget

    big = tmp_path / "big.png"
    PILImage.new("L", (3000, 3000)).save(big)
    with voxel_budget(pixels_2d=4_000_000, voxels_3d=10**9):
        with pytest.raises(InputFileError, match="pixels"):
            read_image(big)
    vol = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((64, 64, 64), np.uint8), np.eye(4)), vol)
    with voxel_budget(pixels_2d=10**9, voxels_3d=100_000):
        with pytest.raises(InputFileError, match="voxels"):
            read_image(vol)
    assert read_image(big).array.shape == (1, 3000, 3000)        # outside the budget nothing changes


def test_compressed_mha_promising_more_than_deflate_can_hold_is_refused(tmp_path):
    import zlib

    p = tmp_path / "bomb.mha"
    payload = zlib.compress(b"\0" * 1000)
    p.write_bytes(b"ObjectType = Image\nNDims = 3\nDimSize = 2000 2000 500\nElementType = MET_UCHAR\n"
                  b"CompressedData = True\nCompressedDataSize = " + str(len(payload)).encode() +
                  b"\nElementDataFile = LOCAL\n" + payload)
    with pytest.raises(InputFileError, match="promises"):
        read_image(p)


def test_large_nii_gz_promising_more_than_it_holds_is_refused(tmp_path):
    """Over 4 MB the gzip trailer (size modulo 2**32) was not trusted and the check was skipped."""
    src = tmp_path / "ok.nii"
    rng = np.random.default_rng(0)
    nib.save(nib.Nifti1Image(rng.integers(0, 255, (160, 160, 200), dtype=np.uint8), np.eye(4)), src)
    raw = bytearray(src.read_bytes())
    hdr = nib.Nifti1Header.from_fileobj(__import__("io").BytesIO(bytes(raw[:348])))
    hdr.set_data_shape((1600, 1600, 200))                       # promises 512 MB, holds 5 MB
    raw[:348] = hdr.binaryblock
    p = tmp_path / "lying.nii.gz"
    p.write_bytes(gzip.compress(bytes(raw), compresslevel=1))
    assert p.stat().st_size > 4_200_000
    with pytest.raises(InputFileError, match="promises"):
        read_image(p)
    honest = tmp_path / "honest.nii.gz"
    honest.write_bytes(gzip.compress(src.read_bytes(), compresslevel=1))
    assert read_image(honest).array.shape == (1, 160, 160, 200)


@pytest.mark.parametrize("payload", [
    "NRRD0004\ntype: uint8\ndimension: 3\nsizes: 16 11 4\nencoding: raw\nDataFile: {abs}\n\n",
])
def test_header_parsing_tricks_do_not_hide_the_data_file(tmp_path, secret, payload):
    """Spellings of the data-file field that the library reads too (here NRRD's ``DataFile``)."""
    p = tmp_path / "s" / ("scan.nhdr" if payload.startswith("NRRD") else "scan.mhd")
    p.parent.mkdir()
    p.write_text(payload.replace("{abs}", str(secret)))
    with pytest.raises(InputFileError) as e:
        read_image(p)
    assert "secret" not in str(e.value) and "TOP-SECRET" not in str(e.value)


def test_a_data_file_field_beyond_a_padded_header_is_not_missed(tmp_path, secret):
    p = tmp_path / "scan.mha"
    p.write_text("ObjectType = Image\nNDims = 3\n" + "Comment = x\n" * 120_000 +
                 f"DimSize = 16 11 4\nElementType = MET_UCHAR\nElementDataFile = {secret}\n")
    with pytest.raises(InputFileError, match="header does not end|outside"):
        read_image(p)
