"""Writers: every image file mmfm writes (masks, label maps, warped images, attribution maps), chosen by the
output's name, through one registry: NIfTI (``.nii``/``.nii.gz``), MetaImage (``.mha``), NRRD (``.nrrd``) and
PNG (2D). DICOM results (SEG, RTSTRUCT, parametric maps, SR) reference their source instances and are written by
:mod:`mmfm.data.io.dicom_seg` and its siblings, not here.

``write_image(target, data, affine, name=...)``: ``data`` is the spatial array in mmfm's index order ``(I, J[,
K])`` (a PNG may add a last axis of 3 colours), in the dtype the caller chose; ``affine`` maps voxel indices to RAS
millimetres. ``target`` may be a staging path (:class:`mmfm.workflows.outputs.Staged`), hence ``name``, the final
name whose suffix picks the writer.

Why not MONAI's ``register_writer`` / ``NibabelWriter``: those resample and reorient by metadata dictionaries; mmfm
writes arrays already on the output grid, must keep a NIfTI input's own header (qform/sform codes, units) on a
mask of that input, and writes to staging paths without a suffix; the registry pattern is MONAI's.
"""

from __future__ import annotations

import gzip
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmfm.errors import ConfigError


@dataclass(frozen=True)
class WriteOptions:
    like: Path | None = None        # a NIfTI whose header the output keeps (a mask of that NIfTI)
    intent: str | None = None       # NIfTI intent ("vector" for a displacement field)
    gz: bool = False                # from the name: .nii.gz


@dataclass(frozen=True)
class ImageWriter:
    name: str
    suffixes: tuple[str, ...]
    spatial_dims: tuple[int, ...]
    write: Callable[[Path, np.ndarray, np.ndarray, WriteOptions], None]


WRITERS: dict[str, ImageWriter] = {}


def register_writer(w: ImageWriter) -> ImageWriter:
    WRITERS[w.name] = w
    return w


def writer_for(name: str | Path) -> ImageWriter:
    """The writer for an output named ``name`` (longest suffix first); :class:`ConfigError` listing the suffixes
    otherwise."""
    low = Path(name).name.lower()
    found = [(len(s), w) for w in WRITERS.values() for s in w.suffixes if low.endswith(s)]
    if not found:
        known = ", ".join(s for w in WRITERS.values() for s in w.suffixes)
        raise ConfigError(f"cannot write an image named {Path(name).name}: unknown suffix", f"use one of {known}")
    return max(found, key=lambda t: t[0])[1]


def write_image(target: str | Path, data: np.ndarray, affine: np.ndarray | None = None, *,
                name: str | Path | None = None, like: str | Path | None = None, intent: str | None = None) -> Path:
    """Write ``data`` to ``target`` with the writer ``name`` (default: ``target``) calls for; see the module."""
    final = Path(name if name is not None else target)
    w = writer_for(final)
    data = np.asarray(data)
    dims = data.ndim - (1 if w.name == "png" and data.ndim == 3 and data.shape[-1] in (3, 4) else 0)
    if dims not in w.spatial_dims:
        raise ConfigError(f"{final.name}: a {dims}D array cannot be written as {w.name}",
                          "write a volume as .nii.gz, .mha or .nrrd" if w.name == "png" else "give a 2D or 3D array")
    aff = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
    opts = WriteOptions(like=Path(like) if like is not None else None, intent=intent,
                        gz=final.name.lower().endswith(".gz"))
    w.write(Path(target), data, aff, opts)
    return Path(target)


def _nifti(target: Path, data: np.ndarray, affine: np.ndarray, o: WriteOptions) -> None:
    import nibabel as nib

    if o.like is not None:
        src = nib.load(str(o.like))
        shaped = data.reshape(src.shape[:3]) if int(np.prod(src.shape[:3])) == data.size else data
        header = src.header.copy()
        header.set_data_dtype(data.dtype)
        header["scl_slope"], header["scl_inter"] = 1.0, 0.0
        nii = nib.Nifti1Image(shaped, src.affine, header)
    else:
        nii = nib.Nifti1Image(data, affine)
        nii.set_qform(affine, code=1)
        nii.set_sform(affine, code=1)
    if o.intent:
        nii.header.set_intent(o.intent)
    raw = nii.to_bytes()
    target.write_bytes(gzip.compress(raw, compresslevel=6) if o.gz else raw)


def _png(target: Path, data: np.ndarray, affine: np.ndarray, o: WriteOptions) -> None:
    from PIL import Image as PILImage

    if data.dtype != np.uint8:
        raise ConfigError(f"a PNG holds 8-bit values; this array is {data.dtype}", "scale it to 0..255 first")
    # mmfm arrays are (i = column, j = row): the PNG is rows x columns
    plane = data.T if data.ndim == 2 else data.transpose(1, 0, 2)
    PILImage.fromarray(np.ascontiguousarray(plane)).save(target, format="PNG")


def _itk(target: Path, data: np.ndarray, affine: np.ndarray, io: str) -> None:
    from mmfm.data.io.itk import simpleitk

    sitk = simpleitk()
    nd = data.ndim
    img = sitk.GetImageFromArray(np.ascontiguousarray(data.T))      # SimpleITK arrays are (k, j, i)
    m = affine[:nd, :nd] if nd == 3 else affine[:2, :2]
    spacing = np.linalg.norm(m, axis=0)
    spacing = np.where(spacing > 0, spacing, 1.0)
    lps = np.diag([-1.0, -1.0, 1.0][:nd])                              # ITK's physical space is LPS
    img.SetSpacing([float(s) for s in spacing])
    img.SetDirection([float(v) for v in (lps @ (m / spacing)).ravel()])
    img.SetOrigin([float(v) for v in lps @ affine[:nd, 3]])
    # SimpleITK's MetaImage writer derives file names from the name it is given (a staging name would get a
    # detached data file): write under the real suffix in a private folder beside the target, then move it there
    suffix = ".nrrd" if io == "NrrdImageIO" else ".mha"
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".mmfm-write-") as tmp:
        writer = sitk.ImageFileWriter()
        writer.SetImageIO(io)
        writer.SetFileName(str(Path(tmp) / f"image{suffix}"))
        writer.UseCompressionOn()
        writer.Execute(img)
        os.replace(Path(tmp) / f"image{suffix}", target)


register_writer(ImageWriter("nifti", (".nii", ".nii.gz"), (2, 3, 4, 5), _nifti))     # 4-5D: vector fields
register_writer(ImageWriter("png", (".png",), (2,), _png))
register_writer(ImageWriter("metaimage", (".mha",), (2, 3), lambda t, d, a, o: _itk(t, d, a, "MetaImageIO")))
register_writer(ImageWriter("nrrd", (".nrrd",), (2, 3), lambda t, d, a, o: _itk(t, d, a, "NrrdImageIO")))
