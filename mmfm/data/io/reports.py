"""Report text: plain text, IU X-ray (OpenI) XML and CSV columns, split into sections.

Section splitting is rule-based on the headings radiologists write (``FINDINGS:``, ``IMPRESSION:``, ...).
"""

from __future__ import annotations

import csv
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmfm.data.io.checks import check_file
from mmfm.data.sample import MAX_REPORT_CHARS, Report
from mmfm.errors import InputFileError

_HEADINGS = {
    "indication": ["indication", "indications", "clinical history", "history", "reason for exam",
                   "clinical indication"],
    "comparison": ["comparison", "comparisons"],
    "technique": ["technique", "procedure"],
    "findings": ["findings", "finding", "description"],
    "impression": ["impression", "impressions", "conclusion", "conclusions", "summary", "opinion"],
}
_ALIAS = {alias: canon for canon, aliases in _HEADINGS.items() for alias in aliases}
# a heading starts a line or follows the end of a sentence ("... clear. IMPRESSION: normal")
_HEADINGS_ALT = "|".join(re.escape(a) for a in sorted(_ALIAS, key=len, reverse=True))
_HEADING_RE = re.compile(r"(?im)(?:^|(?<=[.;!?]\s))\s*(" + _HEADINGS_ALT + r")\s*:\s*")


def clean_text(text: str) -> str:
    """Collapse whitespace, drop de-identification placeholders such as ``XXXX``."""
    text = re.sub(r"\bX{2,}\b", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def split_sections(text: str) -> Report:
    """Split a report into sections by its headings; text before any heading counts as findings."""
    sections: dict[str, str] = {}
    matches = list(_HEADING_RE.finditer(text))
    if matches and matches[0].start() > 0 and text[: matches[0].start()].strip():
        sections["findings"] = clean_text(text[: matches[0].start()])
    if not matches:
        sections["findings"] = clean_text(text)
    for m, nxt in zip(matches, matches[1:] + [None]):
        canon = _ALIAS[m.group(1).lower()]
        body = clean_text(text[m.end(): nxt.start() if nxt else len(text)])
        sections[canon] = (sections.get(canon, "") + " " + body).strip()
    return Report(text=clean_text(text), indication=sections.get("indication", ""),
                  findings=sections.get("findings", ""), impression=sections.get("impression", ""),
                  sections=sections)


def _checked(report: Report, where: str) -> Report:
    if not report.text:
        raise InputFileError(where, "the report is empty", "drop it or supply the report text")
    if len(report.text) > MAX_REPORT_CHARS:
        raise InputFileError(where, f"the report has {len(report.text):,} characters (limit {MAX_REPORT_CHARS:,})",
                             "is this several reports in one? split it into one report per study")
    return report


def read_text_report(path: str | Path) -> Report:
    p = check_file(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputFileError(p, "is not UTF-8 text", "convert it with `iconv -t utf-8`") from None
    return _checked(split_sections(text), str(p))


def parse_iu_xml(xml: bytes | str, where: str = "<xml>") -> dict[str, Any]:
    """One IU X-ray / OpenI report XML -> sections, MeSH major terms and image ids."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise InputFileError(where, f"invalid XML ({e})") from None
    sec = {(a.get("Label") or "").lower(): (a.text or "").strip() for a in root.iter("AbstractText")}
    uid = root.find("uId")
    sections = {k: clean_text(v) for k, v in sec.items() if v}
    text = " ".join(f"{k.upper()}: {v}" for k, v in sections.items())
    return {"uid": uid.get("id") if uid is not None else where, "report": Report(
        text=clean_text(text), indication=sections.get("indication", ""), findings=sections.get("findings", ""),
        impression=sections.get("impression", ""), sections=sections),
        "mesh": [e.text or "" for e in root.iter("major")],
        "images": [e.get("id") or "" for e in root.iter("parentImage")]}


def read_iu_xml(path: str | Path) -> dict[str, Any]:
    p = check_file(path)
    return parse_iu_xml(p.read_bytes(), str(p))


def read_csv_reports(path: str | Path, text_column: str | None = None, id_column: str | None = None,
                     section_columns: dict[str, str] | None = None) -> Iterator[tuple[str, Report]]:
    """Rows of a CSV as ``(id, Report)``. Either one ``text_column`` (split by headings) or ``section_columns``
    mapping section -> column (e.g. ``{"findings": "findings", "impression": "impression"}``)."""
    p = check_file(path)
    with open(p, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        cols = reader.fieldnames or []
        needed = [text_column] if text_column else list((section_columns or {}).values())
        missing = [c for c in needed if c not in cols]
        if missing or not needed:
            raise InputFileError(p, f"missing column(s) {missing or '(none given)'}; columns are {cols}",
                                 "pass the name of the report column")
        for n, row in enumerate(reader, start=2):
            rid = row.get(id_column, "") if id_column else str(n - 2)
            where = f"{p} (line {n})"
            if text_column:
                yield rid, _checked(split_sections(row[text_column] or ""), where)
            else:
                secs = {k: clean_text(row[c] or "") for k, c in (section_columns or {}).items()}
                text = " ".join(f"{k.upper()}: {v}" for k, v in secs.items() if v)
                yield rid, _checked(Report(text=text, indication=secs.get("indication", ""),
                                           findings=secs.get("findings", ""),
                                           impression=secs.get("impression", ""), sections=secs), where)
