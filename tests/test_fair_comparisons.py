"""Fair comparisons in the doc tables (scripts/doc_tables.py): a best row is chosen on the validation split and
reported on test, each fine-tuning arm at its own best learning rate of one sweep, and arms that share seeds are
compared by their per-seed differences. Every expected number below is computed by hand."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def dt(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("doc_tables_fair", ROOT / "scripts" / "doc_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "RESULTS", tmp_path)
    return mod


def _rec(method: str, value: float, seed: int, split: str = "test", metric: str = "balanced_accuracy",
         task: str = "classification/linear", fraction: float = 0.1) -> dict:
    return {"task": task, "dataset": "mini/patches2d", "split": split, "method": method, "metric": metric,
            "value": value, "seed": seed, "label_fraction": fraction}


def test_paired_differences_by_hand(dt):
    recs = [_rec("a", v, s) for s, v in enumerate([0.6, 0.6, 0.8])] + \
           [_rec("b", v, s) for s, v in enumerate([0.4, 0.4, 0.45])] + [_rec("a", 0.9, 7)]   # seed 7: a only
    d = dt.paired_differences(recs, "a", "b")
    assert d == pytest.approx([0.2, 0.2, 0.35])          # seed 7 has no partner: left out
    # mean 0.25; deviations -0.05, -0.05, +0.10 -> sample sd sqrt(0.015 / 2) = 0.0866
    assert dt.diff_cell(d) == "+0.250 ± 0.087 (n=3)"
    assert dt.diff_cell([-0.00001, 0.00001]) == "+0.000 ± 0.000 (n=2)"   # never "-0.000"
    assert dt.diff_cell([]) == "-"


def test_best_row_is_chosen_on_validation_not_test(dt):
    """On validation moco gains most over its random baseline (+0.20, mae +0.15, simclr +0.10); on test simclr
    would look best. The line names moco and gives moco's TEST numbers, unpaired and paired."""
    val = {"resnet_small-random": 0.40, "resnet_small-moco": 0.60, "resnet_small-simclr": 0.50,
           "vit_mini-random": 0.20, "vit_mini-mae": 0.35}
    test = {"resnet_small-random": [0.50, 0.40, 0.45], "resnet_small-moco": [0.70, 0.60, 0.80],
            "resnet_small-simclr": [0.95, 0.95, 0.95], "vit_mini-random": [0.3] * 3, "vit_mini-mae": [0.3] * 3}
    recs = [_rec(m, v, s, "val") for m, v in val.items() for s in range(3)]
    recs += [_rec(m, v, s) for m, vs in test.items() for s, v in enumerate(vs)]
    (dt.RESULTS / "vfm.json").write_text(json.dumps(recs))
    line = dt.vfm_findings()
    assert "`resnet_small-moco` (+20.0 points over `resnet_small-random` on val)" in line
    # moco test 0.70 ± 0.10 vs random 0.45 ± 0.05, +25.0 points; per seed +0.20, +0.20, +0.35
    assert "on test 0.700 ± 0.100 against 0.450 ± 0.050 (+25.0 points, n = 3 and 3)" in line
    assert "paired by seed: +0.250 ± 0.087 (n=3)" in line and "simclr" not in line
    table = dt.label_efficiency()
    assert "| linear | resnet_small-moco | 0.600 ± 0.000 (n=3) | 0.700 ± 0.100 (n=3) |" in table   # val, test
    # a results file without validation records names no best encoder: every one, paired, none chosen on test
    (dt.RESULTS / "vfm.json").write_text(json.dumps([r for r in recs if r["split"] == "test"]))
    out = dt.vfm_findings()
    assert "no validation records, so no best encoder is named" in out and "chosen on validation" not in out
    assert "| resnet_small-moco − resnet_small-random | +0.250 ± 0.087 (n=3) |" in out
    assert "| resnet_small-simclr − resnet_small-random | +0.500 ± 0.050 (n=3) |" in out


def test_each_arm_at_its_own_learning_rate_chosen_on_validation(dt):
    """Full fine-tuning is best on val at 0.001 (0.6 vs 0.5 over the sweep seeds 0 and 1), LoRA at 0.01 (0.7 vs
    0.4); test would have chosen 0.01 for full (0.99), and so would a mean over every seed (seed 2 ran 0.01 only).
    The table reports full at 0.001 and LoRA at 0.01, and LoRA - full per seed."""
    val = {("full", 0.001): 0.6, ("full", 0.01): 0.5, ("lora", 0.001): 0.4, ("lora", 0.01): 0.7}
    test = {("full", 0.001): [0.50, 0.60], ("full", 0.01): [0.99, 0.99], ("lora", 0.001): [0.1, 0.1],
            ("lora", 0.01): [0.70, 0.90]}
    name = lambda arm, lr: f"vit_mini-mae-{arm}[lr={lr:g}]"  # noqa: E731
    recs = [_rec(name(*k), v, s, "val", task="classification") for k, v in val.items() for s in (0, 1)]
    recs += [_rec(name(*k), v, s, task="classification") for k, vs in test.items() for s, v in enumerate(vs)]
    recs += [_rec(name("lora", lr), 0.05, s, "train", "trainable_fraction", "classification")
             for lr in (0.001, 0.01) for s in (0, 1)]
    # seed 2 ran full fine-tuning at 0.01 only (not a sweep seed): it must not move the choice to 0.01
    recs += [_rec(name("full", 0.01), 0.99, 2, split, task="classification") for split in ("val", "test")]
    (dt.RESULTS / "adapt_peft.json").write_text(json.dumps(recs))
    out = dt.adapt_peft()
    assert "| vit_mini-mae-full | 0.6000 ± 0.0000 (n=2) | 0.5000 ± 0.0000 (n=2) |" in out        # the sweep, val
    assert "| vit_mini-mae-full (lr 0.001) | 0.5500 ± 0.0707 (n=2) |" in out                     # test at val's lr
    assert "| vit_mini-mae-lora (lr 0.01) | 0.8000 ± 0.1414 (n=2) | - | 0.0500 ± 0.0000 (n=2) |" in out
    assert "0.9900" not in out
    # LoRA - full per seed: 0.70 - 0.50, 0.90 - 0.60 -> +0.25 ± 0.0707
    assert "| vit_mini-mae-lora (lr 0.01) − vit_mini-mae-full (lr 0.001) | +0.2500 ± 0.0707 (n=2) |" in out


def test_federated_paired_differences_beside_the_means(dt):
    recs = [{**_rec(m, v, s, task="classification", fraction=1.0), "dataset": d}
            for m, vs in (("centralised", [0.50, 0.40, 0.60]), ("federated-iid-fedavg", [0.52, 0.43, 0.58]))
            for s, v in enumerate(vs) for d in ("mini/patches2d", "mini/patches2d@CT", "mini/patches2d@MR")]
    (dt.RESULTS / "adapt_federated.json").write_text(json.dumps(recs))
    out = dt.adapt_federated()
    assert "| federated-iid-fedavg | 0.510 ± 0.075 (n=3) |" in out                 # unpaired mean ± sd
    # per seed +0.02, +0.03, -0.02: mean +0.010, sd 0.0265
    assert "| federated-iid-fedavg − centralised | +0.010 ± 0.026 (n=3) |" in out
