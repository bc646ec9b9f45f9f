"""DICOM de-identification (PS3.15 Basic Profile): nothing identifying left, pixels byte-identical, geometry kept,
UIDs and dates consistent per study and patient; bad inputs reported, the input untouched, nothing half-written."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from mmfm.data.deid import Deidentifier, leaked
from mmfm.data.deid_text import deidentify_text, known_names
from mmfm.errors import MMFMError
from mmfm.workflows.deid import deidentify_folder

FILES = ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "emri_small.dcm", "US1_J2KR.dcm"]


def _tree_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture()
def dicoms(tmp_path, dicom_path):
    inp = tmp_path / "in" / "Doe_John_MRN1234567"      # an identifying folder name, as users have
    inp.mkdir(parents=True)
    for name in FILES:
        (inp / name).write_bytes(Path(dicom_path(name)).read_bytes())
    return inp


def test_profile_output_leaks_nothing_and_keeps_pixels_and_geometry(dicoms, tmp_path):
    from mmfm.data.io import read_image

    before = _tree_hash(dicoms)
    out = tmp_path / "out"
    summary = deidentify_folder(dicoms, out, progress=False)
    assert _tree_hash(dicoms) == before                                 # the input is never modified
    assert summary["counts"]["written"] == len(FILES)
    assert "Doe" not in json.dumps(summary) and "1234567" not in (out / "deid.json").read_text()
    by_pixels = {pydicom.dcmread(p).PixelData: p for p in out.rglob("*.dcm")}
    for name in FILES:
        src = pydicom.dcmread(dicoms / name)
        dst_path = by_pixels[src.PixelData]                           # pixel data byte-identical
        dst = pydicom.dcmread(dst_path)
        assert leaked(src, dst) == [], name
        assert dst.PatientIdentityRemoved == "YES"
        assert dst.file_meta.TransferSyntaxUID == src.file_meta.TransferSyntaxUID
        assert dst.file_meta.MediaStorageSOPInstanceUID == dst.SOPInstanceUID != src.SOPInstanceUID
        assert not any(e.tag.is_private for e in dst.iterall())
        a, b = read_image(dicoms / name), read_image(dst_path)
        assert np.allclose(a.affine, b.affine) and np.array_equal(a.array, b.array)
        for kw in ("PatientName", "PatientID", "AccessionNumber", "InstitutionName", "ReferringPhysicianName"):
            if kw in src and str(src.get(kw, "")):
                assert str(dst.get(kw, "")) != str(src.get(kw))


def test_uids_and_dates_are_consistent_within_a_study_and_patient(dicom_path):
    ds1, ds2 = pydicom.dcmread(dicom_path("CT_small.dcm")), pydicom.dcmread(dicom_path("CT_small.dcm"))
    ds2.SOPInstanceUID = ds2.SOPInstanceUID + ".9"
    ds2.ContentDate = "20040129"                                     # 10 days after the first
    ds1.ContentDate = "20040119"
    d = Deidentifier(key=b"k" * 32)
    d.apply(ds1)
    d.apply(ds2)
    assert ds1.StudyInstanceUID == ds2.StudyInstanceUID and ds1.SeriesInstanceUID == ds2.SeriesInstanceUID
    assert ds1.SOPInstanceUID != ds2.SOPInstanceUID and ds1.PatientID == ds2.PatientID
    import datetime as dt
    day = lambda s: dt.datetime.strptime(s, "%Y%m%d")  # noqa: E731
    assert (day(ds2.ContentDate) - day(ds1.ContentDate)).days == 10
    assert ds1.ContentDate != "20040119" and not ds1.get("PatientBirthDate")
    other = Deidentifier(key=b"x" * 32)                              # another project key: other UIDs
    ds3 = pydicom.dcmread(dicom_path("CT_small.dcm"))
    other.apply(ds3)
    assert ds3.StudyInstanceUID != ds1.StudyInstanceUID


def test_bad_inputs_are_reported_and_skipped(dicoms, tmp_path, dicom_path):
    raw = (dicoms / "CT_small.dcm").read_bytes()
    (dicoms / "notes.dcm").write_text("not a DICOM file")
    (dicoms / "cut.dcm").write_bytes(raw[:-5000])                   # truncated inside the pixel data
    (dicoms / "plan.dcm").write_bytes(Path(dicom_path("rtplan.dcm")).read_bytes())   # no pixel data
    summary = deidentify_folder(dicoms, tmp_path / "out", progress=False)
    reasons = sorted(s["reason"].split(" ")[0] for s in summary["skipped"])
    assert len(summary["skipped"]) == 3 and summary["counts"]["written"] == len(FILES)
    assert any("not a DICOM" in s["reason"] for s in summary["skipped"])
    assert any("truncated" in s["reason"] or "unreadable" in s["reason"] for s in summary["skipped"]), reasons
    assert any("without pixel data" in s["reason"] for s in summary["skipped"])


def test_refuses_output_inside_input_or_not_empty_and_leaves_nothing_on_failure(dicoms, tmp_path, monkeypatch):
    with pytest.raises(MMFMError, match="inside the input"):
        deidentify_folder(dicoms.parent, dicoms / "out", progress=False)
    full = tmp_path / "full"
    full.mkdir()
    (full / "mine.txt").write_text("user file")
    with pytest.raises(MMFMError, match="not empty"):
        deidentify_folder(dicoms, full, progress=False)
    assert (full / "mine.txt").read_text() == "user file"

    def boom(self, ds):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Deidentifier, "apply", boom)
    with pytest.raises(RuntimeError):
        deidentify_folder(dicoms, tmp_path / "new", progress=False)
    assert not (tmp_path / "new").exists() and not (tmp_path / "new.incomplete").exists()


def test_report_text_deidentification():
    text = ("Patient: John Smith, MRN: 12345678. Seen 03/14/2021 and on March 3, 2020 at St Mary Hospital, "
            "12 Baker Street. Dr. Jane Doe. Call 555-123-4567 or jd@example.org. Dictated by Robert Brown. "
            "Mr Fakename was told. No acute cardiopulmonary abnormality.")
    clean, counts = deidentify_text(text, known_names(["Fakename^Karl"]))
    for secret in ("John", "Smith", "12345678", "2021", "2020", "St Mary", "Baker", "Jane", "Doe", "555", "jd@",
                   "Robert", "Brown", "Fakename"):
        assert secret not in clean, secret
    assert "No acute cardiopulmonary abnormality." in clean and counts["NAME"] >= 4 and counts["DATE"] == 2


def test_cli_deid(dicoms, tmp_path, capsys):
    from mmfm.cli.main import main

    (dicoms / "report.txt").write_text("Electronically signed by Alice Walker on 2021-01-02.")
    assert main(["data", "deid", str(dicoms), str(tmp_path / "o"), "--json"]) == 0
    counts = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert counts["written"] == len(FILES) and counts["text"] == 1
    text = next((tmp_path / "o" / "reports").glob("*.txt")).read_text()
    assert "Alice" not in text and "2021" not in text
    assert main(["data", "deid", str(dicoms), str(tmp_path / "o2"), "--keep-private", "zz"]) == 2


def test_instances_sharing_or_lacking_a_uid_are_all_written(tmp_path, dicom_path):
    """Found on TotalSegmentator's DICOM series (empty SOPInstanceUID): one output must never replace another."""
    inp = tmp_path / "in"
    inp.mkdir()
    for k in range(3):
        ds = pydicom.dcmread(dicom_path("CT_small.dcm"))
        ds.SOPInstanceUID = ""
        ds.InstanceNumber = k
        ds.save_as(inp / f"{k}.dcm")
    summary = deidentify_folder(inp, tmp_path / "out", progress=False)
    assert len({w["file"] for w in summary["written"]}) == 3 and len(list((tmp_path / "out").rglob("*.dcm"))) == 3


def test_known_identifiers_are_scrubbed_from_text_in_any_spacing():
    """A header's PatientID / AccessionNumber is replaced wherever a report writes it, with or without a cue and
    with other separators; short values and longer words or numbers that contain it are left alone."""
    text = ("Ref MRN-0042-7731; also seen as 0042 7731 and MRN00427731. Accession acc/2024/99. ZX41Q is a "
            "code, ZX-41 an ID. Grade 2A.")
    clean, counts = deidentify_text(text, identifiers=["MRN-0042-7731", "ACC-2024-99", "ZX 41", "2A"])
    assert "0042" not in clean and "7731" not in clean and "2024/99" not in clean
    assert "ZX41Q is a code, [ID] an ID." in clean and "Grade 2A." in clean and counts["ID"] == 5


def test_deid_scrubs_the_headers_patient_id_from_the_study_reports(tmp_path, dicom_path):
    inp = tmp_path / "in"
    inp.mkdir()
    ds = pydicom.dcmread(dicom_path("CT_small.dcm"))
    ds.PatientID, ds.AccessionNumber = "MRN-0042-7731", "A77-190"
    ds.save_as(inp / "ct.dcm")
    (inp / "report.txt").write_text("Patient MRN-0042-7731 (acc. A77 190): no acute findings.")
    summary = deidentify_folder(inp, tmp_path / "out", progress=False)
    text = next((tmp_path / "out" / "reports").glob("*.txt")).read_text()
    assert "7731" not in text and "A77" not in text and "no acute findings." in text
    assert summary["text"][0]["replaced"]["ID"] == 2
