"""Attacks on `mmfm data deid` (issue 24, items 3, 7, 10 and 11): identifying values planted where the profile
table does not look (free text in ContentSequence, code meanings and names in kept sequences, unknown public and
overlay elements, the time of day in DT values, the preamble and the file meta group) and a symlink out of the
input folder. Every check here is by value: each planted string is searched for in every byte mmfm writes, so it
does not trust the profile table it tests. Real DICOMs from pydicom's test files; pixel data stays byte-identical."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from mmfm.workflows.deid import deidentify_folder

NAME, GIVEN, BIRTH = "Kowalczyk", "Genowefa", "19610304"


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def content_text(ds: Dataset) -> list[str]:
    item = Dataset()
    item.RelationshipType, item.ValueType = "CONTAINS", "TEXT"
    item.ConceptNameCodeSequence = [_code("121106", "DCM", "Comment")]
    item.TextValue = f"Patient {GIVEN} {NAME}, born {BIRTH}, fell off the Zebrafish Bridge"
    ds.ContentSequence = [item]
    return [NAME, GIVEN, BIRTH, "Zebrafish Bridge"]


def content_person(ds: Dataset) -> list[str]:
    item = Dataset()
    item.RelationshipType, item.ValueType = "HAS OBS CONTEXT", "PNAME"
    item.ConceptNameCodeSequence = [_code("121008", "DCM", "Person Observer Name")]
    item.PersonName = "Hrabal^Bohumil"
    ds.ContentSequence = [item]
    return ["Hrabal", "Bohumil"]


def code_meanings(ds: Dataset) -> list[str]:
    """A known code whose meaning was rewritten, and an unknown local code, nested two levels deep."""
    region = _code("12738006", "SCT", f"{NAME} {GIVEN}")
    region.AnatomicRegionModifierSequence = [_code("PRIV01", "99LOCAL", f"born {BIRTH} Quetzalcoatl")]
    ds.AnatomicRegionSequence = [region]
    return [NAME, GIVEN, BIRTH, "Quetzalcoatl"]


def names_and_text_in_kept_sequences(ds: Dataset) -> list[str]:
    region = _code("12738006", "SCT", "Brain structure")
    region.EvaluatorName = "Hrabal^Bohumil"            # a PN the profile table does not list
    region.TextValue = "seen by Dr Quetzalcoatl"
    region.add_new(0x00400099, "LO", "Zebrafish Clinic")   # unknown public element, nested
    ds.AnatomicRegionSequence = [region]
    return ["Hrabal", "Bohumil", "Quetzalcoatl", "Zebrafish"]


def unknown_public(ds: Dataset) -> list[str]:
    ds.add_new(0x00189999, "LO", f"{NAME} {GIVEN}")       # not in the DICOM dictionary
    ds.add_new(0x00280099, "UT", f"born {BIRTH}")
    return [NAME, GIVEN, BIRTH]


def overlays(ds: Dataset) -> list[str]:
    ds.add_new(0x60000022, "LO", f"{NAME} measurement")    # OverlayDescription
    ds.add_new(0x60001500, "LO", f"{GIVEN}")                # OverlayLabel
    ds.add_new(0x60020022, "LO", "Quetzalcoatl")
    return [NAME, GIVEN, "Quetzalcoatl"]


def datetime_time_of_day(ds: Dataset) -> list[str]:
    ds.AcquisitionDateTime = "20040119133742.123456+0100"
    ds.FrameAcquisitionDateTime = "20040119133742"
    ds.TimeOfGainCalibration = "133742"                   # a TM the profile table does not list
    return ["133742", "1337"]


def preamble(ds: Dataset) -> list[str]:
    ds.preamble = f"{NAME} {GIVEN} {BIRTH}".encode().ljust(128, b"\0")
    return [NAME, GIVEN, BIRTH]


def file_meta(ds: Dataset) -> list[str]:
    ds.file_meta.SourceApplicationEntityTitle = "ZEBRAFISHCT1"
    ds.file_meta.SendingApplicationEntityTitle = "QUETZALPACS"
    ds.file_meta.ImplementationVersionName = "KOWALCZYKSITE"
    return ["ZEBRAFISHCT1", "QUETZALPACS", "KOWALCZYKSITE"]


def trailing_padding(ds: Dataset) -> list[str]:
    """Baseline (the table removes it): bytes after the pixel data."""
    ds.DataSetTrailingPadding = f"{NAME} {GIVEN} {BIRTH}".encode().ljust(64, b"\0")
    return [NAME, GIVEN, BIRTH]


def header_phi(ds: Dataset) -> list[str]:
    """The usual places, as a baseline: the profile table handles these."""
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = f"{NAME}^{GIVEN}", "MRN99887766", BIRTH
    ds.AccessionNumber, ds.InstitutionName = "ACC55443322", "Zebrafish General Hospital"
    ds.ReferringPhysicianName = "Hrabal^Bohumil"
    return [NAME, GIVEN, BIRTH, "MRN99887766", "ACC55443322", "Zebrafish", "Hrabal"]


ATTACKS: dict[str, Callable[[Dataset], list[str]]] = {f.__name__: f for f in (
    content_text, content_person, code_meanings, names_and_text_in_kept_sequences, unknown_public, overlays,
    datetime_time_of_day, preamble, file_meta, trailing_padding, header_phi)}


def _plant(folder: Path, attack: Callable[[Dataset], list[str]], source: str) -> tuple[list[str], bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    ds = pydicom.dcmread(source)
    secrets = attack(ds)
    ds.save_as(folder / "planted.dcm", enforce_file_format=True)
    return secrets, ds.PixelData


def _every_output_byte(out: Path) -> bytes:
    return b"\0".join(p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file())


@pytest.mark.parametrize("source", ["CT_small.dcm", "JPEG2000.dcm"])
@pytest.mark.parametrize("attack", list(ATTACKS))
def test_planted_phi_leaves_no_byte_in_the_output(attack, source, tmp_path, dicom_path):
    secrets, pixels = _plant(tmp_path / "in", ATTACKS[attack], dicom_path(source))
    summary = deidentify_folder(tmp_path / "in", tmp_path / "out", progress=False)
    assert summary["counts"]["written"] == 1
    blob = _every_output_byte(tmp_path / "out").lower()
    assert [s for s in secrets if s.lower().encode() in blob] == [], attack
    out = pydicom.dcmread(next((tmp_path / "out").rglob("*.dcm")))
    assert out.PixelData == pixels                              # honest content untouched
    assert out.preamble == b"\0" * 128
    assert "ContentSequence" not in out
    written = json.loads((tmp_path / "out" / "deid.json").read_text())
    assert written["audit"]["files"] == 1 and written["audit"]["leaks"] == 0
    assert written["written"][0]["audit_leaks"] == 0


def test_known_codes_keep_their_standard_meaning(tmp_path, dicom_path):
    _plant(tmp_path / "in", code_meanings, dicom_path("JPEG2000.dcm"))
    deidentify_folder(tmp_path / "in", tmp_path / "out", progress=False)
    out = pydicom.dcmread(next((tmp_path / "out").rglob("*.dcm")))
    region = out.AnatomicRegionSequence[0]
    assert (region.CodeValue, region.CodingSchemeDesignator) == ("12738006", "SCT")
    assert region.CodeMeaning == "Brain structure (body structure)"            # from the standard, not the file
    assert out.DerivationCodeSequence[0].CodeMeaning == "Lossy Compression"


def test_file_meta_is_rebuilt(tmp_path, dicom_path):
    _plant(tmp_path / "in", file_meta, dicom_path("CT_small.dcm"))
    deidentify_folder(tmp_path / "in", tmp_path / "out", progress=False)
    out = pydicom.dcmread(next((tmp_path / "out").rglob("*.dcm")))
    keep = {"FileMetaInformationGroupLength", "FileMetaInformationVersion", "MediaStorageSOPClassUID",
            "MediaStorageSOPInstanceUID", "TransferSyntaxUID", "ImplementationClassUID", "ImplementationVersionName"}
    assert {e.keyword for e in out.file_meta} <= keep
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID


def test_audit_finds_values_the_profile_table_does_not_list(dicom_path):
    """leaked() searches the input's identifying values in the output's bytes: a name moved into an attribute no
    table lists (Manufacturer), into the preamble, or a birth date into a code meaning, is found."""
    from mmfm.data.deid import Deidentifier, leaked

    src = pydicom.dcmread(dicom_path("CT_small.dcm"))
    src.PatientName, src.PatientBirthDate = f"{NAME}^{GIVEN}", BIRTH
    for plant in (lambda d: setattr(d, "Manufacturer", NAME),
                  lambda d: setattr(d, "preamble", GIVEN.encode().ljust(128, b"\0")),
                  lambda d: setattr(d, "AnatomicRegionSequence", [_code("1", "99X", f"born {BIRTH}")])):
        out = pydicom.dcmread(dicom_path("CT_small.dcm"))
        out.PatientName, out.PatientBirthDate = src.PatientName, BIRTH
        Deidentifier(key=b"k" * 32).apply(out)
        assert leaked(src, out) == []
        plant(out)
        assert leaked(src, out) != []


def test_audit_reads_deflated_outputs(dicom_path):
    """A deflated transfer syntax compresses the dataset: a byte search on the file as written would see nothing."""
    from mmfm.data.deid import Deidentifier, leaked

    src, out = pydicom.dcmread(dicom_path("image_dfl.dcm")), pydicom.dcmread(dicom_path("image_dfl.dcm"))
    src.PatientName = out.PatientName = f"{NAME}^{GIVEN}"
    Deidentifier(key=b"k" * 32).apply(out)
    out.Manufacturer = NAME
    buf = io.BytesIO()
    out.save_as(buf, enforce_file_format=False)
    assert NAME.encode() not in buf.getvalue() and leaked(src, buf.getvalue()) == ["PatientName"]


def test_audit_reads_other_character_sets(dicom_path):
    """A name written in ISO 2022 (JIS) has bytes that neither its UTF-8 nor its Latin-1 form matches."""
    from mmfm.data.deid import Deidentifier, leaked

    src, out = pydicom.dcmread(dicom_path("CT_small.dcm")), pydicom.dcmread(dicom_path("CT_small.dcm"))
    for ds in (src, out):
        ds.SpecificCharacterSet, ds.PatientName = ["", "ISO 2022 IR 87"], "Yamada^Tarou=\u5c71\u7530^\u592a\u90ce"
    Deidentifier(key=b"k" * 32).apply(out)
    out.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    assert leaked(src, out) == []
    out.Manufacturer = "\u5c71\u7530"                          # the family name, two characters
    buf = io.BytesIO()
    out.save_as(buf, enforce_file_format=False)
    assert "\u5c71\u7530".encode() not in buf.getvalue() and leaked(src, buf.getvalue()) == ["PatientName"]


def test_workflow_audits_every_output_and_withholds_a_leaking_file(tmp_path, dicom_path, monkeypatch):
    from mmfm.data.deid import Deidentifier

    _plant(tmp_path / "in", header_phi, dicom_path("CT_small.dcm"))
    apply = Deidentifier.apply

    def sloppy(self, ds):                        # a profile bug: the name copied where no table looks
        log = apply(self, ds)
        ds.Manufacturer = NAME
        return log

    monkeypatch.setattr(Deidentifier, "apply", sloppy)
    summary = deidentify_folder(tmp_path / "in", tmp_path / "out", progress=False)
    assert summary["counts"]["written"] == 0 and summary["audit"]["leaks"] == 1
    assert sorted(p.name for p in (tmp_path / "out").rglob("*")) == ["deid.json"]
    assert NAME.lower().encode() not in _every_output_byte(tmp_path / "out").lower()


def test_symlink_out_of_the_input_is_not_followed(tmp_path, dicom_path, capsys):
    secret = tmp_path / "elsewhere" / "other_patient.dcm"
    _plant(secret.parent, header_phi, dicom_path("CT_small.dcm"))
    (secret.parent / "planted.dcm").rename(secret)
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "a.dcm").write_bytes(Path(dicom_path("MR_small.dcm")).read_bytes())
    (inp / "link.dcm").symlink_to(secret)
    summary = deidentify_folder(inp, tmp_path / "out", progress=False)
    assert summary["counts"]["written"] == 1
    assert any("outside the input folder" in s["reason"] for s in summary["skipped"])
    assert "elsewhere" not in (tmp_path / "out" / "deid.json").read_text()
    from mmfm.cli.main import main

    assert main(["data", "deid", str(inp), str(tmp_path / "out2"), "--json", "--allow-outside-root"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["written"] == 2   # the user opted in
