"""Protocols: the linear probe and k-NN on features with a known answer; stratified label fractions."""

from __future__ import annotations

import numpy as np
import torch

from mmfm.evaluation.protocols import knn_predict, linear_probe
from mmfm.evaluation.results import ResultRecord
from mmfm.workflows.evaluate import summarise
from mmfm.workflows.supervised import label_subset


def _clusters(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    centres = torch.tensor([[4.0, 0, 0, 0], [0, 4.0, 0, 0], [0, 0, 4.0, 0]])
    return centres[y] + torch.randn(n, 4, generator=g), y


def test_linear_probe_separates_clusters():
    out = linear_probe(_clusters(90, 0), _clusters(30, 1), _clusters(60, 2), num_classes=3)
    assert out["balanced_accuracy"] > 0.95 and out["auroc"] > 0.99 and out["lr"] in (1e-3, 1e-2, 1e-1)


def test_linear_probe_scores_another_set_with_the_same_head():
    """``also``: a second labelled set (validation beside test) scored by the head chosen once."""
    g = torch.Generator().manual_seed(0)
    train, val, test = _clusters(60, 0), _clusters(30, 1), _clusters(90, 2)
    other = (_clusters(45, 3)[0] + 3 * torch.randn(45, 4, generator=g), _clusters(45, 3)[1])   # harder: not all 1.0
    alone = linear_probe(train, val, other, 3, steps=50)
    both = linear_probe(train, val, test, 3, steps=50, also={"val": other})
    assert (both["lr"], both["wd"]) == (alone["lr"], alone["wd"]) and alone["balanced_accuracy"] < 1.0
    for metric in ("balanced_accuracy", "accuracy", "auroc"):
        assert both[f"val/{metric}"] == alone[metric]
    assert both["balanced_accuracy"] == linear_probe(train, val, test, 3, steps=50)["balanced_accuracy"]


def test_linear_probe_at_chance_on_noise():
    g = torch.Generator().manual_seed(0)
    noise = lambda n: (torch.randn(n, 8, generator=g), torch.arange(n) % 2)  # noqa: E731
    assert linear_probe(noise(100), noise(50), noise(400), num_classes=2)["balanced_accuracy"] < 0.65


def test_knn_by_hand():
    train = (torch.tensor([[1.0, 0], [0.9, 0.1], [0, 1.0]]), torch.tensor([0, 0, 1]))
    p = knn_predict(train, torch.tensor([[1.0, 0.05], [0.0, 1.0]]), num_classes=2, k=1)
    assert p.argmax(1).tolist() == [0, 1] and torch.allclose(p.sum(1), torch.ones(2))


def test_label_subset_is_stratified_and_seeded():
    labels = np.array([0] * 90 + [1] * 9 + [2] * 1)
    idx = label_subset(labels, 0.1, seed=0)
    assert sorted(np.unique(labels[idx])) == [0, 1, 2] and len(idx) == 9 + 1 + 1
    assert np.array_equal(idx, label_subset(labels, 0.1, seed=0))
    assert not np.array_equal(idx, label_subset(labels, 0.1, seed=1))


def test_summary_mean_and_sd():
    recs = [ResultRecord("t", "d", "test", "m", "acc", v, s, 0.1) for s, v in enumerate([0.5, 0.7, 0.9])]
    (row,) = summarise(recs)
    assert abs(row["mean"] - 0.7) < 1e-9 and abs(row["std"] - 0.2) < 1e-9 and row["n_seeds"] == 3
