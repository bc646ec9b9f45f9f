"""De-identification of report text: names, dates, identifiers, contacts and places replaced by bracketed tags.

Rules, not a learned model (no clinical NER model ships in a registry package mmfm can use offline): known names
(the patient's and physicians' names from the DICOM header of the same study, when given) and known identifiers
(the same headers' patient and accession IDs, in any spacing) anywhere; names after a
title (Dr., Mr., Mrs., Ms., Prof.) or after "signed/dictated/reviewed by", "patient:", "name:"; dates in numeric
and written forms; record/accession/MRN identifiers and any run of 6+ digits; phone numbers, e-mail addresses,
URLs; street addresses and postcodes; institutions ("... Hospital", "... Medical Center", "... Clinic"). A name
without any of these cues is missed: review what a model will be trained on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_MONTHS = ("January|February|March|April|May|June|July|August|September|October|November|December|"
           "Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec")
_NAME = r"[A-Z][a-zA-Z'\-]+(?:\s+[A-Z]\.)?(?:\s+[A-Z][a-zA-Z'\-]+){0,2}"
_RULES: list[tuple[str, re.Pattern[str], str]] = [
    ("EMAIL", re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b"), "[EMAIL]"),
    ("URL", re.compile(r"\bhttps?://\S+|\bwww\.\S+", re.I), "[URL]"),
    ("DATE", re.compile(r"\b\d{4}[-/.]\d{1,2}[-/.]\d{1,2}\b|\b\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}\b"), "[DATE]"),
    ("DATE", re.compile(rf"\b(?:{_MONTHS})\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}\b|\b\d{{1,2}}(?:st|nd|rd|th)?"
                        rf"\s+(?:{_MONTHS})\.?,?\s+\d{{4}}\b|\b(?:{_MONTHS})\.?\s+\d{{4}}\b"), "[DATE]"),
    ("PHONE", re.compile(r"(?:\+\d{1,3}[\s-]?)?\(?\b\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}\b"), "[PHONE]"),
    ("ID", re.compile(r"\b(MRN|MR#|Accession(?:\s+(?:No\.?|Number|#))?|Acc\.?\s*#?|Record(?:\s+(?:No\.?|Number))?|"
                      r"Patient\s+ID|ID|Case\s+(?:No\.?|#))(?![a-z])\s*[:#]?\s*[A-Z0-9][A-Z0-9-]{3,}\b", re.I),
     r"\1 [ID]"),     # (?![a-z]): a cue is a whole word ("Accession" is not "Acc" + "ession")
    ("ID", re.compile(r"\b\d{6,}\b"), "[ID]"),
    ("ADDRESS", re.compile(r"\b\d{1,5}\s+(?:[A-Z][a-z]+\s){1,3}(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|"
                           r"Ln|Drive|Way|Court|Ct|Place|Pl)\b\.?"), "[ADDRESS]"),
    ("ADDRESS", re.compile(r"\b[A-Z]{1,2}\d[A-Z\d]?\s+\d[A-Z]{2}\b|\b(?:[A-Z]{2}\s+)\d{5}(?:-\d{4})?\b"), "[ADDRESS]"),
    ("PLACE", re.compile(r"\b(?:[A-Z][a-zA-Z'.&-]+\s+){1,4}(?:Hospital|Medical\s+Cent(?:er|re)|Clinic|Infirmary|"
                         r"Health\s+System|Healthcare|Cancer\s+Cent(?:er|re)|Imaging\s+Cent(?:er|re))\b"), "[PLACE]"),
    ("NAME", re.compile(rf"\b(Dr|Mr|Mrs|Ms|Miss|Prof|Doctor)\.?\s+{_NAME}"), r"\1. [NAME]"),
    ("NAME", re.compile(rf"\b((?i:(?:electronically\s+)?(?:signed|dictated|reviewed|read|transcribed|verified)\s+by"
                        rf":?)\s*){_NAME}"), r"\1[NAME]"),
    ("NAME", re.compile(rf"\b((?i:patient|name|physician|radiologist|referring(?:\s+physician)?|attending)\s*:\s*)"
                        rf"{_NAME}"), r"\1[NAME]"),
]


def known_names(values: Iterable[str]) -> list[str]:
    """Name parts worth scrubbing from DICOM person names ("Doe^John^^Dr" -> Doe, John), 2+ letters each."""
    parts = set()
    for v in values:
        for p in re.split(r"[\^=\s,]+", str(v)):
            if len(p) >= 2 and p.isalpha() and p.upper() not in ("DR", "MR", "MRS", "MS", "ANONYMIZED"):
                parts.add(p)
    return sorted(parts, key=len, reverse=True)


def identifier_pattern(value: str) -> re.Pattern[str] | None:
    """A known identifier (a header's PatientID, AccessionNumber, ...) as it may be written in a report: its
    letters and digits in order, with any of space, '-', '.', '/' or '_' (or nothing) between the runs, not inside
    a longer word or number, and without a leading letters-only prefix ("MRN") where 6+ characters remain; None
    for a value too short to be told from ordinary text (under 4 letters/digits)."""
    runs = re.findall(r"[A-Za-z0-9]+", str(value))
    if sum(len(r) for r in runs) < 4:
        return None
    sep = r"[\s\-./_]*"
    body = sep.join(map(re.escape, runs))
    core = runs
    while core and core[0].isalpha():               # "MRN-0042-7731" is also written "0042 7731"
        core = core[1:]
    if core != runs and sum(len(r) for r in core) >= 6:
        body = f"(?:{body}|{sep.join(map(re.escape, core))})"
    return re.compile(rf"(?<![A-Za-z0-9]){body}(?![A-Za-z0-9])", re.I)


def deidentify_text(text: str, names: Iterable[str] = (), identifiers: Iterable[str] = ()
                    ) -> tuple[str, dict[str, int]]:
    """(de-identified text, count of replacements per kind). ``names``: known names (e.g. :func:`known_names` of
    the study's DICOM person names) replaced wherever they appear; ``identifiers``: known identifiers (the
    study's PatientID, OtherPatientIDs, AccessionNumber) replaced by ``[ID]`` wherever they appear, whatever
    separators the report writes them with (:func:`identifier_pattern`), with or without a cue like "MRN"."""
    counts: dict[str, int] = {}
    for value in sorted(set(identifiers), key=len, reverse=True):
        pattern = identifier_pattern(value)
        if pattern is not None:
            text, n = pattern.subn("[ID]", text)
            if n:
                counts["ID"] = counts.get("ID", 0) + n
    for name in names:
        text, n = re.subn(rf"\b{re.escape(name)}\b", "[NAME]", text, flags=re.I)
        if n:
            counts["NAME"] = counts.get("NAME", 0) + n
    for kind, pattern, repl in _RULES:
        text, n = pattern.subn(repl, text)
        if n:
            counts[kind] = counts.get(kind, 0) + n
    return text, counts
