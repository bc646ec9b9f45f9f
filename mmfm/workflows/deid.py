"""`mmfm data deid IN OUT`: de-identified copies of a DICOM file or folder (and of report text files in it).

Safety: the input is only read; OUT must not exist or be an empty folder, and must not lie inside IN (it would be
read back as input); everything is written into ``OUT.incomplete`` first and renamed to OUT only when every file
was handled, so a crash never leaves a half-done OUT (the ``.incomplete`` folder mmfm created is removed). Files
that are not DICOM, DICOM without pixel data, and truncated files are reported in ``deid.json`` and skipped. Output
names carry no input name: ``<study>/<series>/<instance>.dcm`` from the new UIDs; text files become
``reports/<keyed pseudonym>.txt``. ``deid.json`` lists per output file which attributes were removed, emptied,
replaced, remapped or shifted, never an old value.

Every written DICOM is audited (:func:`mmfm.data.deid.leaked`: the input's identifying values searched in the
output's bytes, independently of the profile table); a file in which the audit finds one is withheld (deleted from
the staging folder, listed in ``deid.json`` under ``audit.withheld`` with the attributes it came from). The input
folder is the root: a file symlink pointing outside it is skipped unless ``allow_outside_root`` (the CLI's
``--allow-outside-root``); folder symlinks are not descended into.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mmfm.data.catalog.confine import inside
from mmfm.data.deid import Deidentifier, leaked
from mmfm.data.deid_text import deidentify_text, known_names
from mmfm.data.pseudonym import pseudonym
from mmfm.errors import MMFMError as DataError
from mmfm.evaluation.results import write_json_atomic

TEXT_SUFFIXES = {".txt", ".md"}
_IDENTIFIERS = ("PatientID", "OtherPatientIDs", "AccessionNumber")   # also scrubbed from report text
_PERSON_NAMES = ("PatientName", "ReferringPhysicianName", "PerformingPhysicianName", "NameOfPhysiciansReadingStudy",
                 "OperatorsName", "RequestingPhysician", "PhysiciansOfRecord")


def _values(v: Any) -> list[Any]:
    """A header value as a list (a multi-valued element such as OtherPatientIDs gives each of its values)."""
    from pydicom.multival import MultiValue

    if v is None or v == "":
        return []
    return list(v) if isinstance(v, (list, tuple, MultiValue)) else [v]


def expected_pixel_bytes(ds: Any) -> int | None:
    """Bytes of uncompressed pixel data the header promises (None for compressed transfer syntaxes)."""
    if getattr(ds.file_meta, "TransferSyntaxUID", None) is None or ds.file_meta.TransferSyntaxUID.is_compressed:
        return None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    bits = int(ds.get("BitsAllocated", 8))
    return int(ds.Rows) * int(ds.Columns) * frames * int(ds.get("SamplesPerPixel", 1)) * bits // 8


def read_checked(path: Path) -> tuple[Any | None, str]:
    """(dataset, "") or (None, why it is skipped): not DICOM, no pixel data, truncated."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:
        return None, "not a DICOM file"
    except Exception as e:   # pydicom raises many kinds on damaged files
        return None, f"unreadable DICOM ({type(e).__name__}): truncated or damaged"
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        if "Rows" in ds and "Columns" in ds:
            return None, "truncated: an image header without its pixel data"
        return None, ("DICOM without pixel data (structured report, presentation state, ...): skipped, mmfm "
                      "de-identifies images")
    try:
        need = expected_pixel_bytes(ds)
        got = len(ds.PixelData) if "PixelData" in ds else None
    except Exception as e:
        return None, f"unreadable pixel data ({type(e).__name__}): truncated or damaged"
    if need is not None and got is not None and got < need:
        return None, f"truncated: {got} of {need} pixel bytes"
    return ds, ""


def check_folders(inp: Path, out: Path) -> None:
    if not inp.exists():
        raise DataError(f"{inp} does not exist", "pass a DICOM file or a folder of them")
    inp_r, out_r = inp.resolve(), out.resolve()
    if inp.is_dir() and (out_r == inp_r or inp_r in out_r.parents):
        raise DataError("the output folder is inside the input folder (it would be read back as input)",
                        "choose an output folder outside the input")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out} exists and is not empty; mmfm never overwrites files it did not create",
                        "choose a new output folder")


def deidentify_folder(inp: str | Path, out: str | Path, keep_private: Iterable[str] = (),
                      progress: bool = True, allow_outside_root: bool = False) -> dict[str, Any]:
    """De-identify every DICOM and text file under ``inp`` into ``out``; return the summary (also deid.json)."""
    import pydicom

    inp, out = Path(inp), Path(out)
    check_folders(inp, out)
    root = inp.resolve()
    files = sorted(p for p in ([inp] if inp.is_file() else inp.rglob("*")) if p.is_file())
    staging = out.with_name(out.name + ".incomplete")
    if staging.exists():
        if not (staging / ".mmfm-deid").exists():
            raise DataError(f"{staging} exists and was not made by mmfm", "move it away and retry")
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    (staging / ".mmfm-deid").write_text("staging folder of mmfm data deid\n")
    deid = Deidentifier(keep_private=keep_private)
    summary: dict[str, Any] = {"profile": "DICOM PS3.15 Basic Application Level Confidentiality Profile, "
                                          "Retain Longitudinal Temporal Information with Modified Dates Option",
                               "written": [], "skipped": [], "burned_in_annotation": [], "text": [],
                               "audit": {"method": "every identifying value of the input (names, dates, instance "
                                                   "UIDs, identifiers, places, free text, AE titles, preamble) "
                                                   "searched in every byte of the output outside its pixel data",
                                         "files": 0, "leaks": 0, "withheld": []}}
    names: list[str] = []
    ids: list[str] = []
    texts = []
    try:
        for path in tqdm(files, desc="deid", disable=not progress, unit="file"):
            file_id = pseudonym(str(path.relative_to(inp) if inp.is_dir() else path.name), "file")
            if inp.is_dir() and not allow_outside_root and not inside(root, path):
                summary["skipped"].append({"file": file_id, "reason": "a symlink to a file outside the input folder: "
                                           "not followed (--allow-outside-root includes it)"})
                continue
            if path.suffix.lower() in TEXT_SUFFIXES:
                texts.append((path, file_id))
                continue
            ds, why = read_checked(path)
            if ds is None:
                summary["skipped"].append({"file": file_id, "reason": why})
                continue
            names += [str(ds.get(k, "")) for k in _PERSON_NAMES]
            ids += [str(v) for k in _IDENTIFIERS for v in _values(ds.get(k, ""))]
            log = deid.apply(ds)
            rel = Path(str(ds.get("StudyInstanceUID", "") or "study"), str(ds.get("SeriesInstanceUID", "") or "series"),
                       f"{ds.get('SOPInstanceUID', '') or file_id}.dcm")
            if (staging / rel).exists():   # instances sharing (or lacking) a UID: never one over another
                rel = rel.with_name(f"{rel.stem}-{file_id}.dcm")
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(target, enforce_file_format=False)
            found = leaked(pydicom.dcmread(path, stop_before_pixels=True), target.read_bytes())
            summary["audit"]["files"] += 1
            if found:      # never write a file marked de-identified that still holds an input's identifying value
                target.unlink()
                for folder in (target.parent, target.parent.parent):   # series, study: if now empty
                    if folder != staging and not any(folder.iterdir()):
                        folder.rmdir()
                summary["audit"]["leaks"] += 1
                summary["audit"]["withheld"].append({"source": file_id, "found_from": found})
                continue
            summary["written"].append({"file": str(rel), "source": file_id, **log, "audit_leaks": 0})
            if log["burned_in_annotation"] != "no":
                summary["burned_in_annotation"].append({"file": str(rel), "flag": log["burned_in_annotation"]})
        scrub = known_names(names)
        for path, file_id in texts:   # after the DICOMs: their person names and IDs are scrubbed from the text too
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError) as e:
                why = f"text not readable as UTF-8 ({type(e).__name__})"
                summary["skipped"].append({"file": file_id, "reason": why})
                continue
            clean, counts = deidentify_text(text, scrub, ids)
            rel = Path("reports") / f"{file_id}.txt"
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            (staging / rel).write_text(clean, encoding="utf-8")
            summary["text"].append({"file": str(rel), "source": file_id, "replaced": counts})
        summary["counts"] = {k: len(summary[k]) for k in ("written", "skipped", "burned_in_annotation", "text")}
        summary["counts"]["withheld"] = summary["audit"]["leaks"]
        write_json_atomic(staging / "deid.json", summary)
        (staging / ".mmfm-deid").unlink()
        if out.exists():
            out.rmdir()          # empty (checked above)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)   # mmfm's own staging folder: nothing half-written is left
        raise
    return summary
