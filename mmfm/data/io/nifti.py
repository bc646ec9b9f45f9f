"""NIfTI through nibabel: the voxel array in index order and the RAS affine, as nibabel gives them."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from mmfm.data.io.checks import (
    DEFLATE_MAX_RATIO,
    check_file,
    check_promised_size,
    check_shape,
    check_voxels,
    memory_limit,
)
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


def _gzip_holds(path: Path, need: int) -> int:
    """How many of ``need`` bytes the gzip file ``path`` holds after decompression (``need`` when it holds enough).

    The trailer (ISIZE) gives the size modulo 2**32 of the last member only: when it already covers ``need`` that
    suffices; otherwise the stream is decompressed and counted, in chunks, stopping at ``need`` (no allocation of the
    promised size; a crafted file costs at most its ~1032x expansion in time, never in memory)."""
    size = path.stat().st_size
    if size < 18:
        return 0
    if need > size * DEFLATE_MAX_RATIO:
        return size * DEFLATE_MAX_RATIO
    with open(path, "rb") as f:
        f.seek(-4, 2)
        isize = int.from_bytes(f.read(4), "little")
    if need <= isize:
        return need
    got = 0
    try:
        with gzip.open(path, "rb") as g:
            while got < need:
                chunk = g.read(min(1 << 22, need - got))
                if not chunk:
                    break
                got += len(chunk)
    except (EOFError, OSError, zlib.error):
        pass                       # truncated or damaged: what was counted is what it holds
    return got


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
    check_voxels(p, shape[:3])
    if p.name.lower().endswith(".gz"):
        check_promised_size(p, offset + promised, _gzip_holds(p, offset + promised), "after decompression")
    elif p.suffix.lower() == ".nii":
        check_promised_size(p, offset + promised, p.stat().st_size)


def nifti_info(path: str | Path) -> dict[str, Any]:
    """Header only: spatial dims, depth (1 for 2D), channels (a 4th axis) and spacing, after the header's checks."""
    p = check_file(path)
    try:
        img = nib.load(str(p))
    except Exception as e:  # nibabel raises many types on damaged headers
        raise InputFileError(p, f"cannot read as NIfTI ({type(e).__name__}: {e})",
                             "the file is truncated or not NIfTI") from None
    check_nifti_header(p, img)
    shape = [int(s) for s in img.header.get_data_shape()]
    chans = shape[3] if len(shape) == 4 else 1
    spatial = shape[:3] if len(shape) >= 3 and shape[2] > 1 else shape[:2]
    zooms = [round(float(z), 4) for z in img.header.get_zooms()[:len(spatial)]]
    return {"spatial_dims": len(spatial), "depth": spatial[-1] if len(spatial) == 3 else 1, "channels": chans,
            "spacing": zooms}


def label_nifti(path: str | Path) -> np.ndarray:
    """Read a NIfTI label map as an integer array ``(1, I, J[, K])``."""
    img = read_nifti(path, modality="seg")
    return np.rint(img.array).astype(np.int64)
