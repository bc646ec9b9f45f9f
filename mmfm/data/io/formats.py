"""Image formats as an interface: one registry of readers, chosen by a file's name and its first bytes.

Each :class:`ImageFormat` names its suffixes, a test on the file's first bytes (its magic), a reader and a
header-only ``info``. :func:`format_of` picks the format for a path: a folder is a DICOM series; a known suffix
picks its format unless the bytes say the file is something else (a DICOM file saved as ``.png``, a gzip stream
named ``.nii``), which is refused with the rename that fixes it; a file without a known suffix (DICOM files are
often named ``IM0001`` or by UID) is recognised by its bytes. Every command and the app read through this registry
(``mmfm.data.io.read_image`` / ``image_info``); a new format is one :func:`register_format` call.

Why not MONAI's ``ImageReader`` registry: mmfm's readers check sizes promised by a header before decoding, raise
:class:`~mmfm.errors.InputFileError` naming the file and the fix, and return mmfm's channel-first ``Image`` in RAS;
MONAI's readers (which mmfm's own are modelled on: ``verify_suffix`` + ``read``) do none of those for hostile input.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmfm.data.sample import Image
from mmfm.errors import InputFileError

HEAD_BYTES = 544          # enough for every magic test below (NIfTI-2's header is 540 bytes)

Reader = Callable[[Path, "str | None", "bool | None"], Image]
Info = Callable[[Path], dict[str, Any]]


class UnrecognisedFormat(InputFileError):
    """Neither the name nor the first bytes of a file match a registered format: not an image mmfm reads (a
    folder scan passes over such files; a misnamed image is an :class:`InputFileError` of its own)."""


@dataclass(frozen=True)
class ImageFormat:
    """One readable format. ``magic(head)`` tells from the first :data:`HEAD_BYTES` bytes (gzip streams already
    inflated) whether a file is of this format; ``needs_suffix``: the library underneath finds the format by name
    (nibabel, SimpleITK), so a file recognised by its bytes alone must be renamed first."""

    name: str
    title: str                                   # for messages: "NIfTI (.nii/.nii.gz)"
    suffixes: tuple[str, ...]
    read: Reader | None                          # None: not one image (a MedMNIST .npz holds a dataset)
    info: Info | None
    magic: Callable[[bytes], bool] | None = None
    needs_suffix: bool = False


FORMATS: dict[str, ImageFormat] = {}


def register_format(fmt: ImageFormat) -> ImageFormat:
    """Add (or replace, by name) a format; suffixes are matched longest first, so ``.nii.gz`` beats ``.gz``."""
    FORMATS[fmt.name] = fmt
    return fmt


def _by_suffix(name: str) -> ImageFormat | None:
    best: tuple[int, ImageFormat] | None = None
    for fmt in FORMATS.values():
        for s in fmt.suffixes:
            if name.endswith(s) and (best is None or len(s) > best[0]):
                best = (len(s), fmt)
    return best[1] if best else None


def _inflate(raw: bytes) -> tuple[bytes, bool]:
    """``raw`` (a file's first bytes), inflated when it is a gzip stream, and whether it was (at most
    :data:`HEAD_BYTES` are decompressed: a bomb costs nothing here)."""
    if raw[:2] != b"\x1f\x8b":
        return raw, False
    try:
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(raw, HEAD_BYTES), True
    except zlib.error:
        return b"", True


def _head(p: Path) -> tuple[bytes, bool]:
    with open(p, "rb") as f:
        return _inflate(f.read(HEAD_BYTES))


def _by_magic(head: bytes) -> ImageFormat | None:
    return next((f for f in FORMATS.values() if f.magic is not None and f.magic(head)), None)


def suffix_for(head: bytes) -> str | None:
    """The suffix a file starting with ``head`` should be named with (an upload that came without a name mmfm
    knows), or None when no registered format recognises the bytes."""
    inflated, gzipped = _inflate(head[:HEAD_BYTES])
    fmt = _by_magic(inflated)
    if fmt is None or not fmt.suffixes:
        return None
    return next((s for s in fmt.suffixes if s.endswith(".gz")), None) if gzipped else fmt.suffixes[0]


def readable_suffixes() -> tuple[str, ...]:
    """Every suffix of a format that reads one image, longest first (so ``.nii.gz`` is tried before ``.nii``)."""
    return tuple(sorted({s for f in FORMATS.values() if f.read is not None for s in f.suffixes}, key=len,
                        reverse=True))


def known_formats() -> str:
    return ", ".join(f.title for f in FORMATS.values())


def format_of(path: str | Path) -> ImageFormat:
    """The format of ``path`` (see the module's docstring); :class:`InputFileError` when none fits."""
    p = Path(path)
    if p.is_dir():
        return FORMATS["dicom-series"]
    name = p.name.lower()
    by_name = _by_suffix(name)
    if not p.is_file() or p.stat().st_size == 0:
        if by_name is not None:
            return by_name                       # the reader says what is wrong (missing, empty)
        raise UnrecognisedFormat(p, "unrecognised image format", f"mmfm reads {known_formats()}")
    head, gzipped = _head(p)
    by_bytes = _by_magic(head)
    if by_name is not None:
        if gzipped and not name.endswith(".gz") and by_name.needs_suffix:
            raise InputFileError(p, f"the file is gzip-compressed but named {p.suffix}",
                                 f"rename it to {p.name}.gz; the reader picks decompression by the name")
        if by_bytes is not None and by_bytes is not by_name and by_name.magic is not None:
            raise InputFileError(p, f"named as {by_name.title} but its content is {by_bytes.title}",
                                 "rename it with the suffix of what it is (or export it again)")
        return by_name
    if by_bytes is None:
        raise UnrecognisedFormat(p, "unrecognised image format (neither the name nor the first bytes match one)",
                             f"mmfm reads {known_formats()}")
    if by_bytes.needs_suffix:
        raise InputFileError(p, f"its content is {by_bytes.title} but the name has no such suffix",
                             f"rename it to {p.name}{by_bytes.suffixes[0]}{'.gz' if gzipped else ''}; the "
                             "reader picks the format by the name")
    return by_bytes


# ---- the formats mmfm reads (readers imported lazily: SimpleITK, pydicom and mrcfile are large) ----------------

def _read_dicom(p: Path, modality: str | None, voi_lut: bool | None) -> Image:
    from mmfm.data.io.dicom import read_dicom_file

    return read_dicom_file(p, modality=modality, voi_lut=voi_lut)


def _read_series(p: Path, modality: str | None, voi_lut: bool | None) -> Image:
    from mmfm.data.io.dicom import read_dicom_series

    return read_dicom_series(p, modality=modality)


def _read_nifti(p: Path, modality: str | None, voi_lut: bool | None) -> Image:
    from mmfm.data.io.nifti import read_nifti

    return read_nifti(p, modality=modality or UNKNOWN)


def _read_itk(p: Path, modality: str | None, voi_lut: bool | None) -> Image:
    from mmfm.data.io.itk import read_itk

    return read_itk(p, modality=modality or UNKNOWN)


def _read_raster(p: Path, modality: str | None, voi_lut: bool | None) -> Image:
    from mmfm.data.io.raster import read_raster

    img = read_raster(p, modality=modality or UNKNOWN)
    img.meta["assumed"] = {"spacing": "1 mm per pixel (PNG/JPEG/TIFF carry no physical spacing)"}
    return img


def _read_mrc(p: Path, modality: str | None, voi_lut: bool | None) -> Image:
    from mmfm.data.io.mrc import read_mrc

    return read_mrc(p, modality=modality or UNKNOWN)


def _dicom_info(p: Path) -> dict[str, Any]:
    from mmfm.data.io.dicom import dicom_info

    return dicom_info(p)


def _nifti_info(p: Path) -> dict[str, Any]:
    from mmfm.data.io.nifti import nifti_info

    return nifti_info(p)


def _itk_info(p: Path) -> dict[str, Any]:
    from mmfm.data.io.itk import itk_info

    return itk_info(p)


def _raster_info(p: Path) -> dict[str, Any]:
    from mmfm.data.io.raster import raster_info

    return raster_info(p)


def _mrc_info(p: Path) -> dict[str, Any]:
    img = _read_mrc(p, None, None)
    return {"spatial_dims": img.spatial_dims, "depth": img.spatial_shape[-1] if img.spatial_dims == 3 else 1,
            "channels": int(img.array.shape[0])}


def _nifti_magic(h: bytes) -> bool:
    return h[344:348] in (b"n+1\0", b"ni1\0") or h[4:8] in (b"n+2\0", b"ni2\0")


def _metaimage_magic(h: bytes) -> bool:
    first = h.split(b"\n", 1)[0].strip()
    return first.split(b"=", 1)[0].strip() in (b"ObjectType", b"NDims") and b"=" in first


UNKNOWN = "unknown"

register_format(ImageFormat("dicom", "DICOM (.dcm, or a file starting with the DICM preamble)", (".dcm", ".dicom"),
                            _read_dicom, _dicom_info, magic=lambda h: h[128:132] == b"DICM"))
register_format(ImageFormat("dicom-series", "a DICOM series (a folder)", (), _read_series, None))
register_format(ImageFormat("nifti", "NIfTI (.nii/.nii.gz)", (".nii", ".nii.gz"), _read_nifti, _nifti_info,
                            magic=_nifti_magic, needs_suffix=True))
register_format(ImageFormat("metaimage", "MetaImage (.mha/.mhd)", (".mha", ".mhd"), _read_itk, _itk_info,
                            magic=_metaimage_magic, needs_suffix=True))
register_format(ImageFormat("nrrd", "NRRD (.nrrd/.nhdr)", (".nrrd", ".nhdr"), _read_itk, _itk_info,
                            magic=lambda h: h[:4] == b"NRRD", needs_suffix=True))
register_format(ImageFormat("raster", "PNG/JPEG/TIFF/BMP", (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"),
                            _read_raster, _raster_info,
                            magic=lambda h: h[:8] == b"\x89PNG\r\n\x1a\n" or h[:3] == b"\xff\xd8\xff"
                            or h[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")))      # BMP's "BM": too weak
register_format(ImageFormat("mrc", "MRC (.mrc)", (".mrc",), _read_mrc, _mrc_info,
                            magic=lambda h: h[208:212] == b"MAP "))
register_format(ImageFormat("npz", "MedMNIST .npz (a dataset)", (".npz",), None, None))
