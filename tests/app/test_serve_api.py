"""`mmfm serve` through its HTTP API (no browser): upload, slices, segment equal to the Python API, errors,
size limit, no file name kept, temporary folder removed."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from mmfm.app.server import create_app  # noqa: E402

LOCAL = "http://127.0.0.1"   # the app answers loopback names only (a DNS-rebinding page gets 400)


def test_upload_segment_download_equals_python_api(tmp_path, dicom_path):
    from mmfm.workflows.segment import segment

    data = Path(dicom_path("CT_small.dcm")).read_bytes()
    app = create_app(["litemedsam"], max_upload_mb=5)
    with TestClient(app, base_url=LOCAL) as c:
        r = c.post("/api/upload", content=data, headers={"X-Filename": "Doe_John_12345.dcm"})
        info = r.json()
        assert r.status_code == 200 and info["shape"] == [128, 128] and info["header"]["patient"].startswith("patient-")
        assert "Doe" not in json.dumps(info)
        assert not list(app.state.mmfm.root.rglob("*Doe*"))                  # the name is not kept on disk either
        png = c.get(f"/api/slice/{info['id']}")
        assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
        r = c.post(f"/api/segment/{info['id']}", json={"box": [30, 30, 90, 90]})
        assert r.status_code == 200 and r.json()["foreground"] > 0
        got = tmp_path / "app.nii.gz"
        got.write_bytes(c.get(r.json()["mask"]).content)
        bad = c.post(f"/api/segment/{info['id']}", json={"box": [30, 30, 90, 90], "boxx": 1})
        assert bad.status_code == 400 and "boxx" in bad.json()["error"]
        root = app.state.mmfm.root
    assert not root.exists()                                                  # uploads deleted with the app
    src = tmp_path / "ct.dcm"
    src.write_bytes(data)
    segment(src, tmp_path / "api.nii.gz", box=[30, 30, 90, 90], progress=False)
    a, b = nib.load(got), nib.load(tmp_path / "api.nii.gz")
    assert np.array_equal(a.get_fdata(), b.get_fdata()) and np.allclose(a.affine, b.affine)


def test_bad_uploads_get_messages_not_tracebacks(dicom_path):
    app = create_app(["litemedsam"], max_upload_mb=0.02)   # CT_small.dcm is 39 kB
    with TestClient(app, base_url=LOCAL) as c:
        r = c.post("/api/upload", content=b"not an image at all", headers={"X-Filename": "scan.dcm"})
        assert r.status_code == 400 and "DICOM" in r.json()["error"] and "mmfm-serve" not in r.json()["error"]
        assert r.json()["type"] == "InputFileError" and r.json()["error"].startswith("the upload: ")
        r = c.post("/api/upload", content=b"x", headers={"X-Filename": "virus.exe"})
        assert r.status_code == 400 and r.json()["hint"]
        r = c.post("/api/upload", content=Path(dicom_path("CT_small.dcm")).read_bytes(),
                   headers={"X-Filename": "big.dcm"})
        assert r.status_code == 400 and "limit" in r.json()["error"]
        r = c.post("/api/upload", content=b"PK\x03\x04broken", headers={"X-Filename": "series.zip"})
        assert r.status_code == 400 and "zip" in r.json()["error"]
        assert c.get("/api/slice/nope").status_code == 400
        r = c.post("/api/zeroshot/nope", json={"texts": ["a", "b"]})
        assert r.status_code == 400


def test_an_upload_without_a_known_suffix_is_read_by_its_first_bytes(dicom_path):
    """PACS exports name DICOM files IM0001 or by UID: the format registry recognises the bytes."""
    data = Path(dicom_path("CT_small.dcm")).read_bytes()
    app = create_app(["litemedsam"])
    with TestClient(app, base_url=LOCAL) as c:
        r = c.post("/api/upload", content=data, headers={"X-Filename": "IM0001"})
        assert r.status_code == 200, r.json()
        assert r.json()["format"] == "dicom" and r.json()["shape"] == [128, 128]
        assert [p.name for p in app.state.mmfm.root.rglob("upload*")] == ["upload.dcm"]
        r = c.post("/api/upload", content=b"plain text, no image", headers={"X-Filename": "IM0002"})
        assert r.status_code == 400 and "not one mmfm reads" in r.json()["error"]


def test_dicom_series_zip_is_a_volume(tmp_path, dicom_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.write(dicom_path("CT_small.dcm"), "series/a.dcm")
    app = create_app(["litemedsam"])
    with TestClient(app, base_url=LOCAL) as c:
        r = c.post("/api/upload", content=buf.getvalue(), headers={"X-Filename": "series.zip"})
        assert r.status_code == 200, r.json()
        assert r.json()["format"].startswith("dicom") and r.json()["header"]["patient"].startswith("patient-")


def test_a_second_click_on_an_upload_reuses_its_embeddings(tmp_path):
    """The app holds one Segmenter per upload: a second box on the same slice embeds no slice again, and its mask
    is the one a fresh `segment` call gives."""
    from mmfm.workflows.segment import segment

    i, j, k = np.mgrid[:40, :36, :7]
    ball = ((i - 18) / 9.0) ** 2 + ((j - 17) / 8.0) ** 2 + ((k - 3) / 2.0) ** 2 <= 1
    src = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.where(ball, 150.0, -100.0).astype(np.float32), np.diag([0.8, 0.8, 2.5, 1])), src)
    app = create_app(["litemedsam"])
    state = app.state.mmfm
    with TestClient(app, base_url=LOCAL) as c:
        sid = c.post("/api/upload", content=src.read_bytes(), headers={"X-Filename": "ct.nii.gz"}).json()["id"]
        assert c.post(f"/api/segment/{sid}", json={"box": [8, 8, 28, 26], "slice": 3}).status_code == 200
        seg = state.segmenter(sid, state.model("promptable"))
        seen = seg.embedded
        r = c.post(f"/api/segment/{sid}", json={"box": [9, 9, 27, 25], "slice": 3})
        assert r.status_code == 200 and r.json()["foreground"] > 0
        assert state.segmenter(sid, state.model("promptable")) is seg and seg.embedded == seen >= 3
        (tmp_path / "app.nii.gz").write_bytes(c.get(r.json()["mask"]).content)
    segment(src, tmp_path / "api.nii.gz", box=[9, 9, 27, 25], slice_index=3, progress=False)
    assert np.array_equal(nib.load(tmp_path / "app.nii.gz").get_fdata(), nib.load(tmp_path / "api.nii.gz").get_fdata())


def test_the_chat_panel_answers_through_a_loaded_assistant(dicom_path):
    """`mmfm serve --model llama_tiny` (SmolLM2's template on seeded random weights: the smollm2 code path in
    seconds): greedy answers repeat, are labelled research output, and a language model without a vision bridge
    refuses to look at an upload."""
    app = create_app(["litemedsam", "llama_tiny"])
    with TestClient(app, base_url=LOCAL) as c:
        listed = {m["name"]: m for m in c.get("/api/models").json()["models"]}
        assert listed["llama_tiny"]["kind"] == "assistant" and listed["llama_tiny"]["vision"] is False
        ask = {"messages": [{"role": "user", "content": "What does a CT scan measure?"}], "max_new_tokens": 6}
        a, b = c.post("/api/chat", json=ask), c.post("/api/chat", json=ask)
        assert a.status_code == 200, a.json()
        assert a.json()["answer"] == b.json()["answer"] and "not a diagnosis" in a.json()["label"]
        assert a.json()["turns_used"] == 1 and a.json()["turns_dropped"] == 0
        two = {"messages": [*ask["messages"], {"role": "assistant", "content": a.json()["answer"]},
                            {"role": "user", "content": "And an MRI?"}], "max_new_tokens": 6}
        assert c.post("/api/chat", json=two).json()["turns_used"] == 3
        sid = c.post("/api/upload", content=Path(dicom_path("CT_small.dcm")).read_bytes(),
                     headers={"X-Filename": "ct.dcm"}).json()["id"]
        r = c.post("/api/chat", json={**ask, "id": sid})
        assert r.status_code == 400 and "vision bridge" in r.json()["error"]
        r = c.post("/api/chat", json={"messages": [{"role": "assistant", "content": "hello"}]})
        assert r.status_code == 400 and "question" in r.json()["error"]
        r = c.post("/api/chat", json={**ask, "temperature": 2})
        assert r.status_code == 400 and "temperature" in r.json()["error"] and "messages" in r.json()["hint"]


def test_every_json_route_declares_its_request_and_response_models():
    """The app's JSON is typed both ways (mmfm/app/schemas.py): FastAPI validates answers and documents them."""
    app = create_app(["litemedsam"])
    with TestClient(app, base_url=LOCAL) as c:
        spec = c.get("/openapi.json").json()
    def response(path, method):
        schema = spec["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"]
        return schema["$ref"].rsplit("/", 1)[-1]
    assert response("/api/upload", "post") == "Opened"
    assert response("/api/segment/{sid}", "post") == response("/api/predict/{sid}", "post") == "MaskResult"
    assert response("/api/zeroshot/{sid}", "post") == "ZeroShotResult"
    assert response("/api/chat", "post") == "ChatAnswer" and response("/api/models", "get") == "Models"
    body = spec["paths"]["/api/segment/{sid}"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"].endswith("/SegmentRequest")
    assert spec["components"]["schemas"]["SegmentRequest"]["additionalProperties"] is False
