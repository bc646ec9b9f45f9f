"""MetaImage (``.mha``/``.mhd`` + raw) and NRRD (``.nrrd``/``.nhdr`` + raw) through SimpleITK.

Geometry is ITK's (origin, spacing and direction cosines in LPS), converted to mmfm's RAS affine. SimpleITK reads
the header first (``ReadImageInformation``) so a header that promises more voxels than the file holds, or more than
this machine's memory, is refused before anything is allocated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def simpleitk():  # imported lazily: SimpleITK is a large module that only these formats need
    import SimpleITK as sitk

    sitk.ProcessObject_SetGlobalWarningDisplay(False)  # ITK prints unsupported meta-data items to stderr
    return sitk


MAX_HEADER_BYTES = 1 << 20     # a MetaImage/NRRD header is text of a few hundred bytes
MAX_DATA_FILES = 100_000       # slices a LIST or a file-name pattern may name


@dataclass
class ItkHeader:
    """What mmfm reads from a MetaImage/NRRD header itself (SimpleITK reads the geometry): where the voxels are."""

    fields: dict[str, str]     # lower-cased keys
    data_files: list[Path]     # detached data files, each checked to lie inside the header's folder; [] if attached
    header_bytes: int          # where attached voxel data starts (an upper bound on the header's length)
    compressed: bool           # deflate (MetaImage CompressedData, NRRD gzip)
    encoding: str              # NRRD encoding (raw, gzip, bzip2, ascii, hex); "raw" for MetaImage


def _lines(p: Path) -> list[tuple[str, int]]:
    """The header's text lines with the byte offset after each, up to :data:`MAX_HEADER_BYTES`."""
    with open(p, "rb") as f:
        head = f.read(MAX_HEADER_BYTES)
    out, pos = [], 0
    for raw in head.splitlines(keepends=True):
        pos += len(raw)
        out.append((raw.decode("latin-1").rstrip("\r\n"), pos))
    return out


# the field that names detached voxel data, matched generously (any case, any spacing): a line the library might
# read as this field must never be missed here
_DATA_FIELD = {False: re.compile(r"^\s*element\s*data\s*file\s*=(.*)$", re.I),
               True: re.compile(r"^\s*data\s*file\s*:(?!=)(.*)$", re.I)}


def read_itk_header(p: Path) -> ItkHeader:
    """Parse the MetaImage (``Key = Value`` up to ``ElementDataFile``) or NRRD (``key: value`` up to an empty line)
    header of ``p`` and confine its detached data file(s) to the header's own folder.

    Why by hand: SimpleITK follows whatever path ``ElementDataFile`` / ``data file`` names (absolute, ``..``, a
    symbolic link out), so a small header from elsewhere could make mmfm read any file on the machine."""
    nrrd = p.suffix.lower() in (".nrrd", ".nhdr")
    fields: dict[str, str] = {}
    data_value, rest, end, ended = None, [], 0, False
    lines = _lines(p)
    for i, (line, pos) in enumerate(lines):
        end = pos
        if nrrd and i > 0 and line == "":
            ended = True
            break                                                # the empty line ends an NRRD header
        found = _DATA_FIELD[nrrd].match(line)
        if found:
            data_value = found.group(1).strip()
            rest = [ln.strip() for ln, _ in lines[i + 1:] if ln.strip()]
            ended = not nrrd                                     # ElementDataFile is the last MetaImage field
            if not nrrd:
                break
            continue
        key, sep, value = line.partition(":" if nrrd else "=")
        if sep and not (nrrd and value.startswith("=")):
            fields[" ".join(key.strip().lower().split())] = value.strip()
    if not ended and p.stat().st_size > MAX_HEADER_BYTES:
        raise InputFileError(p, f"its header does not end within the first {MAX_HEADER_BYTES:,} bytes",
                             "the file is damaged or crafted; export it again")
    names, candidates = _data_names(p, data_value, rest) if data_value is not None else ([], [])
    root = p.parent.resolve()
    for name in candidates:
        target = (p.parent / name).resolve()
        if Path(name).is_absolute() or ".." in Path(name).parts or not target.is_relative_to(root) or target == root:
            # the message names neither the path nor whether it exists: a header from elsewhere must learn nothing
            raise InputFileError(p, "its data file lies outside the header's folder (an absolute path, '..' or a "
                                    "link out of the folder)",
                                 "keep the header and its data file in one folder and name the data file relative "
                                 "to it (e.g. ElementDataFile = scan.raw)")
    compressed = fields.get("compresseddata", "").lower() == "true" or \
        fields.get("encoding", "raw").lower() in ("gzip", "gz")
    return ItkHeader(fields, [p.parent / n for n in names], end, compressed,
                     fields.get("encoding", "raw").lower() if nrrd else "raw")


def _data_names(p: Path, value: str, rest: list[str]) -> tuple[list[str], list[str]]:
    """(the file names one ``ElementDataFile`` / ``data file`` value stands for, every name that must be confined):
    none (``LOCAL``), the lines after ``LIST``, a printf pattern ``name%03d.raw first last step`` expanded, or the
    value itself. A value with ``%`` is confined read both ways, as a pattern and as a plain name."""
    tokens = value.split()
    if not tokens or value.upper() == "LOCAL":
        return [], []
    if tokens[0].upper() == "LIST":
        return rest, rest
    if "%" in tokens[0] and len(tokens) >= 2:
        try:
            nums = [int(t) for t in tokens[1:4]]
            first, last, step = nums[0], (nums + [nums[0]])[1], (nums + [1, 1])[2]
            indices = range(first, last + (1 if step > 0 else -1), step)
            if len(indices) > MAX_DATA_FILES:
                raise ValueError
            names = [tokens[0] % i for i in indices]
        except (ValueError, TypeError, ZeroDivisionError, OverflowError):
            raise InputFileError(p, "its data file pattern cannot be read", "name the data file(s) explicitly") \
                from None
        return names, [*names, tokens[0], value]
    return [value], [value]


def _promised_bound(p: Path, h: ItkHeader, promised: int, elements: int) -> None:
    """What the header promises against what the file(s) can hold, for every encoding."""
    if h.data_files:
        available = sum(f.stat().st_size for f in h.data_files)
        where = "the data file(s)"
    else:
        available = max(p.stat().st_size - h.header_bytes, 0)
        where = ""
    if h.compressed:
        check_promised_size(p, promised, available * DEFLATE_MAX_RATIO, f"{where} even deflate-compressed".strip())
    elif h.encoding in ("raw",):
        check_promised_size(p, promised, available, where)
    elif h.encoding in ("ascii", "text", "txt"):
        check_promised_size(p, elements, available, "as text (one value needs at least one character)")
    elif h.encoding == "hex":
        check_promised_size(p, 2 * promised, available, "as hex (two characters a byte)")
    # bzip2 can expand without bound: only the memory limit and the caller's voxel budget hold


def _header(p: Path):
    sitk = simpleitk()
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(p))
    # the reader the suffix names, never one chosen by sniffing the content
    reader.SetImageIO("MetaImageIO" if p.suffix.lower() in (".mha", ".mhd") else "NrrdImageIO")
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise InputFileError(p, f"cannot read the header ({str(e).strip().splitlines()[-1][:200]})",
                             "the file is damaged or not MetaImage/NRRD; check it with `mmfm data inspect`") from None
    return reader


def read_itk(path: str | Path, modality: str = "unknown") -> Image:
    """Read a 2D or 3D MetaImage/NRRD as ``(C, I, J[, K])`` (vector pixels become channels) with a RAS affine."""
    p = check_file(path)
    h = read_itk_header(p)
    for data in h.data_files:
        if not data.is_file():
            raise InputFileError(p, f"its data file {data.name} is missing", "keep the header and its data file "
                                                                             "together in one folder")
    reader = _header(p)
    size = tuple(int(s) for s in reader.GetSize())
    check_shape(p, size)
    check_voxels(p, size)
    comps = int(reader.GetNumberOfComponents())
    itemsize = simpleitk().GetPixelIDValueAsString(reader.GetPixelID())
    bytes_per = {"8-bit": 1, "16-bit": 2, "32-bit": 4, "64-bit": 8}
    per = next((v for k, v in bytes_per.items() if k in itemsize), 4)
    elements = int(np.prod(size, dtype=np.float64)) * comps
    promised = elements * per
    if promised > memory_limit():
        raise InputFileError(p, f"the header declares size {size} ({promised:,} bytes), more than this machine's "
                                "memory", "the header is corrupt, or crop/split the image first")
    _promised_bound(p, h, promised, elements)
    try:
        img = reader.Execute()
    except RuntimeError as e:
        raise InputFileError(p, f"cannot read the voxels ({str(e).strip().splitlines()[-1][:200]})",
                             "the file is truncated or damaged; copy or export it again") from None
    sitk = simpleitk()
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


def itk_info(path: str | Path) -> dict[str, Any]:
    """Header only: spatial dims, size along the last axis (slices) and channels."""
    p = check_file(path)
    read_itk_header(p)
    reader = _header(p)
    size = reader.GetSize()
    return {"spatial_dims": len(size), "depth": int(size[-1]) if len(size) == 3 else 1,
            "channels": int(reader.GetNumberOfComponents()),
            "spacing": [round(float(v), 4) for v in reader.GetSpacing()]}
