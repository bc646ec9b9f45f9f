"""MRC volumes (as the LiTS case in ``liver-ct-segmentation-package`` is stored) through ``mrcfile``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmfm.data.io.checks import check_file, check_promised_size, check_shape, check_voxels
from mmfm.data.sample import Image
from mmfm.errors import InputFileError


def read_mrc_array(path: str | Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    import mrcfile

    p = check_file(path)
    try:
        with mrcfile.open(p, permissive=True, header_only=True) as f:
            h = f.header
            shape = (int(h.nz), int(h.ny), int(h.nx))
            check_shape(p, shape)
            check_voxels(p, shape)
            itemsize = {0: 1, 1: 2, 2: 4, 3: 4, 4: 8, 6: 2, 12: 2}.get(int(h.mode), 4)
            check_promised_size(p, 1024 + int(h.nsymbt) + int(np.prod(shape, dtype=np.float64)) * itemsize,
                                p.stat().st_size)
        with mrcfile.open(p, permissive=True) as f:
            if f.data is None:
                raise ValueError("no data block")
            data = np.asarray(f.data).copy()
            vs = f.voxel_size
            spacing = tuple(float(v) if float(v) > 0 else 1.0 for v in (vs.x, vs.y, vs.z))
    except (ValueError, OSError, MemoryError) as e:
        raise InputFileError(p, f"cannot read as MRC ({e})", "the file is truncated or not MRC") from None
    return data, spacing  # type: ignore[return-value]


def read_mrc(path: str | Path, modality: str = "CT") -> Image:
    """Read an MRC volume. MRC stores (section, row, column) = (z, y, x); returned as (1, x, y, z)."""
    data, spacing = read_mrc_array(path)
    array = np.ascontiguousarray(np.transpose(data.astype(np.float32), (2, 1, 0))[None])
    return Image(array=array, modality=modality, affine=np.diag([*spacing, 1.0]))
