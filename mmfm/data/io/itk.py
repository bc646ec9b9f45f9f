"""MetaImage (``.mha``/``.mhd`` + raw) and NRRD (``.nrrd``/``.nhdr`` + raw) through SimpleITK.

Geometry is ITK's (origin, spacing and direction cosines in LPS), converted to mmfm's RAS affine. SimpleITK reads
the header first (``ReadImageInformation``) so a header that promises more voxels than the file holds, or more than
this machine's memory, is refused before anything is allocated.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmfm.data.io.checks import check_file, check_promised_size, check_shape, memory_limit
from mmfm.data.sample import Image
from mmfm.errors import InputFileError

ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _sitk():  # imported lazily: SimpleITK is a large module that only these formats need
    import SimpleITK as sitk

    sitk.ProcessObject_SetGlobalWarningDisplay(False)  # ITK prints unsupported meta-data items to stderr
    return sitk


def _data_files(p: Path) -> list[Path]:
    """The detached data file(s) a ``.mhd``/``.nhdr`` header names (empty for ``.mha``/``.nrrd``: one file)."""
    if p.suffix.lower() not in (".mhd", ".nhdr"):
        return []
    key = "ElementDataFile" if p.suffix.lower() == ".mhd" else "data file"
    for line in p.read_text(errors="replace").splitlines():
        name, _, value = line.partition("=" if key == "ElementDataFile" else ":")
        if name.strip().lower() == key.lower():
            value = value.strip()
            if value.upper() in ("LOCAL", "LIST") or "%" in value:
                return []
            return [p.parent / value]
    return []


def _header(p: Path):
    sitk = _sitk()
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise InputFileError(p, f"cannot read the header ({str(e).strip().splitlines()[-1][:200]})",
                             "the file is damaged or not MetaImage/NRRD; check it with `mmfm data inspect`") from None
    return reader


def read_itk(path: str | Path, modality: str = "unknown") -> Image:
    """Read a 2D or 3D MetaImage/NRRD as ``(C, I, J[, K])`` (vector pixels become channels) with a RAS affine."""
    p = check_file(path)
    for data in _data_files(p):
        if not data.exists():
            raise InputFileError(p, f"its data file {data.name} is missing", "keep the header and its data file "
                                                                             "together in one folder")
    reader = _header(p)
    size = tuple(int(s) for s in reader.GetSize())
    check_shape(p, size)
    comps = int(reader.GetNumberOfComponents())
    itemsize = _sitk().GetPixelIDValueAsString(reader.GetPixelID())
    bytes_per = {"8-bit": 1, "16-bit": 2, "32-bit": 4, "64-bit": 8}
    per = next((v for k, v in bytes_per.items() if k in itemsize), 4)
    promised = int(np.prod(size, dtype=np.float64)) * comps * per
    if promised > memory_limit():
        raise InputFileError(p, f"the header declares size {size} ({promised:,} bytes), more than this machine's "
                                "memory", "the header is corrupt, or crop/split the image first")
    raw = _data_files(p)
    if raw and not any(s in "".join(raw[0].suffixes).lower() for s in (".gz", ".zraw")):
        check_promised_size(p, promised, raw[0].stat().st_size)
    try:
        img = reader.Execute()
    except RuntimeError as e:
        raise InputFileError(p, f"cannot read the voxels ({str(e).strip().splitlines()[-1][:200]})",
                             "the file is truncated or damaged; copy or export it again") from None
    sitk = _sitk()
    arr = sitk.GetArrayFromImage(img).astype(np.float32)  # (k, j, i[, c]) for 3D, (j, i[, c]) for 2D
    nd = img.GetDimension()
    if nd not in (2, 3):
        raise InputFileError(p, f"has {nd} dimensions; mmfm reads 2D and 3D MetaImage/NRRD")
    if comps == 1:
        arr = arr[None]
    else:
        arr = np.moveaxis(arr, -1, 0)
    arr = np.ascontiguousarray(np.transpose(arr, (0, *range(nd, 0, -1))))  # -> (C, i, j[, k])
    spacing = np.asarray(img.GetSpacing(), np.float64)
    direction = np.asarray(img.GetDirection(), np.float64).reshape(nd, nd)
    origin = np.asarray(img.GetOrigin(), np.float64)
    lps = np.eye(4)
    lps[:nd, :nd] = direction * spacing[None, :]
    lps[:nd, 3] = origin
    affine = LPS_TO_RAS @ lps
    fmt = "metaimage" if p.suffix.lower() in (".mha", ".mhd") else "nrrd"
    return Image(array=arr, modality=modality, affine=affine, meta={"format": fmt})


def itk_info(path: str | Path) -> dict[str, int]:
    """Header only: spatial dims, size along the last axis (slices) and channels."""
    p = check_file(path)
    reader = _header(p)
    size = reader.GetSize()
    return {"spatial_dims": len(size), "depth": int(size[-1]) if len(size) == 3 else 1,
            "channels": int(reader.GetNumberOfComponents()),
            "spacing": [round(float(v), 4) for v in reader.GetSpacing()]}
