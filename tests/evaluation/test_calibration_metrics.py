"""ECE, Brier and the reliability bins against naive loops and torchmetrics; temperature round trip."""

from __future__ import annotations

import pytest
import torch

from mmfm.evaluation.metrics.calibration import (
    CalibrationBins,
    brier_score,
    expected_calibration_error,
    probs_at_temperature,
)


def naive_ece(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        idx = [i for i in range(len(labels)) if lo < float(probs[i].max()) <= hi]
        if idx:
            conf = sum(float(probs[i].max()) for i in idx) / len(idx)
            acc = sum(int(probs[i].argmax()) == int(labels[i]) for i in idx) / len(idx)
            total += len(idx) / len(labels) * abs(acc - conf)
    return total


def test_ece_matches_naive_loop_and_torchmetrics():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(500, 4, generator=g), dim=1)
    labels = torch.randint(0, 4, (500,), generator=g)
    ece = expected_calibration_error(probs, labels)
    assert ece == pytest.approx(naive_ece(probs, labels), abs=1e-9)
    tm = pytest.importorskip("torchmetrics.functional.classification")
    ref = tm.multiclass_calibration_error(probs, labels, num_classes=4, n_bins=15, norm="l1")
    assert ece == pytest.approx(float(ref), abs=1e-5)


def test_streaming_bins_equal_one_shot():
    g = torch.Generator().manual_seed(1)
    probs = torch.softmax(torch.randn(300, 3, generator=g), dim=1)
    labels = torch.randint(0, 3, (300,), generator=g)
    bins = CalibrationBins()
    for i in range(0, 300, 70):
        bins.update(probs[i:i + 70], labels[i:i + 70])
    assert bins.ece() == pytest.approx(expected_calibration_error(probs, labels), abs=1e-12)
    rows = bins.table()
    assert sum(r["count"] for r in rows) == 300 and len(rows) == 15


def test_perfect_and_overconfident():
    labels = torch.tensor([0, 1, 0, 1])
    onehot = torch.nn.functional.one_hot(labels, 2).float()
    assert expected_calibration_error(onehot, labels) == 0.0 and brier_score(onehot, labels) == 0.0
    wrong = 1 - onehot                                   # confident and always wrong
    assert expected_calibration_error(wrong, labels) == pytest.approx(1.0)
    assert brier_score(wrong, labels) == pytest.approx(2.0)


def test_brier_matches_formula():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    labels = torch.tensor([0, 1])
    expect = ((0.3 ** 2 + 0.2 ** 2 + 0.1 ** 2) + (0.1 ** 2 + 0.9 ** 2 + 0.8 ** 2)) / 2
    assert brier_score(probs, labels) == pytest.approx(expect)


def test_probs_at_temperature_recovers_logits_scaling():
    z = torch.randn(10, 5, dtype=torch.float64)
    p_scaled = (z / 2.5).softmax(1)
    assert torch.allclose(probs_at_temperature(p_scaled, 1 / 2.5), z.softmax(1), atol=1e-10)
    assert torch.allclose(probs_at_temperature(z.softmax(1), 2.5), p_scaled, atol=1e-10)


def test_segmentation_evaluation_reports_pixel_ece():
    from torch import nn

    from mmfm.evaluation.evaluate import evaluate

    class Fixed(nn.Module):   # logits that are a function of the image: known softmax per pixel
        num_classes = 3

        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor([1.0, -0.5, 2.0]))

        def logits(self, x):
            return x * self.w.view(1, 3, 1, 1)

        def predict(self, x):
            return self.logits(x).argmax(1, keepdim=True)

    g = torch.Generator().manual_seed(0)
    items = [{"image": torch.randn(1, 8, 8, generator=g), "mask": torch.randint(0, 3, (1, 8, 8), generator=g)}
             for _ in range(4)]
    model = Fixed()
    got = evaluate(model, items, "segmentation", batch_size=2)["pixel_ece"]
    probs = torch.cat([model.logits(it["image"][None]).softmax(1).movedim(1, -1).reshape(-1, 3) for it in items])
    labels = torch.cat([it["mask"].reshape(-1) for it in items])
    assert got == pytest.approx(naive_ece(probs.detach(), labels), abs=1e-9)
