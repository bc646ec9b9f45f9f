"""Baselines are what their names say: random is random, random networks get fitted BatchNorm statistics like
pretrained ones, the probe's head is chosen within the label budget, and section matching has a no-model floor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmfm.workflows.config import DataConfig


def test_random_litemedsam_is_random():
    from mmfm.encoders import build_encoder
    from mmfm.workflows.pretrain import load_encoder

    torch.manual_seed(0)
    rand, spec = load_encoder("random:litemedsam")
    pre = build_encoder("litemedsam", spatial_dims=2, in_channels=1)
    assert spec["options"] == {"pretrained": False} and spec["method"] == "litemedsam-random"
    same = [k for k, v in rand.state_dict().items()
            if v.dtype.is_floating_point and v.numel() > 16 and torch.equal(v, pre.state_dict()[k])]
    assert not same, same[:5]


def test_random_merlin_is_random():
    from mmfm.workflows.pretrain import load_encoder

    # a random Merlin needs the architecture package only (make setup installs it; the weights stay optional)
    _, spec = load_encoder("random:merlin:3D")
    assert spec["options"] == {"pretrained": False}


def test_refit_batchnorm_against_the_naive_statistics():
    from mmfm.evaluation.protocols import refit_batchnorm

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    images = torch.randn(48, 1, 8, 8) * 3 + 2  # equal batches: the average of batch means is the mean
    assert refit_batchnorm(net, images, batch_size=16)
    with torch.no_grad():
        act = net[0](images).transpose(0, 1).reshape(4, -1)     # every activation the BN layer saw
    bn = net[1]
    assert torch.allclose(bn.running_mean, act.mean(1), atol=1e-4)
    assert torch.allclose(bn.running_var, act.var(1), rtol=1e-2)  # mean of per-batch unbiased variances
    assert not refit_batchnorm(torch.nn.Linear(2, 2), images)  # nothing to refit


def test_random_baseline_gets_bn_refit_and_probe_head_within_budget(mini_root, tmp_path, monkeypatch, caplog):
    """At 1% of the labels, the probe's head is chosen on 1% of the validation labels (stratified), not on all."""
    import mmfm.workflows.evaluate as ev

    seen = []
    real = ev.linear_probe

    def spy(train, val, test, k, seed=0):
        seen.append((len(train[1]), len(val[1]), len(test[1])))
        return real(train, val, test, k, seed=seed, steps=20)

    monkeypatch.setattr(ev, "linear_probe", spy)
    data = DataConfig(dataset="mini", set="patches2d", label="tissue")
    with caplog.at_level("INFO", logger="mmfm"):
        ev.evaluate_encoders(["random:resnet_small"], ["linear"], data, [0.01, 1.0], [0], tmp_path, max_per_split=600)
    assert "BatchNorm statistics recomputed" in caplog.text
    (tr1, va1, te1), (tr100, va100, te100) = seen
    assert te1 == te100 and va1 < 0.05 * va100 and tr1 < 0.05 * tr100
    assert va1 >= 5  # at least one per class


def test_section_matching_frequency_baseline_against_counting():
    from mmfm.evaluation.protocols.retrieval import frequency_baseline

    rng = np.random.default_rng(0)
    pool = ["No acute disease.", "Normal chest.", "Cardiomegaly.", "Small effusion.", "No active disease."]
    imps = [pool[i] for i in rng.choice(5, size=200, p=[0.4, 0.25, 0.15, 0.1, 0.1])]
    out = frequency_baseline(["f"] * 200, imps)
    top = max(set(imps), key=imps.count)
    assert out["R@1"] == pytest.approx(imps.count(top) / 200)
    order = sorted(set(imps), key=lambda t: -imps.count(t))
    # a query's first relevant item sits after every copy of each more frequent impression
    ranks = np.array([1 + sum(imps.count(t2) for t2 in order[:order.index(t)]) for t in imps])
    for k in (1, 5, 10):
        assert out[f"R@{k}"] == pytest.approx(float((ranks <= k).mean()))
    assert out["median_rank"] == pytest.approx(float(np.median(ranks)))
