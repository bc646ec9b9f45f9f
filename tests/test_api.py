"""The public Python API (`mmfm/api.py`): every public name imports, and the cheap ones give the command's results as
plain objects (arrays with their affine, dicts). That every CLI command maps to one: tests/cli/test_cli_api_map.py."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

import mmfm
from mmfm import api
from mmfm.cli.main import main
from mmfm.errors import ConfigError, MMFMError


def test_every_public_name_imports_and_is_documented():
    assert set(mmfm.__all__) == set(api.__all__)
    for name in mmfm.__all__:
        obj = getattr(mmfm, name)
        assert obj is getattr(api, name) and obj.__doc__, name
    with pytest.raises(AttributeError):
        mmfm.not_a_function  # noqa: B018


def _volume(path=None):
    """A 40 x 36 x 7 CT-like volume (HU) with an oblique affine; a ball on slices 1..5 (k)."""
    i, j, k = np.mgrid[:40, :36, :7]
    ball = ((i - 18) / 9.0) ** 2 + ((j - 17) / 8.0) ** 2 + ((k - 3) / 2.2) ** 2 <= 1
    vol = np.where(ball, 150.0, -100.0).astype(np.float32)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[0.96, -0.28, 0], [0.28, 0.96, 0], [0, 0, 1.0]]) @ np.diag([0.8, 0.8, 2.5])
    affine[:3, 3] = [-30, 12, 40]
    if path is not None:
        nib.save(nib.Nifti1Image(vol, affine), str(path))
    return vol, ball, affine


def test_inspect_reports_the_shape_spacing_and_affine_of_a_nifti(tmp_path):
    _, _, affine = _volume(tmp_path / "ct.nii.gz")
    info = mmfm.inspect(tmp_path / "ct.nii.gz", modality="CT")
    assert info["format"] == "nifti" and info["modality"] == "CT"
    assert info["shape"] == [1, 40, 36, 7] and info["spatial_dims"] == 3
    assert info["spacing"] == pytest.approx([0.8, 0.8, 2.5], abs=1e-4)
    assert info["min"] == -100.0 and info["max"] == 150.0
    assert json.loads(json.dumps(info)) == info                       # JSON-able, as `--json` prints it


@pytest.mark.long
def test_segment_an_array_with_its_affine_gives_the_mask_on_its_grid(tmp_path):
    vol, ball, affine = _volume()
    i, j = np.nonzero(ball[:, :, 3])
    box = [i.min() - 1, j.min() - 1, i.max() + 1, j.max() + 1]
    seg = mmfm.segment(vol, box, affine=affine, slice_index=3, modality="CT")
    assert isinstance(seg, mmfm.Segmentation) and seg.path is None
    assert seg.mask.shape == ball.shape and seg.mask.dtype == np.uint8 and set(np.unique(seg.mask)) <= {0, 1}
    assert np.allclose(seg.affine, affine)
    pred = seg.mask > 0
    assert 2 * (pred & ball).sum() / (pred.sum() + ball.sum()) > 0.7
    assert seg.info["prompt"]["slice"] == 3 and seg.info["preset"] == "ct_abdomen"
    assert seg.info["foreground_voxels"] == int(pred.sum())
    # a 2D slice: the array call and the file call with out= (what `mmfm segment` writes) give the same mask
    nib.save(nib.Nifti1Image(vol[:, :, 3], affine), str(tmp_path / "slice.nii.gz"))
    flat = mmfm.segment(vol[:, :, 3], box, affine=affine, modality="CT")
    filed = mmfm.segment(tmp_path / "slice.nii.gz", box, modality="CT", out=tmp_path / "m.nii.gz")
    assert filed.path == tmp_path / "m.nii.gz" and (tmp_path / "m.json").exists()
    assert flat.mask.shape == ball.shape[:2] and np.array_equal(filed.mask, flat.mask)
    assert np.array_equal(np.asarray(nib.load(tmp_path / "m.nii.gz").dataobj), flat.mask)
    assert 2 * (flat.mask.astype(bool) & ball[:, :, 3]).sum() / (flat.mask.sum() + ball[:, :, 3].sum()) > 0.8
    with pytest.raises(ConfigError, match="no prompt"):
        mmfm.segment(vol, affine=affine, slice_index=3, modality="CT")
    with pytest.raises(ConfigError, match="affine"):
        mmfm.segment(vol, box, affine=np.eye(3), slice_index=3)


def test_deid_writes_a_deidentified_copy_and_returns_the_summary(tmp_path, dicom_path):
    import pydicom

    src = tmp_path / "in"
    src.mkdir()
    original = pydicom.dcmread(dicom_path("CT_small.dcm"))
    original.save_as(src / "a.dcm")
    summary = mmfm.deid(src, tmp_path / "out")
    assert summary["counts"]["written"] == 1 and summary["counts"]["withheld"] == 0
    (written,) = [p for p in (tmp_path / "out").rglob("*") if p.is_file() and p.suffix == ".dcm"]
    ds = pydicom.dcmread(written)
    assert str(ds.PatientName) != str(original.PatientName)
    assert ds.SOPInstanceUID != original.SOPInstanceUID
    assert np.array_equal(ds.pixel_array, original.pixel_array)


def test_zoo_list_label_reports_and_the_app_factory():
    names = [m["name"] for m in mmfm.zoo_list()]
    assert "litemedsam" in names
    assert mmfm.zoo_info("litemedsam")["name"] == "litemedsam"
    labels = mmfm.label_reports(["No pleural effusion. Cardiomegaly.", "Normal chest."])
    assert len(labels) == 2 and labels[0]["effusion"] == 0 and labels[0]["cardiomegaly"] == 1
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    app = mmfm.create_app()
    assert isinstance(app, FastAPI)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        r = client.get("/api/models")
        assert r.status_code == 200 and "litemedsam" in json.dumps(r.json())


def test_the_cli_and_the_api_label_reports_alike(capsys):
    assert main(["data", "label", "No pleural effusion."]) == 0
    assert json.loads(capsys.readouterr().out) == mmfm.label_reports("No pleural effusion.")[0]


def _dice(x, y):
    return 2 * (x & y).sum() / (x.sum() + y.sum())


def test_register_two_arrays_aligns_them_on_the_fixed_grid(tmp_path):
    yy, xx = np.mgrid[:48, :48]
    fixed = np.where((xx - 22) ** 2 + (yy - 24) ** 2 <= 100, 200.0, 20.0).T      # (I, J): i = column
    moving = np.where((xx - 26) ** 2 + (yy - 21) ** 2 <= 100, 200.0, 20.0).T
    r = mmfm.register(fixed, moving, tmp_path / "reg", mode="affine", iterations=10, levels=(2.0, 1.0))
    assert isinstance(r, mmfm.Registration) and r.warped.shape == fixed.shape and np.allclose(r.affine, np.eye(4))
    assert _dice(fixed > 110, moving > 110) < 0.7 and _dice(fixed > 110, r.warped > 110) > 0.95
    assert r.info["mode"] == "affine" and (tmp_path / "reg" / "affine.json").exists()


def test_shard_verify_and_prepare_a_folder(tmp_path):
    from PIL import Image

    for c in ("a", "b"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(4):
            pixels = np.random.default_rng(i).integers(0, 255, (20, 20), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "imgs" / c / f"x{i}.png")
    index = mmfm.shard(tmp_path / "imgs", tmp_path / "shards", overrides=["data.size=[16,16]"])
    assert sum(s["samples"] for shards in index["splits"].values() for s in shards) == 8
    assert mmfm.verify_shards(tmp_path / "shards") == []
    card = mmfm.prepare("folder", tmp_path / "imgs", out=tmp_path / "card")
    assert json.loads((card / "card.json").read_text()) and (card / "card.md").exists()
    assert not any(p.name.startswith("card") for p in (tmp_path / "imgs").rglob("*"))   # the data is not written to
    with pytest.raises(MMFMError, match="cannot be downloaded"):
        mmfm.prepare("MIMIC-CXR")


def test_chat_answers_as_the_command_does_and_reuses_a_loaded_assistant(capsys):
    question = "What does a CT scan measure?"
    rec = mmfm.chat(question, max_new_tokens=8)
    assert main(["chat", "--model", "smollm2", "--json", "--max-tokens", "8", question]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert rec["answer"] and rec["answer"] == cli["answer"] and rec["new_tokens"] <= 8     # greedy: the same
    bot = mmfm.load_assistant("smollm2")
    assert mmfm.chat(question, bot, max_new_tokens=8)["answer"] == rec["answer"]
    with pytest.raises(ConfigError, match="empty"):
        mmfm.chat("  ", bot)


def test_explain_an_array_as_the_command_explains_its_file_and_predict_zero_shot(tmp_path, capsys):
    from tests.workflows.test_dicom_results import write_tiny_clip

    clip = write_tiny_clip(tmp_path / "clip")
    ct = np.random.default_rng(0).normal(0, 100, (40, 36)).astype(np.float32)
    affine = np.diag([0.7, 0.7, 3.0, 1.0])
    why = mmfm.explain(clip, ct, affine=affine, text="liver lesion", modality="CT")
    assert isinstance(why, mmfm.Explanation) and why.out is None and "text" in why.maps
    assert why.maps["text"].shape == ct.shape and np.allclose(why.affine, affine)
    assert why.info["text_tokens"] == ["liver", "lesion"] and 0.5 < why.maps["text"].max() <= 1 + 1e-5
    nib.save(nib.Nifti1Image(ct, affine), str(tmp_path / "ct.nii.gz"))
    assert main(["explain", str(tmp_path / "ct.nii.gz"), "--model", str(clip), "--text", "liver lesion",
                 "--modality", "CT", "--out", str(tmp_path / "why")]) == 0
    cli_map = np.asarray(nib.load(tmp_path / "why" / "text.nii.gz").dataobj)
    assert np.allclose(cli_map, why.maps["text"], atol=1e-6)
    with pytest.raises(ConfigError, match="text"):
        mmfm.explain(clip, ct, affine=affine)
    rec = mmfm.predict(clip, tmp_path / "ct.nii.gz", tmp_path / "zs", classes=["liver", "bone"])
    assert rec["task"] == "zeroshot" and sum(rec["cases"][0]["probabilities"].values()) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="image-text"):
        mmfm.predict(clip, tmp_path / "ct.nii.gz", tmp_path / "zs2")


def test_a_segmenter_prompts_one_file_again_without_embedding_it_again(tmp_path):
    _, ball, _ = _volume(tmp_path / "ct.nii.gz")
    seg = mmfm.segmenter(tmp_path / "ct.nii.gz", modality="CT", engine="torch")
    kw = dict(slice_index=3, modality="CT", engine="torch")
    a = mmfm.segment(tmp_path / "ct.nii.gz", [8, 8, 28, 26], segmenter=seg, **kw)
    seen = seg.embedded
    b = mmfm.segment(tmp_path / "ct.nii.gz", [9, 9, 27, 25], segmenter=seg, **kw)
    assert seg.embedded == seen > 0 and a.mask.any()
    assert np.array_equal(b.mask, mmfm.segment(tmp_path / "ct.nii.gz", [9, 9, 27, 25], **kw).mask)
    with pytest.raises(ConfigError, match="image file"):
        mmfm.segment(np.zeros((8, 8, 3), np.float32), [1, 1, 4, 4], slice_index=1, segmenter=seg)
