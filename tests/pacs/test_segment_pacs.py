"""`mmfm segment dicomweb+http://.../series/UID --out dicomweb+http://...`: the series retrieved from a real Orthanc,
segmented, and its DICOM SEG stored back into the same study; the SEG on the server is valid (dciodvfy) and its
frames equal those of the same command run on the local file."""

from __future__ import annotations

import re

import highdicom as hd
import numpy as np
import pydicom

from mmfm.cli.main import main
from mmfm.data.io.dicomweb import DicomwebClient, parse_url
from tests.pacs.test_dicomweb import _first, _one_line_error
from tests.workflows.test_dicom_seg import dciodvfy_errors

PROMPT = ["--box", "20", "20", "70", "70", "--label", "liver", "--engine", "torch", "--quiet"]


def test_a_segment_stored_back_is_a_seg_of_the_study_equal_to_the_local_result(pacs, pacs_login, tmp_path, capsys):
    src = _first(pacs.single)
    assert main(["segment", pacs.url(src), *PROMPT, "--out", pacs.root]) == 0
    out = capsys.readouterr().out
    assert "stored a DICOM SEG" in out and str(tmp_path) not in out
    stored = re.search(r"stored SEG in study (\S+): series (\S+), instance (\S+)", out)
    assert stored and stored.group(1) == src.StudyInstanceUID
    found = DicomwebClient(parse_url(pacs.root)).search_series(src.StudyInstanceUID,
                                                               {"SeriesInstanceUID": stored.group(2)})
    assert found[0]["00080060"]["Value"] == ["SEG"]                         # QIDO: a SEG series in the study
    remote = DicomwebClient(parse_url(pacs.root)).retrieve_series(src.StudyInstanceUID, stored.group(2),
                                                                  tmp_path / "seg")
    assert [f.stem for f in remote] == [stored.group(3)]
    assert dciodvfy_errors(remote[0]) == []
    assert main(["segment", str(sorted(pacs.single.iterdir())[0]), *PROMPT, "--out", str(tmp_path / "local.dcm")]) == 0
    got, want = hd.seg.segread(remote[0]), hd.seg.segread(tmp_path / "local.dcm")
    px = [s.get_pixels_by_source_instance([src.SOPInstanceUID], segment_numbers=[1]) for s in (got, want)]
    assert px[0].any() and np.array_equal(px[0], px[1])
    assert got.get_segment_description(1).segment_label == "liver"
    assert pydicom.dcmread(remote[0]).ReferencedSeriesSequence[0].SeriesInstanceUID == src.SeriesInstanceUID

    # the SEG series is not an image to segment
    capsys.readouterr()
    seg_url = f"{pacs.root}/studies/{src.StudyInstanceUID}/series/{stored.group(2)}"
    assert main(["segment", seg_url, *PROMPT, "--out", str(tmp_path / "x.nii.gz")]) == 2
    assert "is not an image (Modality SEG)" in _one_line_error(capsys)
