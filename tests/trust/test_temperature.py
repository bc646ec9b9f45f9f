"""Temperature scaling: recovers a known temperature, lowers ECE of an overconfident model, keeps predictions;
a classification run stores it and load_trained restores it."""

from __future__ import annotations

import json

import pytest
import torch

from mmfm.evaluation.metrics.calibration import expected_calibration_error
from mmfm.trust.temperature import fit_temperature


def test_fit_recovers_the_generating_temperature():
    g = torch.Generator().manual_seed(0)
    z = 2 * torch.randn(4000, 5, generator=g)
    labels = torch.multinomial(z.softmax(1), 1, generator=g)[:, 0]   # labels drawn from softmax(z): T* = 1
    overconfident = 3.0 * z                                          # the model's logits: T* = 3
    t = fit_temperature(overconfident, labels)
    assert t == pytest.approx(3.0, rel=0.1)
    before = expected_calibration_error(overconfident.softmax(1), labels)
    after = expected_calibration_error((overconfident / t).softmax(1), labels)
    assert after < before / 3
    assert torch.equal((overconfident / t).argmax(1), overconfident.argmax(1))


def test_classification_run_stores_and_restores_temperature(tmp_path, mini_root):
    from mmfm.workflows.config import load_config
    from mmfm.workflows.supervised import load_trained, run_supervised

    out = tmp_path / "run"
    cfg = load_config(None, [f"out={out}", "encoder.name=resnet_tiny", "train.max_steps=40", "train.batch_size=32",
                             "train.progress=false", f"data.root={mini_root}"])
    records = run_supervised(cfg)
    info = json.loads((out / "calibration.json").read_text())
    assert info["split"] == "val" and info["temperature"] > 0 and info["nll_after"] <= info["nll_before"] + 1e-9
    got = {(r.split, r.metric): r.value for r in records}
    assert got[("test", "temperature")] == pytest.approx(info["temperature"])
    assert 0 <= got[("test", "ece")] <= 1 and ("test", "ece_unscaled") in got and ("test", "brier") in got
    assert (out / "plots" / "reliability.png").exists()
    model, _ = load_trained(out)
    assert float(model.temperature) == pytest.approx(info["temperature"])
