"""DICOM de-identification after the DICOM PS3.15 Annex E **Basic Application Level Confidentiality Profile**, with
the *Retain Longitudinal Temporal Information with Modified Dates* option.

The profile's table (every attribute and its action: D replace, Z empty, X remove, U remap UID, and the combined
ones) is data shipped by ``dicom-anonymizer`` (its 2026c edition of PS3.15 Table E.1-1); the actions are mmfm's
own because they must be keyed and consistent across a whole dataset:

* **U** (UIDs): ``2.25.<HMAC>`` of the old UID with the project key (:mod:`mmfm.data.pseudonym`), so a study,
  series and frame of reference keep one new UID across every file and every run with the same key, and the file
  meta SOP Instance UID follows the dataset's;
* dates (DA, DT) that the profile keeps, empties or replaces are **shifted** by a per-patient number of days (HMAC of
  the patient ID), so intervals within a patient survive; birth dates are emptied; times (TM) follow the table;
* PatientName and PatientID (Z in the table) become the patient's keyed pseudonym (a dummy value, as Z allows),
  so splits by patient still work; **D** on other names and IDs: ``ANONYMIZED``; other VRs a
  neutral dummy (0, empty sequence item cleaned recursively);
* combined actions take the choice that keeps the attribute present when the IOD may need it: Z/D and X/Z -> Z,
  X/D and X/Z/D -> D, X/Z/U* -> U for UIDs (else Z);
* private attributes are removed unless listed safe (``keep_private``); curve (50xx) and overlay (60xx) groups go
  whole (descriptions and labels too). Burned-in annotation is flagged (``BurnedInAnnotation`` YES, or absent on
  modalities that often burn text in: US, SC, ES, XC, OT, DX/CR secondary captures), never silently passed.

What the table does not list is not trusted either (free text can be written into any attribute):

* ``ContentSequence`` (structured free text: TextValue, PersonName, ...) is removed from image objects;
* public attributes the DICOM dictionary does not know are removed; known text attributes (PN, LO, SH, ST, LT,
  UT, UC, UR, AE) the table does not list are kept only when on :data:`KEEP_TEXT` (device and technique
  descriptors), else removed at the top level and replaced by a dummy inside sequences, where a value may be
  required; every kept sequence is cleaned this way, recursively;
* coded entries keep their code only when it is in the DICOM standard's code tables (PS3.16, as pydicom ships
  them), with the standard's meaning written over the file's ``CodeMeaning``; other codes become a dummy code;
* UIDs that are not registered DICOM UIDs are remapped wherever they are (not only where the table says);
* a DT value keeps only its shifted date: its time of day goes, like the TM times of day the table empties (and
  the few TM attributes it does not list are emptied too);
* the 128-byte preamble is zeroed and the file meta group rebuilt (no source AE titles, no private information).

:func:`leaked` audits an output without the table: it collects the input's identifying values by kind (person
names, dates, instance UIDs, identifiers, places, free text, AE titles, the preamble) and searches them in the
output's bytes.

Pixel data is never touched: the output holds the input's exact PixelData bytes and transfer syntax. The change log
names attributes and actions, never old values.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import UID

from mmfm.data.pseudonym import pseudonym, pseudonym_key

PROFILE = "PS3.15 Basic Profile, Modified Dates (mmfm)"   # LO: at most 64 characters; the codes say it in full
# PS3.16 CID 7050 codes of what was applied
PROFILE_CODES = (("113100", "Basic Application Confidentiality Profile"),
                 ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"))
BURN_IN_MODALITIES = {"US", "SC", "ES", "XC", "OT", "GM", "SM"}
# the combined actions of Table E.1-1, resolved as the module docstring says
_RESOLVE = {"D_TAGS": "D", "Z_TAGS": "Z", "X_TAGS": "X", "U_TAGS": "U", "Z_D_TAGS": "Z", "X_Z_TAGS": "Z",
            "X_D_TAGS": "D", "X_Z_D_TAGS": "D", "X_Z_U_STAR_TAGS": "ZU"}
_DUMMY = {"PN": "ANONYMIZED", "LO": "ANONYMIZED", "SH": "ANONYMIZED", "LT": "ANONYMIZED", "ST": "ANONYMIZED",
          "UT": "ANONYMIZED", "CS": "ANONYMIZED", "AE": "ANONYMIZED", "UC": "ANONYMIZED", "AS": "000Y",
          "TM": "000000", "UR": "", "DS": "0", "IS": "0"}


_TEXT_VRS = {"PN", "LO", "SH", "ST", "LT", "UT", "UC", "UR", "AE"}
# public text attributes the table does not list that are kept: device and technique descriptors (the image needs
# some, e.g. PositionReferenceIndicator, ContrastBolusAgent are type 2); any other unlisted text is removed
KEEP_TEXT = frozenset({
    "Manufacturer", "ManufacturerModelName", "SoftwareVersions", "ContrastBolusAgent", "ContrastBolusRoute",
    "FilterType", "ConvolutionKernel", "PositionReferenceIndicator", "ImagedNucleus", "PulseSequenceName",
    "SequenceName", "ReceiveCoilName", "TransmitCoilName", "RescaleType", "Radiopharmaceutical",
    "DeidentificationMethod"})
_CODE_KEYWORDS = {"CodeValue", "CodingSchemeDesignator", "CodeMeaning", "CodingSchemeVersion", "LongCodeValue",
                  "URNCodeValue"}
_NUMBERS = ("US", "SS", "UL", "SL", "FL", "FD")


@functools.cache
def standard_codes() -> dict[tuple[str, str], str]:
    """(coding scheme, code value) -> meaning, from the PS3.16 code tables pydicom ships (its ``pydicom.sr``
    concepts; no public reverse lookup exists, hence the private module, with an empty table as the fallback: then
    every code is replaced, the safe side)."""
    try:
        from pydicom.sr._concepts_dict import concepts
    except ImportError:   # pragma: no cover - a pydicom without its SR tables
        return {}
    table: dict[str, dict[str, Any]] = concepts   # scheme -> name -> codes (typed `object` in the stubs)
    return {(scheme, value): meaning for scheme, names in table.items() for codes in names.values()
            for value, (meaning, _cids) in codes.items()}


@functools.cache
def registered_uids() -> frozenset[str]:
    """UIDs the DICOM standard registers (SOP classes, transfer syntaxes, coding schemes): these identify no one."""
    from pydicom._uid_dict import UID_dictionary

    return frozenset(UID_dictionary)


def profile_table() -> tuple[dict[int, str], list[tuple[int, int, int, int, str]]]:
    """(exact tag -> action, masked (group, element, group mask, element mask, action)) from PS3.15 Table E.1-1."""
    from dicomanonymizer.dicom_anonymization_databases import dicomfields_2026c as table

    exact: dict[int, str] = {}
    masked = []
    for category, action in _RESOLVE.items():
        for entry in getattr(table, category):
            if len(entry) == 2:
                exact[int(Tag(entry[0], entry[1]))] = action
            else:
                masked.append((*entry, action))
    return exact, masked


@dataclass
class Deidentifier:
    """Applies the profile to datasets with one key: UIDs and pseudonyms are consistent across every file."""

    keep_private: Iterable[str] = ()       # "GGGG,EEEE" private attributes known to be safe (kept)
    key: bytes = field(default_factory=pseudonym_key)

    def __post_init__(self) -> None:
        self.exact, self.masked = profile_table()
        self.safe_private = {int(Tag(*(int(p, 16) for p in t.split(",")))) for t in self.keep_private}

    # -- keyed replacements -------------------------------------------------------------------------------------
    def uid(self, old: str) -> str:
        digest = hmac.new(self.key, f"uid\x00{old}".encode(), hashlib.sha256).digest()
        return "2.25." + str(int.from_bytes(digest[:16], "big"))    # a UUID-derived UID (PS3.5 B.2), <= 64 chars

    def day_shift(self, patient_id: str) -> int:
        """Days every date of this patient moves back: 365..3649, from the key and the patient ID."""
        digest = hmac.new(self.key, f"date-shift\x00{patient_id}".encode(), hashlib.sha256).digest()
        return 365 + int.from_bytes(digest[:4], "big") % 3285

    @staticmethod
    def shift_date(value: str, days: int, vr: str) -> str:
        text = str(value).strip()
        if len(text) < 8 or not text[:8].isdigit():
            return ""
        try:
            day = dt.datetime.strptime(text[:8], "%Y%m%d").date() - dt.timedelta(days=days)
        except ValueError:
            return ""
        return day.strftime("%Y%m%d")   # a DT's time of day (and UTC offset) goes, like the TM times of day

    def action(self, tag: int) -> str | None:
        if tag in self.exact:
            return self.exact[tag]
        g, e = tag >> 16, tag & 0xFFFF
        for group, elem, gmask, emask, act in self.masked:
            if (g & gmask) == group and (e & emask) == elem:
                return act
        return None

    # -- one dataset --------------------------------------------------------------------------------------------
    def apply(self, ds: Dataset) -> dict[str, Any]:
        """De-identify ``ds`` in place; return the change log (attribute keywords and actions, no values) and the
        burned-in annotation flag."""
        patient = str(ds.get("PatientID", "")) or str(ds.get("PatientName", ""))
        days = self.day_shift(patient)
        patient_pseudonym = pseudonym(patient, "patient")
        changes: dict[str, str] = {}
        burned = str(ds.get("BurnedInAnnotation", "")).upper()
        modality = str(ds.get("Modality", ""))
        self._clean(ds, days, patient_pseudonym, changes, "")
        self._rebuild_file_meta(ds)
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = PROFILE
        codes = []
        for value, meaning in PROFILE_CODES:
            item = Dataset()
            item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
            codes.append(item)
        ds.DeidentificationMethodCodeSequence = codes
        ds.LongitudinalTemporalInformationModified = "MODIFIED"
        flag = "yes" if burned == "YES" else ("possible" if burned != "NO" and modality in BURN_IN_MODALITIES
                                              else "no")
        return {"changes": changes, "burned_in_annotation": flag, "date_shift": "per patient (days withheld)"}

    def _rebuild_file_meta(self, ds: Dataset) -> None:
        """A new file meta group (no source/sending AE titles, private information or source implementation) and a
        zeroed preamble: neither is dataset content the profile would see, and both were copied verbatim before."""
        old = getattr(ds, "file_meta", None)
        sop_class = str(ds.get("SOPClassUID", "") or (old.get("MediaStorageSOPClassUID", "") if old else ""))
        meta = FileMetaDataset()
        meta.FileMetaInformationVersion = b"\x00\x01"
        meta.MediaStorageSOPClassUID = UID(sop_class if sop_class in registered_uids() else "")
        meta.MediaStorageSOPInstanceUID = UID(str(ds.get("SOPInstanceUID", "")))
        if old is not None and "TransferSyntaxUID" in old:
            meta.TransferSyntaxUID = old.TransferSyntaxUID
        from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID   # pydicom writes the file
        meta.ImplementationVersionName = "MMFM_DEID"
        ds.file_meta = meta
        ds.preamble = b"\x00" * 128

    def _code(self, item: Dataset, changes: dict[str, str], where: str) -> None:
        """A coded entry keeps a code of the standard's tables with the standard's meaning; any other code (a local
        one, or one whose text could be anything) becomes a dummy code."""
        value = str(item.get("CodeValue", "") or "")
        scheme = str(item.get("CodingSchemeDesignator", "") or "")
        meaning = standard_codes().get((scheme, value))
        for kw in ("CodingSchemeVersion", "LongCodeValue", "URNCodeValue"):
            if kw in item:
                del item[kw]
        if meaning is not None:
            if "CodeMeaning" in item and str(item.CodeMeaning) != meaning:
                item.CodeMeaning = meaning[:64]
                changes[where + "CodeMeaning"] = "D (the standard's meaning)"
            return
        if not (value or scheme or item.get("CodeMeaning")):
            return   # an empty code (type 2 left empty): nothing to replace
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "REMOVED", "99MMFM", "removed by de-id"
        changes[where + "CodeValue"] = "D (code not in the standard's tables)"

    def _clean(self, ds: Dataset, days: int, patient_pseudonym: str, changes: dict[str, str], where: str) -> None:
        is_code = "CodeValue" in ds or "CodingSchemeDesignator" in ds
        if is_code:
            self._code(ds, changes, where)
        for elem in list(ds):
            tag = int(elem.tag)
            name = where + (elem.keyword or f"({elem.tag.group:04X},{elem.tag.element:04X})")
            if elem.tag.is_private:
                if tag not in self.safe_private:
                    del ds[elem.tag]
                    changes[name] = "X (private)"
                continue
            if (tag >> 24) in (0x50, 0x60):   # curves (50xx) and overlays (60xx), descriptions and labels too
                del ds[elem.tag]
                changes[name] = "X (curve/overlay)"
                continue
            if is_code and elem.keyword in _CODE_KEYWORDS:
                continue                       # handled by _code
            if not elem.keyword or elem.VR == "UN" or elem.keyword == "ContentSequence":
                del ds[elem.tag]               # unknown public attributes, and structured free text in images
                changes[name] = "X (unknown)" if elem.keyword != "ContentSequence" else "X (free text)"
                continue
            act = self.action(tag)
            if elem.keyword in ("PatientBirthDate", "PatientBirthTime") and act is not None:
                elem.value = None   # shifting would keep the age to within days: emptied, as the profile says
                changes[name] = "Z"
                continue
            if elem.VR in ("DA", "DT") and act != "X" and elem.value not in (None, ""):
                values = elem.value if elem.VM > 1 else [elem.value]
                new = [self.shift_date(v, days, elem.VR) for v in values]
                elem.value = new if elem.VM > 1 else new[0]
                changes[name] = "shifted"
                continue
            if act is None:
                self._unlisted(ds, elem, days, patient_pseudonym, changes, name)
                continue
            if elem.keyword in ("PatientName", "PatientID") and act in ("Z", "D"):
                elem.value = patient_pseudonym
                changes[name] = "D (keyed pseudonym)"
                continue
            if act == "ZU":
                act = "U" if elem.VR == "UI" else "Z"
            if act == "X":
                del ds[elem.tag]
            elif act == "U" or (act == "D" and elem.VR == "UI"):
                if elem.value:
                    elem.value = ([self.uid(str(v)) for v in elem.value] if elem.VM > 1
                                  else self.uid(str(elem.value)))
            elif act == "Z":
                if elem.VR == "SQ":
                    elem.value = []
                elif elem.VR in _NUMBERS:
                    del ds[elem.tag]     # binary numbers cannot be empty values in pydicom: removed
                    act = "X"
                else:
                    elem.value = None
            elif act == "D":
                if elem.VR == "SQ":
                    for item in elem.value:
                        self._clean(item, days, patient_pseudonym, changes, f"{name}[].")
                elif elem.VR in _DUMMY:
                    elem.value = _DUMMY[elem.VR]
                elif elem.VR in _NUMBERS:
                    elem.value = 0
                else:
                    del ds[elem.tag]
                    act = "X"
            changes[name] = act

    def _unlisted(self, ds: Dataset, elem: Any, days: int, patient_pseudonym: str, changes: dict[str, str],
                  name: str) -> None:
        """A known public attribute the table does not list: sequences are cleaned inside, text is kept only when
        on KEEP_TEXT, times of day are emptied, UIDs that the standard does not register are remapped; other values
        (numbers, code strings, binary data) are kept."""
        if elem.VR == "SQ":
            for item in elem.value:
                self._clean(item, days, patient_pseudonym, changes, f"{name}[].")
        elif elem.VR in _TEXT_VRS and elem.keyword not in KEEP_TEXT and elem.value not in (None, ""):
            if "[]" in name:          # inside a sequence a value may be required: a dummy keeps the item valid
                elem.value = _DUMMY.get(elem.VR, "")
                changes[name] = "D (text in a sequence)"
            else:
                del ds[elem.tag]
                changes[name] = "X (text not on the keep list)"
        elif elem.VR == "TM" and elem.value not in (None, ""):
            elem.value = None                 # a time of day the table missed: emptied, as it empties the others
            changes[name] = "Z (time of day)"
        elif elem.VR == "UI" and elem.value:
            values = elem.value if elem.VM > 1 else [elem.value]
            new = [v if str(v) in registered_uids() else self.uid(str(v)) for v in values]
            if new != list(values):
                elem.value = new if elem.VM > 1 else new[0]
                changes[name] = "U"


# the audit's own idea of what identifies (kept apart from the profile table it audits): attribute keywords that
# name a person, an identifier, a place or free text; device descriptors whose keyword says "Name" are not people
_IDENTITY = re.compile(r"Name|ID$|IDs$|ID[A-Z]|Identifier|Number|Address|Institution|Station|Department|Telephone|"
                       r"Location|Country|Region|Occupation|Physician|Operator|Observer|Comment|Description|History|"
                       r"Text|Label|Reason|Diagnos|Author|Contact|Responsible|Insurance|Military|Ethnic|Religio|"
                       r"Organization|Branch|Title")
_NOT_PEOPLE = re.compile(r"(ModelName|SequenceName|CoilName|SchemeName)$")
_DUMMIES = {"anonymized", "anonymous", "removed", "removed by de-id", "patient", "unknown"}
# descriptions echo coded terms ("PANCREAS" as StudyDescription and BodyPartExamined): a descriptive value equal to
# a whole code string (CS) of the output is not counted; names, identifiers, places and dates always are
_DESCRIPTIVE = re.compile(r"(Description|Comment|Text|Label|Reason|History|Diagnos\w*)$")


def identifying_values(original: Dataset) -> dict[str, str]:
    """The input's identifying values, by kind, each -> where it came from (a keyword path, never the value):
    every person-name component; every date, and every date-time with its time of day; every UID the standard
    does not register; every value of a text attribute whose keyword names a person, identifier, place or free
    text; every free-text value (ST, LT, UT); every AE title; printable runs in the preamble."""
    found: dict[str, str] = {}

    def add(value: str, where: str, least: int = 3) -> None:
        value = value.strip(" \x00")
        if not value.isascii():
            least = min(least, 2)        # a CJK family name is often two characters
        if len(value) >= least and any(c.isalnum() for c in value) and value.lower() not in _DUMMIES:
            found.setdefault(value, where)

    def walk(ds: Dataset, where: str) -> None:
        for elem in ds:
            kw = elem.keyword or f"({elem.tag.group:04X},{elem.tag.element:04X})"
            if elem.VR == "SQ":
                for item in elem.value or []:
                    walk(item, f"{where}{kw}[].")
                continue
            if elem.value in (None, "", b"") or elem.VR in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
                continue
            for v in (elem.value if elem.VM > 1 else [elem.value]):
                text = str(v)
                if elem.VR == "PN":
                    for part in re.split(r"[\^=\s,]+", text):
                        add(part, where + kw)
                elif elem.VR in ("DA", "DT"):
                    add(text[:8], where + kw, 8)
                    if elem.VR == "DT":
                        add(text[8:14], where + kw, 6)    # HHMMSS: shorter runs would match numbers by chance
                elif elem.VR == "UI":
                    if text not in registered_uids() and kw != "ImplementationClassUID":
                        add(text, where + kw, 8)
                elif elem.VR in ("ST", "LT", "UT"):
                    add(text, where + kw, 8)
                elif elem.VR == "AE":
                    add(text, where + kw)
                elif elem.VR in _TEXT_VRS and _IDENTITY.search(kw) and not _NOT_PEOPLE.search(kw):
                    add(text, where + kw)

    walk(original, "")
    if getattr(original, "file_meta", None) is not None:
        walk(original.file_meta, "file meta ")
    for run in re.findall(rb"[A-Za-z0-9^ .,_-]{4,}", bytes(getattr(original, "preamble", None) or b"")):
        for text in [run.decode("ascii"), *re.split(r"[\s^,]+", run.decode("ascii"))]:
            add(text, "preamble", 4)
    return found


def _file_bytes(output: Dataset | bytes) -> tuple[bytes, bytes, set[str]]:
    """(every byte of the output file followed by its decoded text values, its pixel data bytes, its code string
    values in lower case)."""
    import pydicom

    if isinstance(output, Dataset):
        buf = io.BytesIO()
        output.save_as(buf, enforce_file_format=False)
        data, ds = buf.getvalue(), output
    else:
        data, ds = output, pydicom.dcmread(io.BytesIO(output), force=True)
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID") == "1.2.840.10008.1.2.1.99" and data[128:132] == b"DICM":
        import zlib

        # a deflated dataset is searched inflated: its compressed bytes would hide every value
        start = 132
        while data[start:start + 2] == b"\x02\x00":     # the file meta elements (explicit VR little endian)
            long_form = data[start + 4:start + 6] in (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC",
                                                      b"UN", b"UR", b"UT", b"UV")
            size = (int.from_bytes(data[start + 8:start + 12], "little") + 12 if long_form
                    else int.from_bytes(data[start + 6:start + 8], "little") + 8)
            start += size
        data = data[:start] + zlib.decompressobj(-zlib.MAX_WBITS).decompress(data[start:])
    codes = {str(v).strip().lower() for e in ds.iterall() if e.VR == "CS" and e.value
             for v in (e.value if e.VM > 1 else [e.value])}
    # the values as pydicom decodes them too: a name written in another character set (ISO 2022 JIS, GB18030, ...)
    # has bytes that neither its UTF-8 nor its Latin-1 form matches
    decoded = "\x00".join(str(e.value) for e in ds.iterall() if e.VR in _TEXT_VRS and e.value)
    data += b"\x00" + decoded.encode("utf-8")
    return data, bytes(ds.get("PixelData", b"") or b""), codes


def leaked(original: Dataset, output: Dataset | bytes) -> list[str]:
    """The de-identification audit, independent of the profile table: every identifying value of ``original``
    (:func:`identifying_values`) is searched, as a whole token and in any letter case, in every byte of the output
    file (preamble, file meta, every element at any depth) except its pixel data, which is the input's own, byte
    for byte (text burned into pixels is flagged, not audited). Returns where each value found came from (keyword
    paths, never the values); empty: nothing identifying left."""
    data, pixels, codes = _file_bytes(output)
    if len(pixels) > 64:
        data = data.replace(pixels, b"\x00", 1)
    haystack = data.decode("latin-1").lower()
    found = set()
    for value, where in identifying_values(original).items():
        if _DESCRIPTIVE.search(where) and value.strip().lower() in codes:
            continue
        forms = {value.encode("utf-8").decode("latin-1")}
        try:
            forms.add(value.encode("latin-1").decode("latin-1"))
        except UnicodeEncodeError:
            pass
        for form in forms:
            edge = "0-9a-z_." if where.endswith("UID") else "0-9a-z_"
            if re.search(rf"(?<![{edge}]){re.escape(form.lower())}(?![{edge}])", haystack):
                found.add(where)
    return sorted(found)
