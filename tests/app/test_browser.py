"""End to end in a real browser: headless Chromium (the Debian `chromium` package, driven by Playwright) against
`mmfm serve`. Skipped when Playwright or Chromium is missing (`make setup` installs Chromium where it can).

The DICOM is pydicom's real CT (mini ships no DICOM file); the NIfTI is a LiTS slice of mini written with an
affine. Screenshots go to $MMFM_SCREENSHOTS (default: the test's temporary folder)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
CHROMIUM = os.environ.get("MMFM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt-get install chromium; make setup)")]

BOX = (30, 30, 90, 90)


@pytest.fixture(scope="module")
def server():
    import uvicorn

    from mmfm.app.server import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(["litemedsam", "llama_tiny"])
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    t.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture()
def shots(tmp_path) -> Path:
    d = Path(os.environ.get("MMFM_SCREENSHOTS") or tmp_path)
    d.mkdir(parents=True, exist_ok=True)
    return d


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return 1.0 if not a.any() and not b.any() else 2 * float((a & b).sum()) / float(a.sum() + b.sum())


def _segment_in_browser(browser, server, image: Path, tmp_path: Path, shot: Path | None) -> Path:
    page = browser.new_page(viewport={"width": 1200, "height": 860})
    page.goto(server)
    page.set_input_files("#file", str(image))
    # locator expectations, not wait_for_function("..."): the app's CSP forbids the eval a string predicate needs
    expect(page.locator("#status")).to_have_text(re.compile("^loaded"), timeout=120_000)
    scale = page.evaluate("scale")
    r = page.locator("#view").bounding_box()
    x0, y0, x1, y1 = BOX
    page.mouse.move(r["x"] + x0 * scale, r["y"] + y0 * scale)
    page.mouse.down()
    page.mouse.move(r["x"] + x1 * scale, r["y"] + y1 * scale, steps=5)
    page.mouse.up()
    assert page.evaluate("box") == list(BOX)
    page.click("#segment")
    expect(page.locator("#result")).to_have_text(re.compile("^mask:"), timeout=120_000)
    if shot is not None:
        page.screenshot(path=str(shot))
    with page.expect_download() as dl:
        page.click("#download")
    out = tmp_path / f"browser-{image.name}.nii.gz"
    dl.value.save_as(out)
    page.close()
    return out


def test_browser_box_mask_equals_python_api_dicom_and_nifti(browser, server, tmp_path, shots, dicom_path,
                                                           mini_root):
    from mmfm.data.io import read_image
    from mmfm.workflows.segment import segment

    dcm = tmp_path / "ct.dcm"
    dcm.write_bytes(Path(dicom_path("CT_small.dcm")).read_bytes())
    z = np.load(mini_root / "slices2d.npz")
    i = int(np.flatnonzero(z["modality"] == "CT")[0])
    nii = tmp_path / "lits_slice.nii.gz"
    affine = np.diag([0.7, 0.7, 2.5, 1.0])
    nib.save(nib.Nifti1Image((z["image"][i, 0] * 400 - 160).astype(np.float32)[:, :, None], affine), nii)
    for image, shot in ((dcm, shots / "app_segment_dicom.png"), (nii, shots / "app_segment_nifti.png")):
        got = _segment_in_browser(browser, server, image, tmp_path, shot)
        ref = tmp_path / f"api-{image.name}.nii.gz"
        segment(image, ref, box=list(BOX), progress=False)
        a, b = nib.load(got), nib.load(ref)
        assert _dice(np.asarray(a.dataobj), np.asarray(b.dataobj)) == 1.0 and np.asarray(a.dataobj).any()
        assert np.allclose(a.affine, b.affine) and a.shape == b.shape
        src = read_image(image)
        assert np.allclose(read_image(got).affine, src.affine)              # the input's geometry
        if image == nii:
            assert np.allclose(a.affine, affine)


def test_browser_corrupt_file_shows_the_message(browser, server, tmp_path, shots):
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(b"this is not a DICOM file" * 10)
    page = browser.new_page(viewport={"width": 1200, "height": 700})
    page.goto(server)
    page.set_input_files("#file", str(bad))
    expect(page.locator("#error")).not_to_be_empty(timeout=60_000)
    text = page.text_content("#error")
    assert "not a DICOM file" in text and "hint" in text and "Traceback" not in text and "mmfm-serve" not in text
    page.screenshot(path=str(shots / "app_error.png"))
    page.close()


def test_browser_chat_panel_asks_the_assistant_and_shows_text_as_text(browser, server, shots):
    """The assistant panel appears for a loaded assistant (llama_tiny: SmolLM2's template on seeded random
    weights); a question with markup is shown as typed, the answer under the model's name, the research label
    visible; the conversation is sent back with the next question."""
    page = browser.new_page(viewport={"width": 1200, "height": 860})
    page.goto(server)
    expect(page.locator("#chat-panel")).to_be_visible(timeout=60_000)
    assert "not a diagnosis" in page.text_content("#chat-panel")
    expect(page.locator("#chat-image-label")).to_be_hidden()             # a language model sees no image
    page.fill("#chat-q", "<img src=x onerror=alert(1)> what is a CT?")
    page.click("#chat-send")
    expect(page.locator("#chat-log div")).to_have_count(2, timeout=120_000)
    first, answer = page.locator("#chat-log div").all_text_contents()
    assert first == "you: <img src=x onerror=alert(1)> what is a CT?" and answer.startswith("llama_tiny: ")
    assert page.locator("#chat-log img").count() == 0 and page.evaluate("chat.length") == 2
    page.fill("#chat-q", "and an MRI?")
    page.click("#chat-send")
    expect(page.locator("#chat-log div")).to_have_count(4, timeout=120_000)
    assert page.evaluate("chat.length") == 4 and page.text_content("#error") == ""
    page.screenshot(path=str(shots / "app_chat.png"))
    page.close()


def test_browser_opens_report_offline(browser, tmp_path, shots, mini_root):
    from mmfm.workflows.config import load_config
    from mmfm.workflows.supervised import run_supervised

    run = tmp_path / "run"
    run_supervised(load_config(None, [f"out={run}", "encoder.name=resnet_tiny", "train.max_steps=5",
                                      "train.progress=false", f"data.root={mini_root}"]))
    page = browser.new_page(viewport={"width": 1200, "height": 1400})
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto((run / "report.html").as_uri())
    assert page.locator("table").count() >= 2 and page.locator("img").count() >= 4
    assert all(u.startswith(("file:", "data:")) for u in requests)               # nothing fetched from a network
    page.screenshot(path=str(shots / "report.png"), full_page=False)
    page.close()
