"""PNG / JPEG / TIFF through Pillow (as MONAI's PILReader does), with RGB kept as 3 channels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from mmfm.data.io.checks import check_file, check_shape, check_voxels, memory_limit
from mmfm.data.sample import Image
from mmfm.errors import InputFileError

RASTER_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


def read_raster(path: str | Path, modality: str = "XR", spacing: tuple[float, float] = (1.0, 1.0)) -> Image:
    """Read a 2D raster image. Shape: (C, I, J) with I = column, J = row; C = 1 (grey) or 3 (RGB)."""
    p = check_file(path)
    try:
        with PILImage.open(p) as im:
            check_shape(p, im.size)  # (width, height) from the header, before decoding
            check_voxels(p, im.size)
            channels = len(im.getbands())
            if im.size[0] * im.size[1] * channels * 4 > memory_limit():
                raise InputFileError(p, f"the header declares {im.size[0]}x{im.size[1]} pixels, more than this "
                                        "machine's memory", "the header is corrupt, or tile the image first")
            im.load()
            if im.mode in ("RGBA", "P", "CMYK", "LA"):
                im = im.convert("RGB")
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, MemoryError,
            PILImage.DecompressionBombError) as e:
        raise InputFileError(p, f"cannot decode image ({type(e).__name__}: {e})",
                             "the file is truncated or corrupt; export it again") from None
    arr = arr.astype(np.float32)
    array = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)  # (C, rows, cols)
    array = np.swapaxes(array, 1, 2)  # (C, cols, rows) = (C, I, J)
    affine = np.diag([spacing[0], spacing[1], 1.0, 1.0])
    return Image(array=np.ascontiguousarray(array), modality=modality, affine=affine)


def raster_info(path: str | Path) -> dict[str, int]:
    """Header only (Pillow opens lazily): a raster image is 2D with 1 (grey) or 3 (colour) channels."""
    p = check_file(path)
    try:
        with PILImage.open(p) as im:
            check_shape(p, im.size)
            bands = len(im.getbands())
            im.verify()  # checks the file structure (chunks, CRCs) without decoding every pixel
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, PILImage.DecompressionBombError) as e:
        raise InputFileError(p, f"cannot decode image ({type(e).__name__}: {e})",
                             "the file is truncated or corrupt; export it again") from None
    return {"spatial_dims": 2, "depth": 1, "channels": 1 if bands in (1, 2) else 3}
