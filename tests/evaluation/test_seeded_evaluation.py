"""Label-efficiency evaluation whose spread covers pretraining and initialisation as well as label sampling, scored
on validation when a method is being chosen (the test split unread), and packaged encoders with options."""

from __future__ import annotations

import pytest
import torch

from mmfm.errors import ConfigError
from mmfm.workflows.config import DataConfig

DATA = dict(dataset="mini", set="patches2d", label="tissue")


def _spy_probe(ev, monkeypatch, seen):
    real = ev.linear_probe

    def spy(train, val, test, k, seed=0):
        seen.append((len(train[1]), len(val[1]), len(test[1])))
        return real(train, val, test, k, seed=seed, steps=10)

    monkeypatch.setattr(ev, "linear_probe", spy)


def test_scoring_on_validation_never_reads_test(mini_root, tmp_path, monkeypatch):
    import mmfm.workflows.evaluate as ev

    built, seen, real_split = [], [], ev.build_split
    monkeypatch.setattr(ev, "build_split", lambda data, split, task: built.append(split) or real_split(data, split,
                                                                                                          task))
    _spy_probe(ev, monkeypatch, seen)
    records = ev.evaluate_encoders(["random:resnet_tiny"], ["linear", "knn"], DataConfig(**DATA), [0.1], [0],
                                   tmp_path, max_per_split=100, score_split="val")
    assert "test" not in built and set(built) == {"train", "val"}
    assert {r.split for r in records} == {"val"}
    (_, n_head, n_scored), = seen
    n_val = len(ev._cap(real_split(DataConfig(**DATA), "val", "classification")[0], 100))
    assert n_head + n_scored == n_val and n_head < n_scored   # the head is chosen on part of val, scored on the rest
    assert "on the val split" in (tmp_path / "report.md").read_text()
    with pytest.raises(ConfigError):
        ev.evaluate_encoders(["random:resnet_tiny"], ["finetune"], DataConfig(**DATA), [0.1], [0], tmp_path / "f",
                             score_split="val")


def test_seeded_sources_give_one_encoder_per_seed(mini_root, tmp_path, monkeypatch):
    """``random:`` with seeded_init is a new network per seed; a ``{seed}`` source is a different run per seed;
    without either, one network serves every seed (the former behaviour)."""
    import mmfm.workflows.evaluate as ev

    loads, real_load = [], ev.load_encoder

    def spy(src):
        enc, spec = real_load(src)
        loads.append((src, float(sum(p.double().sum() for p in enc.parameters()))))
        return enc, spec

    monkeypatch.setattr(ev, "load_encoder", spy)
    _spy_probe(ev, monkeypatch, [])
    kw = dict(max_per_split=100, score_split="val")
    recs = ev.evaluate_encoders(["random:resnet_tiny"], ["linear"], DataConfig(**DATA), [0.1], [0, 1, 2],
                                tmp_path / "a", seeded_init=True, **kw)
    assert len(loads) == 3 and len({w for _, w in loads}) == 3
    assert sorted({r.seed for r in recs}) == [0, 1, 2]
    loads.clear()
    ev.evaluate_encoders(["random:resnet_tiny"], ["linear"], DataConfig(**DATA), [0.1], [0, 1, 2], tmp_path / "b",
                         **kw)
    assert len(loads) == 1
    named = []   # a {seed} source: each seed loads its own run (stood in for by a random network here)
    monkeypatch.setattr(ev, "load_encoder", lambda src: (named.append(src), real_load("random:resnet_tiny"))[1])
    recs = ev.evaluate_encoders([str(tmp_path / "run{seed}")], ["linear"], DataConfig(**DATA), [0.1], [4, 5],
                                tmp_path / "c", **kw)
    assert named == [str(tmp_path / "run4"), str(tmp_path / "run5")]
    assert sorted({r.seed for r in recs}) == [4, 5]


def test_packaged_encoder_options_and_litemedsam_on_a_smaller_grid():
    from mmfm.encoders.litemedsam import tinyvit_features
    from mmfm.workflows.pretrain import load_encoder

    enc, spec = load_encoder("litemedsam:input_size=64")
    assert spec["options"] == {"input_size": 64} and spec["method"] == "litemedsam-pretrained[input_size=64]"
    ref, _ = load_encoder("litemedsam")
    enc.eval(), ref.eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        out = enc(x)
        assert out["tokens"].shape == (2, 16 * 16, 256) and out["pooled"].shape == (2, 256)
        # the same weights: every parameter equal to the 256 x 256 encoder's
        assert all(torch.equal(a, b) for a, b in zip(enc.state_dict().values(), ref.state_dict().values()))
        # the grid-free forward is the package's forward at its own size
        big = torch.nn.functional.interpolate(x, size=(256, 256), mode="bilinear", align_corners=False)
        assert torch.equal(tinyvit_features(ref.net, big), ref.net(big))
    for bad in ("litemedsam:input_size=100", "litemedsam:depth=3", "litemedsam:input_size", "litemedsam:pretrained=0"):
        with pytest.raises(ConfigError):
            load_encoder(bad)
