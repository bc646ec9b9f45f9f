"""`mmfm serve --dicomweb URL` against a real Orthanc: the app lists the PACS's series (patients as pseudonyms),
opens one as an upload is opened, segments it, and stores the mask back as a DICOM SEG into the study, whose frames
equal the mask the app shows; UIDs outside the served study are refused."""

from __future__ import annotations

import highdicom as hd
import nibabel as nib
import numpy as np
from fastapi.testclient import TestClient

from mmfm.app.server import create_app
from mmfm.data.io.dicomweb import DicomwebClient, parse_url
from tests.pacs.test_dicomweb import _first


def test_the_app_opens_a_pacs_series_and_stores_its_mask_back_as_a_seg(pacs, pacs_login, tmp_path):
    src = _first(pacs.single)
    app = create_app(["litemedsam"], dicomweb=pacs.root)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        assert c.get("/api/models").json()["pacs"] is True
        listing = c.get("/api/pacs/series")
        assert listing.status_code == 200 and src.PatientID not in listing.text
        rows = {r["series"]: r for r in listing.json()["series"]}
        assert rows[src.SeriesInstanceUID]["modality"] == "CT" and rows[src.SeriesInstanceUID]["instances"] == "1"
        info = c.post("/api/pacs/open", json={"study": src.StudyInstanceUID, "series": src.SeriesInstanceUID}).json()
        assert info["format"] == "dicom" and info["shape"] == [128, 128]
        assert c.post(f"/api/pacs/store/{info['id']}").status_code == 400           # no mask yet
        r = c.post(f"/api/segment/{info['id']}", json={"box": [20, 20, 70, 70]}).json()
        (tmp_path / "mask.nii.gz").write_bytes(c.get(r["mask"]).content)
        stored = c.post(f"/api/pacs/store/{info['id']}").json()["stored"]
        assert c.post("/api/pacs/open", json={"study": "1.2", "series": "x"}).status_code in (400, 422)
    assert stored[0]["study"] == src.StudyInstanceUID and stored[0]["modality"] == "SEG"
    seg_files = DicomwebClient(parse_url(pacs.root)).retrieve_series(src.StudyInstanceUID, stored[0]["series"],
                                                                     tmp_path / "seg")
    seg = hd.seg.segread(seg_files[0])
    mask = np.asarray(nib.load(tmp_path / "mask.nii.gz").dataobj) > 0                # (I, J)
    px = seg.get_pixels_by_source_instance([src.SOPInstanceUID], segment_numbers=[1])[0, ..., 0]
    assert mask.any() and np.array_equal(px.astype(bool), mask.T)


def test_an_app_on_one_study_refuses_another(pacs, pacs_login):
    src = _first(pacs.single)
    app = create_app(["litemedsam"], dicomweb=pacs.url(src, series=False))
    with TestClient(app, base_url="http://127.0.0.1") as c:
        assert {r["study"] for r in c.get("/api/pacs/series").json()["series"]} == {src.StudyInstanceUID}
        r = c.post("/api/pacs/open", json={"study": "1.2.3.4", "series": src.SeriesInstanceUID})
        assert r.status_code == 400 and "outside the study" in r.json()["error"]
