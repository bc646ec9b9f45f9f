"""Calibration: expected calibration error (ECE), Brier score and the reliability diagram's bins.

Policy (declared, as every ECE depends on it): **top-label** ECE with **15 equal-width confidence bins** on
(0, 1] (bin b holds confidences in ((b-1)/15, b/15]); ECE = sum_b (n_b / N) |accuracy_b - confidence_b|, the
definition of Guo et al. (2017) and of torchmetrics' ``multiclass_calibration_error(norm="l1")``, which a test
checks this against. Brier score: mean over samples of sum_k (p_k - y_k)^2 (0 best, 2 worst; multiclass form of
Brier 1950). Pixel-wise ECE for segmentation: every voxel is one prediction (its top class and its softmax
probability).

Written here instead of calling torchmetrics because segmentation feeds millions of voxels per volume:
:class:`CalibrationBins` keeps three numbers per bin (streaming), where torchmetrics' metric keeps every
confidence until it computes.

Reference: Guo et al., On Calibration of Modern Neural Networks, ICML 2017.
"""

from __future__ import annotations

import torch

N_BINS = 15


class CalibrationBins:
    """Streaming reliability bins: ``update(probs (N, K), labels (N,))`` any number of times, then ``ece()``,
    ``table()`` (per bin: lower, upper, count, mean confidence, accuracy)."""

    def __init__(self, n_bins: int = N_BINS) -> None:
        self.n_bins = n_bins
        self.count = torch.zeros(n_bins, dtype=torch.float64)
        self.conf_sum = torch.zeros(n_bins, dtype=torch.float64)
        self.correct_sum = torch.zeros(n_bins, dtype=torch.float64)

    def update(self, probs: torch.Tensor, labels: torch.Tensor) -> None:
        probs, labels = probs.detach().double().cpu(), labels.detach().long().cpu().reshape(-1)
        conf, pred = probs.max(dim=1)                                                     # (N,), (N,)
        b = (torch.ceil(conf * self.n_bins).long() - 1).clamp(0, self.n_bins - 1)         # bin of each sample
        self.count += torch.bincount(b, minlength=self.n_bins).double()
        self.conf_sum += torch.bincount(b, weights=conf, minlength=self.n_bins)
        self.correct_sum += torch.bincount(b, weights=(pred == labels).double(), minlength=self.n_bins)

    def ece(self) -> float:
        n = float(self.count.sum())
        if n == 0:
            return float("nan")
        return float((self.conf_sum - self.correct_sum).abs().sum() / n)

    def table(self) -> list[dict[str, float]]:
        rows = []
        for b in range(self.n_bins):
            c = float(self.count[b])
            rows.append({"lower": b / self.n_bins, "upper": (b + 1) / self.n_bins, "count": c,
                         "confidence": float(self.conf_sum[b]) / c if c else float("nan"),
                         "accuracy": float(self.correct_sum[b]) / c if c else float("nan")})
        return rows


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = N_BINS) -> float:
    """Top-label ECE of class probabilities ``probs`` (N, K) against integer ``labels`` (N,)."""
    bins = CalibrationBins(n_bins)
    bins.update(probs, labels)
    return bins.ece()


def brier_score(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean squared distance between ``probs`` (N, K) and the one-hot labels (N,), summed over classes."""
    onehot = torch.nn.functional.one_hot(labels.long().cpu(), probs.shape[1]).double()
    return float(((probs.double().cpu() - onehot) ** 2).sum(dim=1).mean())


def probs_at_temperature(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """The probabilities a model gives with its logits divided by ``temperature`` instead, from its probabilities
    alone: log p = z/T0 - c, so softmax(T0 log p / T) = softmax(z/T). Used to score a temperature-scaled model
    before scaling (``temperature`` = 1 / the fitted T gives back the raw model)."""
    return torch.softmax(probs.double().clamp_min(1e-300).log() / temperature, dim=1).to(probs.dtype)
