"""`mmfm serve`: a DICOM upload's mask is also offered as a DICOM SEG (mmfm's writer), frame for frame the mask the
app shows, referencing the uploaded instances and valid by dciodvfy; a non-DICOM upload is offered none."""

from __future__ import annotations

import io
import zipfile

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from mmfm.app.server import create_app  # noqa: E402
from tests.workflows.test_dicom_seg import dciodvfy_errors, write_series  # noqa: E402

LOCAL = "http://127.0.0.1"


def test_dicom_series_upload_offers_its_mask_as_a_dicom_seg(tmp_path, dicom_path):
    files = write_series(dicom_path("CT_small.dcm"), tmp_path / "series", n=3)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for f in files:
            z.write(f, f"series/{f.name}")
    app = create_app(["litemedsam"])
    with TestClient(app, base_url=LOCAL) as c:
        info = c.post("/api/upload", content=buf.getvalue(), headers={"X-Filename": "series.zip"}).json()
        assert c.get(f"/api/seg/{info['id']}").status_code == 400              # no mask yet
        r = c.post(f"/api/segment/{info['id']}", json={"box": [30, 30, 90, 90], "slice": 1}).json()
        assert r["seg"] == f"/api/seg/{info['id']}"
        got = c.get(r["seg"])
        assert got.status_code == 200 and got.headers["content-type"] == "application/dicom"
        nifti = tmp_path / "mask.nii.gz"
        nifti.write_bytes(c.get(r["mask"]).content)
    (tmp_path / "seg.dcm").write_bytes(got.content)
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    sources = [pydicom.dcmread(f) for f in files]
    assert seg.Modality == "SEG" and seg.StudyInstanceUID == sources[0].StudyInstanceUID
    refs = {i.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence for i in s.ReferencedInstanceSequence}
    assert refs == {s.SOPInstanceUID for s in sources}
    mask = np.asarray(nib.load(nifti).dataobj) > 0                                # (I, J, K) on the upload's grid
    assert mask.any()
    for k, src in enumerate(sources):          # each source's SEG frame against the mask's slice k (rows = j)
        px = seg.get_pixels_by_source_instance([src.SOPInstanceUID], segment_numbers=[1],
                                               assert_missing_frames_are_empty=True)[0, ..., 0]
        assert np.array_equal(px.astype(bool), mask[:, :, k].T)
    assert dciodvfy_errors(tmp_path / "seg.dcm") == []


def test_a_png_upload_is_offered_no_dicom_seg(tmp_path):
    img = np.full((64, 64), 40, np.uint8)
    img[20:40, 20:40] = 200
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    app = create_app(["litemedsam"])
    with TestClient(app, base_url=LOCAL) as c:
        info = c.post("/api/upload", content=buf.getvalue(), headers={"X-Filename": "a.png"}).json()
        r = c.post(f"/api/segment/{info['id']}", json={"box": [18, 18, 42, 42]}).json()
        assert "seg" not in r and r["foreground"] > 0
        bad = c.get(f"/api/seg/{info['id']}")
        assert bad.status_code == 400 and "DICOM" in bad.json()["error"]
