"""NIfTI through nibabel: the voxel array in index order and the RAS affine, as nibabel gives them."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from mmfm.data.io.checks import check_file, check_promised_size, check_shape, memory_limit
from mmfm.data.sample import Image
from mmfm.errors import InputFileError


def read_nifti(path: str | Path, modality: str = "MR") -> Image:
    """Read a 2D/3D (or 4D: last axis as channels) NIfTI. Shape: (C, I, J[, K])."""
    p = check_file(path)
    try:
        img = nib.load(str(p))
    except Exception as e:  # nibabel raises many types on damaged headers (HeaderDataError, ValueError, ...)
        raise InputFileError(p, f"cannot read as NIfTI ({type(e).__name__}: {e})",
                             "the file is truncated or not NIfTI; check it with `mmfm data inspect`") from None
    check_nifti_header(p, img)
    try:
        data = np.asarray(img.dataobj, dtype=np.float32)
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError, MemoryError) as e:
        raise InputFileError(p, f"cannot read as NIfTI ({type(e).__name__}: {e})",
                             "the file is truncated or not NIfTI; check it with `mmfm data inspect`") from None
    affine = np.asarray(img.affine, dtype=np.float64)
    if data.ndim == 4:
        array = np.moveaxis(data, -1, 0)
    elif data.ndim in (2, 3):
        if data.ndim == 3 and data.shape[2] == 1:
            data = data[..., 0]
        array = data[None]
    else:
        raise InputFileError(p, f"has {data.ndim} dimensions {data.shape}; mmfm reads 2D, 3D and 4D (channels last)")
    return Image(array=array, modality=modality, affine=affine)


def _gzip_size(path: Path) -> int | None:
    """Uncompressed size from the gzip trailer (ISIZE, modulo 2**32): None when it cannot be trusted."""
    size = path.stat().st_size
    if size < 18:
        return 0
    with open(path, "rb") as f:
        f.seek(-4, 2)
        isize = int.from_bytes(f.read(4), "little")
    return isize if size < (1 << 32) // 1032 else None  # deflate expands at most ~1032x: no wrap below this


def check_nifti_header(p: Path, img: nib.Nifti1Image) -> None:
    """Shape and size promised by the header against what the file holds, before any voxel is read."""
    shape = tuple(int(s) for s in img.header.get_data_shape())
    check_shape(p, shape)
    itemsize = img.header.get_data_dtype().itemsize
    promised = int(np.prod(shape, dtype=np.float64) * itemsize)
    offset = int(img.header.get_data_offset())
    if promised > memory_limit():
        raise InputFileError(p, f"the header declares shape {shape} ({promised:,} bytes), more than this machine's "
                                "memory", "the header is corrupt, or crop/split the volume first")
    if p.name.lower().endswith(".gz"):
        raw = _gzip_size(p)
        if raw is not None:
            check_promised_size(p, offset + promised, raw, "after decompression")
    elif p.suffix.lower() == ".nii":
        check_promised_size(p, offset + promised, p.stat().st_size)


def label_nifti(path: str | Path) -> np.ndarray:
    """Read a NIfTI label map as an integer array ``(1, I, J[, K])``."""
    img = read_nifti(path, modality="seg")
    return np.rint(img.array).astype(np.int64)
