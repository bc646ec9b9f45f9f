"""MRC volumes (as the LiTS case in ``liver-ct-segmentation-package`` is stored) through ``mrcfile``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmfm.data.io.checks import check_file
from mmfm.data.sample import Image
from mmfm.errors import InputFileError


def read_mrc_array(path: str | Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    import mrcfile

    p = check_file(path)
    try:
        with mrcfile.open(p, permissive=True) as f:
            if f.data is None:
                raise ValueError("no data block")
            data = np.asarray(f.data).copy()
            vs = f.voxel_size
            spacing = tuple(float(v) if float(v) > 0 else 1.0 for v in (vs.x, vs.y, vs.z))
    except (ValueError, OSError) as e:
        raise InputFileError(p, f"cannot read as MRC ({e})", "the file is truncated or not MRC") from None
    return data, spacing  # type: ignore[return-value]


def read_mrc(path: str | Path, modality: str = "CT") -> Image:
    """Read an MRC volume. MRC stores (section, row, column) = (z, y, x); returned as (1, x, y, z)."""
    data, spacing = read_mrc_array(path)
    array = np.ascontiguousarray(np.transpose(data.astype(np.float32), (2, 1, 0))[None])
    return Image(array=array, modality=modality, affine=np.diag([*spacing, 1.0]))
