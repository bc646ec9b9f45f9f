"""ONNX Runtime as the promptable segmenter's engine: the exported graphs give torch's logits and IoU estimates for
boxes, clicks, both and a mask prompt; propagation through a volume gives torch's mask with the embedding cache
unchanged; the manifest says what the files are; `mmfm zoo export` never overwrites what it did not write.
A small SAM-style model (vit_mini, 32 pixels) keeps the default tests fast; LiteMedSAM itself is the slow test."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from mmfm.errors import ConfigError  # noqa: E402
from mmfm.tasks import promptable as P  # noqa: E402
from mmfm.tasks import promptable_onnx as O  # noqa: E402

PROMPTS = [
    {"boxes": torch.tensor([[4.0, 5.0, 20.0, 24.0]])},
    {"points": torch.tensor([[[12.0, 12.0], [2.0, 30.0]]]), "labels": torch.tensor([[1, 0]])},
    {"boxes": torch.tensor([[4.0, 5.0, 20.0, 24.0]]), "points": torch.tensor([[[8.0, 9.0]]]),
     "labels": torch.tensor([[0]])},
]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    torch.manual_seed(0)
    model = P.for_inference(P.sam_style_model({"name": "vit_mini", "patch_size": 8}, 3, input_size=32, dim=32))
    folder = tmp_path_factory.mktemp("onnx")
    manifest = O.export_onnx(model, folder, int8=True)
    return model, folder, manifest


def _check_same(model, engine, image, atol=1e-4):
    with torch.no_grad():
        emb_t, emb_o = model.embed(image), engine.embed(image)
        assert emb_o.shape == emb_t.shape and torch.allclose(emb_o, emb_t, atol=atol)
        emb_t = emb_t[-1:]                                                 # the decoder graph takes one image
        for prompt in PROMPTS:
            lt, it = model.decode(emb_t, **prompt)
            lo, io = engine.decode(emb_t, **prompt)
            assert lo.shape == lt.shape and torch.allclose(lo, lt, atol=atol) and torch.allclose(io, it, atol=atol)
            mt, _ = model.decode(emb_t, mask_input=lt, **prompt)          # the previous logits as mask prompt
            mo, _ = engine.decode(emb_t, mask_input=lt, **prompt)
            assert torch.allclose(mo, mt, atol=atol) and not torch.allclose(mo, lo, atol=atol)


def test_fp32_graphs_equal_torch_for_boxes_clicks_and_mask_prompts(small):
    model, folder, _ = small
    engine = O.OnnxSegmenter(folder)
    _check_same(model, engine, torch.rand(2, 3, 32, 32))                 # a batch of two (look-ahead embedding)


def test_manifest_names_the_files_with_their_sha256_and_the_preprocessing(small):
    _, folder, manifest = small
    assert json.loads((folder / O.MANIFEST).read_text()) == manifest
    assert set(manifest["files"]) == {O.ENCODER_FILE, O.DECODER_FILE, O.INT8_ENCODER_FILE}
    for name, facts in manifest["files"].items():
        assert facts["sha256"] == hashlib.sha256((folder / name).read_bytes()).hexdigest()
    assert manifest["image_encoder"]["inputs"]["image"] == ["batch", 3, 32, 32]
    assert manifest["prompt_mask_decoder"]["outputs"]["mask_logits"] == [1, 1, 32, 32]
    assert any("min-max" in s for s in manifest["preprocessing"]["steps"])


def test_propagation_through_onnx_equals_torch_and_reuses_embeddings(small):
    model, folder, _ = small
    engine = O.OnnxSegmenter(folder)
    rng = np.random.default_rng(0)
    vol = rng.random((40, 36, 6)).astype(np.float32)
    vol[8:28, 10:30, :] += 2.0
    a = P.propagate(model, vol, 3, [8, 10, 27, 29], min_score=-1.0)
    b = P.propagate(engine, vol, 3, [8, 10, 27, 29], min_score=-1.0)
    assert a.mask.any() and np.array_equal(a.mask, b.mask) and a.stopped == b.stopped
    assert all(abs(a.scores[k] - b.scores[k]) < 1e-4 for k in a.scores)
    slices = P.ModelSlices(engine, vol)
    slices.predict(2, [8, 10, 27, 29])
    slices.predict(2, [9, 11, 26, 28], [[15.0, 20.0]], [0])           # a second prompt: no new embedding
    assert slices.cache.computed == 1


def test_int8_encoder_runs_and_stays_close(small):
    model, folder, _ = small
    engine = O.OnnxSegmenter(folder, int8=True)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        e8, e32 = engine.embed(x), model.embed(x)
    assert e8.shape == e32.shape and not torch.equal(e8, e32)
    assert float((e8 - e32).norm() / e32.norm()) < 0.5              # an untrained model; LiteMedSAM: the benchmark


def test_engine_choice_and_refusals(small):
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert O.resolve_engine("auto", cpu, "fp32")[0] == "onnx"
    assert O.resolve_engine("auto", cpu, "bf16")[0] == "torch"
    assert O.resolve_engine("auto", gpu, "fp32")[0] == "torch"
    assert O.resolve_engine("auto", cpu, "fp32", text=True)[0] == "torch"
    assert O.resolve_engine("torch", cpu, "fp32")[0] == "torch"
    with pytest.raises(ConfigError, match="bf16"):
        O.resolve_engine("onnx", cpu, "bf16")
    with pytest.raises(ConfigError, match="engine"):
        O.resolve_engine("tensorrt", cpu, "fp32")
    with pytest.raises(ConfigError, match="text"):
        O.OnnxSegmenter(small[1]).decode(torch.zeros(1, 32, 4, 4), text=torch.zeros(1, 8))


def test_cached_engine_exports_once_and_keeps_it(small, tmp_path):
    model = small[0]
    root = O.cached_engine(model, "ab" * 32, home=tmp_path)
    stamp = (root / O.ENCODER_FILE).stat().st_mtime_ns
    assert O.cached_engine(model, "ab" * 32, home=tmp_path) == root
    assert (root / O.ENCODER_FILE).stat().st_mtime_ns == stamp
    assert not [p for p in root.parent.iterdir() if "partial" in p.name]


@pytest.mark.slow
def test_litemedsam_onnx_equals_torch_and_zoo_export_cli(tmp_path):
    from mmfm.cli.main import main

    out = tmp_path / "litemedsam-onnx"
    foreign = tmp_path / "theirs"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not mmfm's")
    assert main(["zoo", "export", "litemedsam", "--format", "onnx", str(foreign)]) == 2
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    assert main(["zoo", "export", "litemedsam", "--format", "onnx", str(out)]) == 0
    manifest = json.loads((out / O.MANIFEST).read_text())
    assert manifest["model"]["name"] == "litemedsam" and len(manifest["model"]["sha256"]) == 64
    # an earlier export is replaced only with --overwrite
    assert main(["zoo", "export", "litemedsam", "--format", "onnx", str(out)]) == 2
    model = P.for_inference(P.litemedsam_model())
    _check_same(model, O.OnnxSegmenter(out), torch.rand(1, 3, 256, 256), atol=5e-4)
