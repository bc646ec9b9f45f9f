"""NIfTI through nibabel: the voxel array in index order and the RAS affine, as nibabel gives them."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from mmfm.data.io.checks import check_file
from mmfm.data.sample import Image
from mmfm.errors import InputFileError


def read_nifti(path: str | Path, modality: str = "MR") -> Image:
    """Read a 2D/3D (or 4D: last axis as channels) NIfTI. Shape: (C, I, J[, K])."""
    p = check_file(path)
    try:
        img = nib.load(str(p))
        data = np.asarray(img.dataobj, dtype=np.float32)
    except (nib.filebasedimages.ImageFileError, EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError) as e:
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


def label_nifti(path: str | Path) -> np.ndarray:
    """Read a NIfTI label map as an integer array ``(1, I, J[, K])``."""
    img = read_nifti(path, modality="seg")
    return np.rint(img.array).astype(np.int64)
