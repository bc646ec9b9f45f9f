"""DICOM outputs of a segmentation: a Segmentation object (SEG) with highdicom and an RT Structure Set (RTSTRUCT)
with rt-utils, both on the source images' own geometry and referencing them.

A label map here is an mmfm array on the source's voxel grid: (I, J) for one 2D image, (I, J, K) for a series
(K in slice-position order, as :func:`mmfm.data.io.dicom.read_dicom_series` stacks it) or a multi-frame file (K in
frame order), values 0 (background) and 1..N (the structures ``names`` lists). A DICOM frame is (rows = J,
columns = I), so frame k is ``labels[:, :, k].T``.

Privacy: the writers copy from the source only what the standard requires to reference it (the patient and study
modules' Type 1/2 identifiers, which a viewer needs to file the result with its study). highdicom and rt-utils
also copy optional (Type 3) ones such as the patient's age, weight, other IDs and history, the study description
and the institution: :func:`_required_identifiers_only` drops them before the file is written. Nothing is logged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from mmfm.data.io.dicom import _orientation, _read, is_dicom
from mmfm.errors import ConfigError, InputFileError

DICOM_FORMATS = ("dicom", "dicom-series")
RTSTRUCT_SUFFIX = ".rtstruct.dcm"
_PATIENT_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex")     # Patient module, Type 2
_OPTIONAL_IDENTIFYING = ("StudyDescription", "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
                         "PhysiciansOfRecord", "NameOfPhysiciansReadingStudy", "OperatorsName", "StationName")


def _required_identifiers_only(ds: pydicom.Dataset) -> None:
    """Drop what the libraries copied from the source beyond what the IOD requires: every patient attribute
    (group 0010) but the Patient module's Type 2 ones, and optional study / equipment fields that can name
    people or places. Type 2 fields the IOD requires stay, empty where they named someone."""
    for elem in list(ds):
        if elem.tag.group == 0x0010 and elem.keyword not in _PATIENT_TYPE2:
            del ds[elem.tag]
    for keyword in _OPTIONAL_IDENTIFYING:
        if keyword in ds:
            delattr(ds, keyword)


def _codes() -> dict[str, tuple[Any, Any]]:
    """Structure name (lower case) -> (SNOMED CT property category, property type), DICOM CID 7150 / 7151."""
    from pydicom.sr.codedict import codes

    organ, abnormal = codes.SCT.AnatomicalStructure, codes.SCT.MorphologicallyAbnormalStructure
    table = {name: (organ, getattr(codes.SCT, attr)) for name, attr in (
        ("liver", "Liver"), ("kidney", "Kidney"), ("spleen", "Spleen"), ("lung", "Lung"), ("brain", "Brain"),
        ("pancreas", "Pancreas"), ("heart", "Heart"), ("stomach", "Stomach"), ("aorta", "Aorta"),
        ("gallbladder", "Gallbladder"), ("bladder", "Bladder"), ("prostate", "Prostate"), ("bone", "Bone"))}
    for name in ("tumour", "tumor", "neoplasm", "cancer"):
        table[name] = (abnormal, codes.SCT.Neoplasm)
    for name in ("lesion", "mass"):
        table[name] = (abnormal, getattr(codes.SCT, name.capitalize()))
    return table


def property_codes(name: str) -> tuple[Any, Any]:
    """(category, type) codes of a structure: SNOMED CT for the organs and abnormalities mmfm knows ('liver',
    'left kidney', 'liver_tumour' match by word), else the generic 'Tissue' (SCT 85756007) in category
    'Anatomical Structure'."""
    from pydicom.sr.codedict import codes

    table = _codes()
    words = name.lower().replace("_", " ").replace("-", " ").split()
    for word in reversed(words):        # 'liver tumour' is a tumour: the last known word names the kind
        if word in table:
            return table[word]
    return codes.SCT.AnatomicalStructure, codes.SCT.Tissue


def _referenceable(ds: pydicom.Dataset, where: Path) -> pydicom.Dataset:
    """A source a SEG or RT Structure Set can reference: SOP Class and Instance UIDs (taken from the file's meta
    header, which by the standard holds the same values, where an anonymiser emptied them in the dataset), Study
    and Series Instance UIDs; else a one-line error, since a result that references nothing cannot be filed with
    its study."""
    meta = getattr(ds, "file_meta", None)
    for tag, fallback in (("SOPClassUID", "MediaStorageSOPClassUID"), ("SOPInstanceUID", "MediaStorageSOPInstanceUID")):
        if not str(ds.get(tag, "") or "").strip() and meta is not None and str(meta.get(fallback, "") or "").strip():
            setattr(ds, tag, meta.get(fallback))
    missing = [t for t in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
               if not str(ds.get(t, "") or "").strip()]
    if missing:
        raise InputFileError(where, f"has no {', '.join(missing)} (emptied when it was anonymised?): a DICOM SEG or "
                             "RT Structure Set references its source slices by them",
                             "write the mask as NIfTI (--out mask.nii.gz), or give the series with its UIDs")
    return ds


def dicom_sources(path: str | Path) -> list[pydicom.Dataset]:
    """The source datasets of a DICOM image in the order mmfm's reader puts their slices on K: a single file, or
    a series folder's slices sorted along the slice normal (one series per folder, as the reader requires). Each
    must carry the UIDs a result references (:func:`_referenceable`)."""
    p = Path(path)
    if p.is_file():
        return [_referenceable(_read(p), p)]
    files = [f for f in sorted(p.rglob("*")) if f.is_file() and f.stat().st_size > 0 and is_dicom(f)]
    datasets = [_referenceable(_read(f), p) for f in files]
    uids = {str(ds.get("SeriesInstanceUID", "")) for ds in datasets}
    if not datasets or len(uids) != 1:
        raise InputFileError(p, f"holds {len(uids)} series", "put one DICOM series in the folder")
    row, col, _ = _orientation(datasets[0])
    normal = np.cross(row, col)
    order = np.argsort([float(np.dot(normal, _orientation(ds)[2])) for ds in datasets], kind="stable")
    return [datasets[i] for i in order]


def _frames(labels: np.ndarray, sources: Sequence[pydicom.Dataset], dtype: Any = np.uint8) -> np.ndarray:
    """(I, J[, K]) label map (or, with ``dtype`` float32, any map) -> (frames, rows, columns), checked against the
    sources' size."""
    frames = labels[..., None] if labels.ndim == 2 else labels
    frames = np.ascontiguousarray(np.transpose(frames, (2, 1, 0)).astype(dtype))      # (K, rows = J, cols = I)
    first = sources[0]
    n = len(sources) if len(sources) > 1 else int(first.get("NumberOfFrames") or 1)
    if frames.shape != (n, int(first.Rows), int(first.Columns)):
        raise ConfigError(f"a label map of shape {labels.shape} does not lie on the source's grid "
                          f"({int(first.Columns)} x {int(first.Rows)} x {n})", "segment the DICOM image itself")
    return frames


def write_seg(target: Path, labels: np.ndarray, names: Mapping[int, str], sources: Sequence[pydicom.Dataset],
              algorithm: str, version: str, description: str = "mmfm segmentation") -> pydicom.Dataset:
    """A binary DICOM Segmentation (one segment per value of ``names``) of ``sources`` written to ``target``;
    returns the dataset. Segments are semi-automatic (a person prompted the model named ``algorithm``)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    frames = _frames(labels, sources)
    algo = hd.AlgorithmIdentificationSequence(name=algorithm[:64], version=version[:64],
                                              family=codes.cid7162.ArtificialIntelligence)
    segments = []
    for value, name in sorted(names.items()):
        category, kind = property_codes(name)
        segments.append(hd.seg.SegmentDescription(
            segment_number=int(value), segment_label=name[:64], segmented_property_category=category,
            segmented_property_type=kind, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,
            algorithm_identification=algo))
    seg = hd.seg.Segmentation(
        source_images=list(sources), pixel_array=frames, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments, series_instance_uid=hd.UID(), series_number=900,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="mmfm", manufacturer_model_name=algorithm[:64],
        software_versions=version[:64], device_serial_number="none", content_description=description[:64],
        content_label="MMFM_SEG", series_description=description[:64],
        omit_empty_frames=bool(frames.any()))      # an empty result keeps its frames: a SEG needs at least one
    _required_identifiers_only(seg)
    seg.save_as(target, enforce_file_format=True)
    return seg


def write_rtstruct(target: Path, labels: np.ndarray, names: Mapping[int, str], sources: Sequence[pydicom.Dataset],
                   description: str = "mmfm segmentation") -> pydicom.Dataset:
    """An RT Structure Set of ``sources`` (single-frame slices) with one closed-planar ROI per value of ``names``,
    contours traced on each slice. highdicom has no RTSTRUCT writer; rt-utils builds the IOD (references, frame of
    reference, contour geometry through the slices' position and orientation) from the datasets given here, in
    the order the label map's K axis has."""
    from rt_utils import RTStruct
    from rt_utils.ds_helper import create_rtstruct_dataset

    if len(sources) == 1 and int(sources[0].get("NumberOfFrames") or 1) > 1:
        raise ConfigError("an RT Structure Set references single-frame slices; this source is one multi-frame file",
                          "write a DICOM SEG (--out NAME.dcm) instead")
    frames = _frames(labels, sources)                                        # (K, rows, cols)
    ds = create_rtstruct_dataset(list(sources))
    rt = RTStruct(list(sources), ds)
    rt.set_series_description(description[:64])
    for value, name in sorted(names.items()):
        mask = np.transpose(frames == value, (1, 2, 0))                      # (rows, cols, K), as rt-utils takes
        if mask.any():
            rt.add_roi(mask=mask, name=name[:64], approximate_contours=False)
    _complete_rtstruct(ds, sources[0])
    ds.save_as(target, enforce_file_format=True)
    return ds


def _complete_rtstruct(ds: pydicom.Dataset, first: pydicom.Dataset) -> None:
    """What rt-utils 1.2 leaves out or writes invalidly (dciodvfy finds it): contour coordinates as DS of at most
    16 characters, the Type 1/2 study, series and frame-of-reference attributes, and no optional identifiers."""
    from pydicom.valuerep import DSfloat

    for roi in ds.ROIContourSequence:
        for contour in roi.get("ContourSequence", []):
            contour.ContourData = [DSfloat(float(v), auto_format=True) for v in contour.ContourData]
    for keyword in ("ReferringPhysicianName", "AccessionNumber", "PositionReferenceIndicator"):
        setattr(ds, keyword, first.get(keyword, "") if keyword != "ReferringPhysicianName" else "")
    ds.FrameOfReferenceUID = first.FrameOfReferenceUID
    ds.Manufacturer = "mmfm"
    _required_identifiers_only(ds)
    ds.OperatorsName = ""                  # Type 2 in the RT Series module: present, and empty


def dicom_output_kind(out: Path) -> str | None:
    """'RTSTRUCT' for a name ending .rtstruct.dcm, 'SEG' for .dcm, None for anything else."""
    name = out.name.lower()
    return "RTSTRUCT" if name.endswith(RTSTRUCT_SUFFIX) else "SEG" if name.endswith(".dcm") else None


def write_dicom_result(target: Path, kind: str, labels: np.ndarray, names: Mapping[int, str], source: str | Path,
                       algorithm: str, version: str) -> None:
    """A SEG or an RTSTRUCT (``kind``) of the label map ``labels`` for the DICOM image at ``source``."""
    sources = dicom_sources(source)
    if kind == "RTSTRUCT":
        write_rtstruct(target, labels, names, sources)
    else:
        write_seg(target, labels, names, sources, algorithm, version)
