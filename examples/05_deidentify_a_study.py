# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # De-identify a study before it leaves the hospital
#
# `mmfm.deid` writes de-identified copies of a folder of DICOM files (and of the report texts in it) with the DICOM
# PS3.15 Basic Application Level Confidentiality Profile and the Modified Dates option: identifying attributes
# removed, emptied or replaced, UIDs remapped consistently (a series stays one series), dates shifted per patient,
# private tags dropped; the pixels are unchanged. Every written file is then audited: the input's identifying
# values are searched in its bytes, and a file where one is found is withheld. The input is never modified.
#
# The study here is made from a real CT series (TotalSegmentator's reference DICOM CT, from the `totalsegmentator`
# 2.18.0 source distribution on PyPI), stamped with a made-up patient identity so that there is something to remove,
# plus a report text that names the patient.

# %%
import json
from pathlib import Path

import numpy as np
import pydicom

import mmfm
from mmfm.data.sources.pretrain_corpus import totalsegmentator_references

IDENTITY = {"PatientName": "Doe^Jane", "PatientID": "MRN-0042-7731", "PatientBirthDate": "19610415",
            "PatientAddress": "12 Harbour Road, Basel", "InstitutionName": "St Example Hospital",
            "ReferringPhysicianName": "House^Gregory", "AccessionNumber": "ACC20221208", "OtherPatientIDs": "X-99-1"}

study = Path("study")
(study / "ct").mkdir(parents=True, exist_ok=True)
study_uid, series_uid = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
sources = sorted((totalsegmentator_references() / "example_ct_dicom").iterdir())[:6]     # six slices keep it quick
for n, f in enumerate(sources):
    ds = pydicom.dcmread(f)
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    for tag, value in IDENTITY.items():
        setattr(ds, tag, value)
    ds.add_new((0x0029, 0x0010), "LO", "ACME PRIVATE")          # a private block, as scanners write them
    ds.add_new((0x0029, 0x1001), "LO", "patient Jane Doe, bed 4")
    ds.save_as(study / "ct" / f"IMG{n:04d}.dcm")
(study / "report.txt").write_text(
    "Patient: Jane Doe (MRN: 0042-7731), born 15/04/1961. Referred by Dr Gregory House, St Example Hospital.\n"
    "FINDINGS: The liver is normal in size. No focal lesion.\nIMPRESSION: No acute abnormality.\n")
print(sorted(str(p.relative_to(study)) for p in study.rglob("*") if p.is_file()))

# %% [markdown]
# ## De-identify
#
# `out` must be a new (or empty) folder outside the input. The summary (also written as `deid.json` in it) lists
# what was done to each file, never an old value.

# %%
summary = mmfm.deid(study, "study_deid")
print(json.dumps(summary["counts"], indent=1))
print(json.dumps(summary["audit"], indent=1)[:400])
first = summary["written"][0]
print({key: first[key] for key in first if key not in ("source",)})

# %%
out = Path("study_deid")
written = sorted(out.rglob("*.dcm"))
assert summary["counts"]["written"] == len(sources) == len(written), summary["counts"]
assert summary["counts"]["withheld"] == 0 and summary["audit"]["leaks"] == 0
assert (out / "deid.json").exists()

# %% [markdown]
# ## Check: the identity is gone, the image is not
#
# Read the copies back: none of the made-up identity is left in any attribute, the private block is dropped, the
# six files still form one study and one series under new UIDs, and the pixels are those of the originals.

# %%
for new in written:
    ds = pydicom.dcmread(new)
    raw = new.read_bytes()
    for tag, value in IDENTITY.items():
        assert str(ds.get(tag, "")) != value, (tag, new.name)
        assert value.encode() not in raw, (tag, new.name)          # not anywhere in the file either
    assert not any(elem.tag.is_private for elem in ds), new.name
    assert ds.StudyInstanceUID != study_uid and ds.SeriesInstanceUID != series_uid
print("PatientName:", repr(str(ds.PatientName)), "| PatientID:", repr(ds.PatientID),
      "| BirthDate:", repr(ds.get("PatientBirthDate", "")), "| StudyDate:", ds.get("StudyDate"))

copies = [pydicom.dcmread(p) for p in written]
assert len({d.StudyInstanceUID for d in copies}) == 1 and len({d.SeriesInstanceUID for d in copies}) == 1
originals = {pydicom.dcmread(p).ImagePositionPatient[2]: pydicom.dcmread(p).pixel_array for p in sorted(
    (study / "ct").iterdir())}
for d in copies:
    assert np.array_equal(d.pixel_array, originals[d.ImagePositionPatient[2]])
print("pixels unchanged in", len(copies), "files; one study, one series")

# %% [markdown]
# The report text is de-identified too, by rules (no clinical NER model ships offline): the names found in the
# study's DICOM headers anywhere, names after a title or "Patient:", dates, labelled identifiers (`MRN:`,
# `Accession No.`) and runs of 6+ digits, addresses and institutions are replaced by placeholders; the findings stay.
# A name or number without such a cue is missed: read what a model will be trained on.

# %%
(report,) = list((out / "reports").glob("*.txt"))
text = report.read_text()
print(text)
for value in ("Jane", "Doe", "0042-7731", "1961", "House", "St Example Hospital"):
    assert value not in text, value
assert "The liver is normal in size" in text
