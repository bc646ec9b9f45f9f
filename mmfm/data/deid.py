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
* private attributes are removed unless listed safe (``keep_private``); curve data (50xx) and overlay comments and
  data (60xx) go too. Burned-in annotation is flagged (``BurnedInAnnotation`` YES, or absent on modalities that
  often burn text in: US, SC, ES, XC, OT, DX/CR secondary captures), never silently passed.

Pixel data is never touched: the output holds the input's exact PixelData bytes and transfer syntax. The change log
names attributes and actions, never old values.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pydicom.tag import Tag

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
        return day.strftime("%Y%m%d") + (text[8:] if vr == "DT" else "")

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
        if hasattr(ds, "file_meta") and "SOPInstanceUID" in ds:
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
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

    def _clean(self, ds: Dataset, days: int, patient_pseudonym: str, changes: dict[str, str], where: str) -> None:
        for elem in list(ds):
            tag = int(elem.tag)
            name = where + (elem.keyword or f"({elem.tag.group:04X},{elem.tag.element:04X})")
            if elem.tag.is_private:
                if tag not in self.safe_private:
                    del ds[elem.tag]
                    changes[name] = "X (private)"
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
                if elem.VR == "SQ":   # kept sequences are cleaned inside too
                    for item in elem.value:
                        self._clean(item, days, patient_pseudonym, changes, f"{name}[].")
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
                else:
                    elem.value = None if elem.VR not in ("US", "SS", "UL", "SL", "FL", "FD") else elem.value
                    if elem.VR in ("US", "SS", "UL", "SL", "FL", "FD"):
                        del ds[elem.tag]     # binary numbers cannot be empty values in pydicom: removed
                        act = "X"
            elif act == "D":
                if elem.VR == "SQ":
                    for item in elem.value:
                        self._clean(item, days, patient_pseudonym, changes, f"{name}[].")
                elif elem.VR in _DUMMY:
                    elem.value = _DUMMY[elem.VR]
                elif elem.VR in ("US", "SS", "UL", "SL", "FL", "FD"):
                    elem.value = 0
                else:
                    del ds[elem.tag]
                    act = "X"
            changes[name] = act


def leaked(original: Dataset, output: Dataset) -> list[str]:
    """The de-identification audit: attributes the profile lists whose original non-empty value survives, either
    in the same attribute of the output or, for names (PN), listed UIDs and identifiers, anywhere in the output's
    values as a whole token (file meta included). Empty list: nothing identifying left."""
    exact, masked = profile_table()

    def listed(tag: int) -> bool:
        return tag in exact or any(((tag >> 16) & gm) == g and (tag & 0xFFFF & em) == e
                                   for g, e, gm, em, _ in masked)

    before: dict[int, set[str]] = {}
    secrets: dict[str, str] = {}
    for elem in original.iterall():
        tag = int(elem.tag)
        if elem.VR == "SQ" or elem.value in (None, "", b"") or not (listed(tag) or elem.tag.is_private):
            continue
        text = str(elem.value).strip()
        before.setdefault(tag, set()).add(text)
        if len(text) >= 3 and (elem.VR in ("PN", "UI") or "ID" in (elem.keyword or "")
                               or elem.keyword == "AccessionNumber"):
            secrets[text] = elem.keyword or str(elem.tag)
    found = set()
    values = []
    for elem in output.iterall():
        if elem.VR in ("OB", "OW", "UN", "SQ"):
            continue
        text = str(elem.value).strip()
        values.append(text)
        if text and text in before.get(int(elem.tag), ()):
            found.add(elem.keyword or str(elem.tag))
    if hasattr(output, "file_meta"):
        values += [str(e.value) for e in output.file_meta]
    blob = "\x00".join(values)
    import re

    # whole-value matches only: "4900" inside a new 2.25.<digits> UID is a coincidence, not a leak
    found |= {name for text, name in secrets.items()
              if re.search(rf"(?<![0-9A-Za-z]){re.escape(text)}(?![0-9A-Za-z])", blob)}
    return sorted(found)
