"""Metrics against hand-computed values, and results/report writing."""

from __future__ import annotations

import json

import pytest
import torch

from mmfm.evaluation.metrics import classification_metrics, dice_per_class
from mmfm.evaluation.report import write_report
from mmfm.evaluation.results import ResultRecord, read_results, write_results


def test_classification_metrics_by_hand():
    labels = torch.tensor([0, 0, 0, 0, 1, 1])
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.35, 0.65], [0.2, 0.8]])
    m = classification_metrics(probs, labels)
    assert m["accuracy"] == pytest.approx(5 / 6)
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 1) / 2)
    # AUROC: positives score 0.65, 0.8; negatives 0.1, 0.2, 0.4, 0.7 -> pairs won: 3 + 4 = 7 of 8
    assert m["auroc"] == pytest.approx(7 / 8)


def test_absent_classes_left_out():
    labels = torch.tensor([0, 0, 2, 2])
    probs = torch.tensor([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8], [0.1, 0.1, 0.8]])
    m = classification_metrics(probs, labels)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1) / 2) and m["classes_evaluated"] == 2
    assert m["auroc"] == pytest.approx(1.0)


def test_dice_by_hand_with_empty_ground_truth():
    target = torch.zeros(2, 1, 4, 4, dtype=torch.long)
    pred = torch.zeros_like(target)
    target[0, 0, :2, :2] = 1          # 4 pixels of class 1 in image 0
    pred[0, 0, :2, :1] = 1            # 2 of them predicted
    pred[1, 0, 0, 0] = 1              # a false positive where class 1 is absent: ignored by policy
    d = dice_per_class(pred, target, 3)
    assert d[1] == pytest.approx(2 * 2 / (2 + 4))
    assert d[2] != d[2]               # class 2 is absent everywhere: NaN


def test_results_roundtrip_and_report(tmp_path):
    recs = [ResultRecord("classification", "mini/patches2d", "test", "resnet", "accuracy", 0.5, 0, 0.1)]
    write_results(tmp_path / "results.json", recs)
    assert read_results(tmp_path / "results.json") == recs
    keys = set(json.loads((tmp_path / "results.json").read_text())[0])
    assert keys == {"task", "dataset", "split", "method", "metric", "value", "seed", "label_fraction", "provenance"}
    write_report(tmp_path / "report.md", "t", recs, {}, ["note"])
    assert "| classification | mini/patches2d | test | resnet | accuracy | 0.5000 | 0 | 0.1 |" in \
        (tmp_path / "report.md").read_text()
