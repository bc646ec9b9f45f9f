"""Readers: every file format mmfm reads, behind :func:`read_image` (the registry in :mod:`.formats`) and
:func:`read_reports`.

All readers return channel-first arrays with spatial axes in index order (i = column, j = row, k = slice) and a
4x4 affine in RAS millimetres, and raise :class:`mmfm.errors.InputFileError` (naming the file and the problem)
instead of a library's internal traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmfm.data.io.checks import check_file
from mmfm.data.io.formats import FORMATS, ImageFormat, format_of, register_format
from mmfm.data.sample import Image
from mmfm.errors import InputFileError

__all__ = ["read_image", "image_format", "image_info", "check_file", "IMAGE_FORMATS", "FORMATS", "ImageFormat",
           "format_of", "register_format"]

IMAGE_FORMATS = tuple(name for name, fmt in FORMATS.items() if fmt.read is not None)   # formats of one image


def image_format(path: str | Path) -> str:
    """The name of ``path``'s format (:func:`mmfm.data.io.formats.format_of`): ``dicom``, ``dicom-series``,
    ``nifti``, ``metaimage``, ``nrrd``, ``raster``, ``mrc`` or ``npz``."""
    return format_of(path).name


def _one_image(fmt: ImageFormat, p: Path) -> None:
    if fmt.read is None:
        raise InputFileError(p, "a .npz file holds a whole dataset, not one image",
                             "load it with mmfm.data.io.npz.read_medmnist_npz or `mmfm data inspect`")


def read_image(path: str | Path, modality: str | None = None, voi_lut: bool | None = None) -> Image:
    """Read one image (2D or 3D) from any registered format.

    ``modality`` is needed for formats that do not record it (NIfTI, PNG, MRC): without it the image's modality is
    ``"unknown"`` (never guessed); for DICOM it overrides the tag. Values a reader had to assume (spacing,
    orientation) are listed in ``meta["assumed"]``.
    ``voi_lut``: apply the DICOM VOI LUT / window (None: only for radiographs and mammograms).
    """
    p = Path(path)
    fmt = format_of(p)
    if fmt.name != "dicom-series":
        check_file(p)
    _one_image(fmt, p)
    assert fmt.read is not None
    return fmt.read(p, modality, voi_lut)


def image_info(path: str | Path, series_uid: str | None = None) -> dict[str, Any]:
    """What an image's header promises, without decoding its voxels: ``spatial_dims`` (2 or 3), ``depth`` (size
    of the last spatial axis, 1 for 2D) and ``channels``. Raises :class:`InputFileError` for a file that cannot be
    an image (the same checks the readers make before allocating)."""
    p = Path(path)
    fmt = format_of(p)
    if fmt.name == "dicom-series":
        from mmfm.data.io.dicom import series_info

        return series_info(p, series_uid)
    check_file(p)
    _one_image(fmt, p)
    assert fmt.info is not None
    return fmt.info(p)
