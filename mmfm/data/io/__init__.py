"""Readers: every file format mmfm reads, behind :func:`read_image` and :func:`read_reports`.

All readers return channel-first arrays with spatial axes in index order (i = column, j = row, k = slice) and a
4x4 affine in RAS millimetres, and raise :class:`mmfm.errors.InputFileError` (naming the file and the problem)
instead of a library's internal traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmfm.data.io.checks import check_file
from mmfm.data.io.dicom import is_dicom, read_dicom_file, read_dicom_series
from mmfm.data.io.itk import ITK_SUFFIXES, read_itk
from mmfm.data.io.nifti import read_nifti
from mmfm.data.io.raster import RASTER_SUFFIXES, read_raster
from mmfm.data.sample import Image
from mmfm.errors import InputFileError

__all__ = ["read_image", "image_format", "image_info", "check_file", "IMAGE_FORMATS"]

IMAGE_FORMATS = ("dicom", "dicom-series", "nifti", "metaimage", "nrrd", "raster", "mrc")

UNKNOWN = "unknown"


def image_format(path: str | Path) -> str:
    """Guess the format of ``path``: ``dicom``, ``dicom-series``, ``nifti``, ``raster``, ``npz`` or ``mrc``."""
    p = Path(path)
    if p.is_dir():
        return "dicom-series"
    name = p.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if p.suffix.lower() in RASTER_SUFFIXES:
        return "raster"
    if p.suffix.lower() in ITK_SUFFIXES:
        return "metaimage" if p.suffix.lower() in (".mha", ".mhd") else "nrrd"
    if name.endswith(".npz"):
        return "npz"
    if name.endswith(".mrc"):
        return "mrc"
    if name.endswith(".dcm") or (p.is_file() and is_dicom(p)):
        return "dicom"
    raise InputFileError(p, "unrecognised image format",
                         "mmfm reads DICOM (.dcm or a series folder), NIfTI (.nii/.nii.gz), MetaImage (.mha/.mhd), "
                         "NRRD (.nrrd/.nhdr), PNG/JPEG/TIFF, "
                         "MedMNIST .npz and MRC")


def read_image(path: str | Path, modality: str | None = None, voi_lut: bool | None = None) -> Image:
    """Read one image (2D or 3D) from any supported format.

    ``modality`` is needed for formats that do not record it (NIfTI, PNG, MRC): without it the image's modality is
    ``"unknown"`` (never guessed); for DICOM it overrides the tag. Values a reader had to assume (spacing,
    orientation) are listed in ``meta["assumed"]``.
    ``voi_lut``: apply the DICOM VOI LUT / window (None: only for radiographs and mammograms).
    """
    fmt = image_format(path)
    if fmt == "dicom-series":
        return read_dicom_series(path, modality=modality)
    check_file(path)
    if fmt == "dicom":
        return read_dicom_file(path, modality=modality, voi_lut=voi_lut)
    # formats that do not record the modality: "unknown" unless the caller says (never a guess)
    if fmt == "nifti":
        return read_nifti(path, modality=modality or UNKNOWN)
    if fmt in ("metaimage", "nrrd"):
        return read_itk(path, modality=modality or UNKNOWN)
    if fmt == "raster":
        img = read_raster(path, modality=modality or UNKNOWN)
        img.meta["assumed"] = {"spacing": "1 mm per pixel (PNG/JPEG/TIFF carry no physical spacing)"}
        return img
    if fmt == "mrc":
        from mmfm.data.io.mrc import read_mrc

        return read_mrc(path, modality=modality or UNKNOWN)
    raise InputFileError(path, "a .npz file holds a whole dataset, not one image",
                         "load it with mmfm.data.io.npz.read_medmnist_npz or `mmfm data inspect`")


def image_info(path: str | Path, series_uid: str | None = None) -> dict[str, Any]:
    """What an image's header promises, without decoding its voxels: ``spatial_dims`` (2 or 3), ``depth`` (size
    of the last spatial axis, 1 for 2D) and ``channels``. Raises :class:`InputFileError` for a file that cannot be
    an image (the same checks the readers make before allocating)."""
    fmt = image_format(path)
    p = Path(path)
    if fmt == "dicom-series":
        from mmfm.data.io.dicom import series_info

        return series_info(p, series_uid)
    check_file(p)
    if fmt == "dicom":
        from mmfm.data.io.dicom import dicom_info

        return dicom_info(p)
    if fmt == "nifti":
        import nibabel as nib

        from mmfm.data.io.nifti import check_nifti_header

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
    if fmt in ("metaimage", "nrrd"):
        from mmfm.data.io.itk import itk_info

        return itk_info(p)
    if fmt == "raster":
        from mmfm.data.io.raster import raster_info

        return raster_info(p)
    if fmt == "mrc":
        img = read_image(p)
        return {"spatial_dims": img.spatial_dims, "depth": img.spatial_shape[-1] if img.spatial_dims == 3 else 1,
                "channels": int(img.array.shape[0])}
    raise InputFileError(p, "a .npz file holds a whole dataset, not one image")
