"""DICOM files and series through pydicom (pixel decoding through pylibjpeg for compressed transfer syntaxes).

Why not MONAI's ``PydicomReader``: on pydicom's own test files it ignores MONOCHROME1 (inverted radiographs),
mis-orders multi-frame data (frames land on the middle axis) and treats RGB samples as a spatial axis. Geometry
here follows the DICOM standard (PS3.3 C.7.6.2.1.1) and is checked against pydicom in the tests.

Privacy: nothing from the patient module (name, ID, birth date, ...) is returned. Patient and study identifiers
come back only as keyed pseudonyms (HMAC-SHA256, :mod:`mmfm.data.pseudonym`) so that splits by patient work
without exposing PHI.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from mmfm.data.io.checks import check_file, check_promised_size, check_shape, check_voxels, memory_limit
from mmfm.data.modality import canonical_modality
from mmfm.data.pseudonym import pseudonym
from mmfm.data.sample import Image
from mmfm.errors import InputFileError

# Header fields that matter for preprocessing and carry no PHI; the only ones `mmfm data inspect` shows.
SAFE_FIELDS = ("Modality", "BodyPartExamined", "Manufacturer", "ManufacturerModelName", "PhotometricInterpretation",
               "BitsStored", "Rows", "Columns", "NumberOfFrames", "PixelSpacing", "ImagerPixelSpacing",
               "SliceThickness", "SpacingBetweenSlices", "RescaleSlope", "RescaleIntercept", "WindowCenter",
               "WindowWidth", "KVP", "ConvolutionKernel", "MagneticFieldStrength", "ViewPosition")
_COLOUR = {"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "PALETTE COLOR"}


def is_dicom(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def _plain(v: Any) -> Any:
    """A JSON-able value: numbers as numbers, anything else (a multi-valued string such as a convolution kernel
    ``['Br38f', '3']``) as text."""
    if isinstance(v, (int, float)):
        return v
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)


def safe_header(ds: pydicom.Dataset) -> dict[str, Any]:
    out: dict[str, Any] = {"TransferSyntaxUID": str(getattr(ds.file_meta, "TransferSyntaxUID", ""))}
    for name in SAFE_FIELDS:
        if name in ds:
            v = ds[name].value
            out[name] = [_plain(x) for x in v] if isinstance(v, pydicom.multival.MultiValue) else _plain(v)
    return out


def _read(path: Path, stop_before_pixels: bool = False) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        raise InputFileError(path, "not a DICOM file (no 'DICM' preamble)",
                             "check the file; a DICOM without preamble can be repaired with dcmtk's dcmconv") from None
    except Exception as e:  # pydicom raises many types on truncated streams
        raise InputFileError(path, f"DICOM header is truncated or corrupt ({type(e).__name__}: {e})",
                             "copy the file again") from None


def _check_pixel_header(ds: pydicom.Dataset, path: Path) -> None:
    """Rows x Columns x frames x samples x bits promised by the header, against the pixel data present."""
    try:
        rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
        frames = int(ds.get("NumberOfFrames") or 1)
        spp = int(ds.get("SamplesPerPixel") or 1)
        bits = int(ds.get("BitsAllocated") or 0)
    except (TypeError, ValueError) as e:
        raise InputFileError(path, f"DICOM image header is unreadable ({e})", "copy the file again") from None
    check_shape(path, (rows, cols, frames, spp), "pixel data (rows, columns, frames, samples)")
    check_voxels(path, (cols, rows, frames))
    if bits <= 0:
        raise InputFileError(path, "DICOM header has no valid BitsAllocated", "the file is damaged; export it again")
    promised = (rows * cols * frames * spp * bits + 7) // 8  # BitsAllocated: 1 (packed) or a multiple of 8
    if promised > memory_limit():
        raise InputFileError(path, f"the header declares {rows}x{cols}x{frames} pixels ({promised:,} bytes), more "
                                   "than this machine's memory", "the header is corrupt")
    ts = getattr(ds.file_meta, "TransferSyntaxUID", None)
    if "PixelData" in ds and ts is not None and not ts.is_compressed:
        check_promised_size(path, promised, len(ds.PixelData))


def _pixels(ds: pydicom.Dataset, path: Path, voi_lut: bool | None) -> np.ndarray:
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise InputFileError(path, f"DICOM has no pixel data (SOP class {ds.get('SOPClassUID', '?')})",
                             "this is a non-image object (report, structure set, ...); point mmfm at image files")
    _check_pixel_header(ds, path)
    try:
        arr = ds.pixel_array
    except Exception as e:
        ts = getattr(ds.file_meta, "TransferSyntaxUID", "?")
        raise InputFileError(path, f"cannot decode pixel data, transfer syntax {ts} ({type(e).__name__}: {e})",
                             "the file may be truncated; for an unsupported codec install pylibjpeg plugins "
                             "or gdcm") from None
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric in _COLOUR:
        return arr.astype(np.float32)
    arr = apply_modality_lut(arr, ds).astype(np.float32)  # stored values -> HU / modality units
    modality = str(ds.get("Modality", ""))
    if voi_lut is None:
        voi_lut = modality in ("CR", "DX", "DR", "MG", "RG")
    if voi_lut and ("VOILUTSequence" in ds or "WindowCenter" in ds):
        arr = apply_voi_lut(arr, ds).astype(np.float32)
    if photometric == "MONOCHROME1":  # 0 is white: invert so that larger is brighter, as for MONOCHROME2
        arr = arr.max() + arr.min() - arr
    return arr


def _spacing_ij(ds: pydicom.Dataset, assumed: dict[str, str] | None = None) -> tuple[float, float]:
    ps = next((v for v in (ds.get("PixelSpacing"), ds.get("ImagerPixelSpacing"))
               if v is not None and len(v) == 2 and min(float(x) for x in v) > 0), None)
    if ps is None:
        try:
            ps = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
        except (AttributeError, IndexError, KeyError):
            ps = [1.0, 1.0]
            if assumed is not None:
                assumed["spacing"] = "1 mm x 1 mm (no PixelSpacing / ImagerPixelSpacing in the header)"
    return float(ps[1]), float(ps[0])  # PixelSpacing = (row spacing, column spacing) -> (i = column, j = row)


def _orientation(ds: pydicom.Dataset, assumed: dict[str, str] | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    iop = ds.get("ImageOrientationPatient")
    ipp = ds.get("ImagePositionPatient")
    if iop is None:
        try:
            frame = ds.PerFrameFunctionalGroupsSequence[0]
            iop = frame.PlaneOrientationSequence[0].ImageOrientationPatient
            ipp = frame.PlanePositionSequence[0].ImagePositionPatient
        except (AttributeError, IndexError, KeyError):
            iop = [1, 0, 0, 0, 1, 0]
            if assumed is not None:
                assumed["orientation"] = "rows along patient x, columns along y (no ImageOrientationPatient)"
    if ipp is None and assumed is not None:
        assumed["origin"] = "(0, 0, 0) (no ImagePositionPatient)"
    row_cos, col_cos = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    return row_cos, col_cos, np.asarray(ipp if ipp is not None else [0, 0, 0], float)


def _affine(row_cos: np.ndarray, col_cos: np.ndarray, origin: np.ndarray, sp_i: float, sp_j: float,
            normal_step: np.ndarray) -> np.ndarray:
    """Index (i, j, k) -> LPS mm per DICOM, then LPS -> RAS (negate x and y)."""
    aff = np.eye(4)
    aff[:3, 0], aff[:3, 1], aff[:3, 2], aff[:3, 3] = row_cos * sp_i, col_cos * sp_j, normal_step, origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ aff


def _ids(ds: pydicom.Dataset, path: Path) -> dict[str, Any]:
    return {"patient_id": pseudonym(str(ds.get("PatientID", "")), "patient"),
            "study_id": pseudonym(str(ds.get("StudyInstanceUID", "")), "study"),
            "series_id": pseudonym(str(ds.get("SeriesInstanceUID", "")), "series"),
            "slice_index": float(ds.get("InstanceNumber") or 0)}


def _modality(ds: pydicom.Dataset, override: str | None) -> str:
    return canonical_modality(override or str(ds.get("Modality", "") or "XR"))


def read_dicom_file(path: str | Path, modality: str | None = None, voi_lut: bool | None = None) -> Image:
    """One DICOM file: single-frame -> (C, I, J); multi-frame -> (C, I, J, K) with frames on K."""
    p = check_file(path)
    ds = _read(p)
    arr = _pixels(ds, p, voi_lut)
    colour = str(ds.get("PhotometricInterpretation", "")) in _COLOUR
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if colour:
        arr = np.moveaxis(arr, -1, 0)  # (3, [frames,] rows, cols)
    else:
        arr = arr[None]
    # (C, [frames,] rows, cols) -> (C, cols, rows[, frames])
    arr = np.swapaxes(arr, -1, -2)
    if frames > 1:
        arr = np.moveaxis(arr, 1, -1)
    assumed: dict[str, str] = {}
    sp_i, sp_j = _spacing_ij(ds, assumed)
    row_cos, col_cos, origin = _orientation(ds, assumed)
    thickness = float(ds.get("SpacingBetweenSlices") or ds.get("SliceThickness") or 0.0)
    if thickness <= 0:
        thickness = 1.0
        if frames > 1:
            assumed["slice_spacing"] = "1 mm (no SpacingBetweenSlices / SliceThickness)"
    affine = _affine(row_cos, col_cos, origin, sp_i, sp_j, np.cross(row_cos, col_cos) * thickness)
    meta = {"format": "dicom", "header": safe_header(ds), "ids": _ids(ds, p), "assumed": assumed}
    return Image(array=np.ascontiguousarray(arr, dtype=np.float32), modality=_modality(ds, modality),
                 affine=affine, meta=meta)


def read_dicom_series(folder: str | Path, modality: str | None = None, series_uid: str | None = None) -> Image:
    """A folder of single-frame DICOM slices -> one volume (1, I, J, K), sorted along the slice normal."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputFileError(folder, "folder not found")
    files = [f for f in sorted(folder.rglob("*")) if f.is_file() and f.stat().st_size > 0 and is_dicom(f)]
    if not files:
        raise InputFileError(folder, "no DICOM files in this folder", "point mmfm at the folder of one series")
    by_series: dict[str, list[tuple[Path, pydicom.Dataset]]] = defaultdict(list)
    for f in files:
        hdr = _read(f, stop_before_pixels=True)
        by_series[str(hdr.get("SeriesInstanceUID", ""))].append((f, hdr))
    if (series_uid is None or series_uid not in by_series) and len(by_series) > 1:
        raise InputFileError(folder, f"holds {len(by_series)} series",
                             "put each series in its own folder, or pass series_uid")
    items = by_series[series_uid] if series_uid is not None and series_uid in by_series else \
        next(iter(by_series.values()))
    row_cos, col_cos, _ = _orientation(items[0][1])
    normal = np.cross(row_cos, col_cos)
    positions = [float(np.dot(normal, _orientation(h)[2])) for _, h in items]
    order = np.argsort(positions, kind="stable")
    items = [items[i] for i in order]
    pos = np.asarray(positions)[order]
    if len(items) > 1 and np.any(np.diff(pos) <= 1e-6):
        raise InputFileError(folder, "two slices share a position", "the folder mixes acquisitions; split it")
    step = float(np.median(np.diff(pos))) if len(items) > 1 else float(items[0][1].get("SliceThickness") or 1.0)
    try:
        check_voxels(folder, (int(items[0][1].get("Columns") or 0), int(items[0][1].get("Rows") or 0), len(items)))
    except (TypeError, ValueError):
        pass                                   # an unreadable header is refused with its own message below
    slices: list[Any] = []
    for f, _ in items:
        ds = _read(f)
        s = _pixels(ds, f, voi_lut=False)
        if s.ndim != 2:
            raise InputFileError(f, f"slice has shape {s.shape}; a series must hold single-frame greyscale slices")
        if slices and s.shape != slices[0].shape:
            raise InputFileError(f, f"slice shape {s.shape} differs from {slices[0].shape} in the same series")
        slices.append(s.T)  # (cols, rows)
    first = items[0][1]
    assumed: dict[str, str] = {}
    sp_i, sp_j = _spacing_ij(first, assumed)
    affine = _affine(row_cos, col_cos, _orientation(first, assumed)[2], sp_i, sp_j, normal * step)
    meta = {"format": "dicom-series", "n_files": len(items), "header": safe_header(first),
            "ids": _ids(first, items[0][0]), "assumed": assumed}
    return Image(array=np.stack(slices, axis=-1)[None].astype(np.float32), modality=_modality(first, modality),
                 affine=affine, meta=meta)


def dicom_info(path: Path) -> dict[str, int]:
    """Header only: a single-frame file is 2D, a multi-frame one 3D (frames on the last axis)."""
    ds = _read(path, stop_before_pixels=True)
    if "Rows" not in ds:
        raise InputFileError(path, f"DICOM has no image (SOP class {ds.get('SOPClassUID', '?')})",
                             "structured reports, RT structures and the like are not images")
    frames = int(ds.get("NumberOfFrames") or 1)
    spp = int(ds.get("SamplesPerPixel") or 1)
    out: dict[str, Any] = {"spatial_dims": 3 if frames > 1 else 2, "depth": frames, "channels": spp,
                           "modality": str(ds.get("Modality") or "unknown")}
    ps = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    if ps is not None and len(ps) == 2:
        out["spacing"] = [round(float(ps[1]), 4), round(float(ps[0]), 4)]
        step = ds.get("SpacingBetweenSlices") or ds.get("SliceThickness")
        if step:
            out["slice_spacing"] = round(float(step), 4)
            if frames > 1:
                out["spacing"].append(out["slice_spacing"])
    return out


def dicom_series_groups(files: list[Path]
                        ) -> tuple[dict[str, list[Path]], list[tuple[Path, str]], dict[str, float | None]]:
    """Group DICOM files by SeriesInstanceUID from their headers, in one pass over them: (groups, unreadable files
    with the reason, each group's slice spacing: the median distance between neighbouring slice positions along the
    slice normal, as :func:`read_dicom_series` stacks them; None without positions)."""
    groups: dict[str, list[Path]] = defaultdict(list)
    positions: dict[str, list[float]] = defaultdict(list)
    bad: list[tuple[Path, str]] = []
    for f in files:
        try:
            hdr = _read(f, stop_before_pixels=True)
            if "Rows" not in hdr:
                raise InputFileError(f, "DICOM without an image")
            if int(hdr.get("NumberOfFrames") or 1) > 1:
                groups[f"file:{f}"].append(f)       # a multi-frame file is a volume on its own
                continue
            uid = str(hdr.get("SeriesInstanceUID", "") or "")
            if not uid:  # anonymised files may lack it: slices of one geometry in one folder are one series
                iop = tuple(round(float(v), 3) for v in (hdr.get("ImageOrientationPatient") or []))
                uid = f"no-uid:{f.parent}:{hdr.get('Rows')}x{hdr.get('Columns')}:{iop}:{hdr.get('SeriesNumber')}"
            groups[uid].append(f)
            if "ImagePositionPatient" in hdr:
                row, col, origin = _orientation(hdr)
                positions[uid].append(float(np.dot(np.cross(row, col), origin)))
        except InputFileError as e:
            bad.append((f, e.what))
    steps: dict[str, float | None] = {}
    for uid, members in groups.items():
        pos = np.sort(positions.get(uid, []))
        steps[uid] = float(np.median(np.diff(pos))) if len(pos) == len(members) and len(pos) > 1 else None
    return dict(groups), bad, steps


def series_info(folder: Path, series_uid: str | None = None) -> dict[str, int]:
    files = [f for f in sorted(Path(folder).rglob("*")) if f.is_file() and f.stat().st_size > 0 and is_dicom(f)]
    groups, _, _ = dicom_series_groups(files)
    if series_uid == "":   # a series without SeriesInstanceUID (anonymised)
        files = next((v for k, v in groups.items() if k.startswith("no-uid:")), [])
    elif series_uid is not None:
        files = groups.get(series_uid, [])
    if not files:
        raise InputFileError(folder, "no DICOM files of this series in the folder")
    first = dicom_info(files[0])
    return {**first, "spatial_dims": 3, "depth": len(files)}

