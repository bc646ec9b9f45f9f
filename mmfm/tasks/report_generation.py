"""Report generation: an image encoder with an autoregressive text decoder that cross-attends to its tokens.

    forward(batch{"image": (B, C, *s), "text": B strings}) -> {"loss", "lm_loss"}
    generate(images) -> list of reports (greedy)
Works for 2D and 3D images (the decoder sees the encoder's token sequence either way). The baselines a model
has to beat: :func:`majority_report` and :func:`nearest_neighbour_reports`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmfm.encoders import Encoder
from mmfm.tasks import TASKS
from mmfm.tasks.text_decoder import TextDecoder, Vocabulary


class ReportGenerator(nn.Module):
    def __init__(self, encoder: Encoder, vocab: Vocabulary, dim: int = 128, depth: int = 2, heads: int = 4,
                 max_len: int = 64, freeze_encoder: bool = False) -> None:
        super().__init__()
        self.encoder, self.vocab, self.max_len = encoder, vocab, max_len
        self.decoder = TextDecoder(len(vocab), encoder.out_dim, dim, depth, heads, max_len)
        if freeze_encoder:
            self.encoder.requires_grad_(False)

    def memory(self, image: torch.Tensor) -> torch.Tensor:
        f = self.encoder(image)
        return torch.cat([f["pooled"][:, None], f["tokens"]], dim=1)          # (B, 1 + N, D)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        ids = self.vocab.encode(list(batch["text"]), self.max_len).to(batch["image"].device)
        loss = self.decoder.loss(self.memory(batch["image"]), ids)
        return {"loss": loss, "lm_loss": loss}

    @torch.no_grad()
    def generate(self, image: torch.Tensor) -> list[str]:
        ids = self.decoder.generate(self.memory(image), self.max_len)
        return [self.vocab.decode(r[1:]) for r in ids.cpu()]


@TASKS.register("report_generation")
def report_generation(encoder: Encoder, vocab: Vocabulary, dim: int = 128, depth: int = 2, heads: int = 4,
                      max_len: int = 64, freeze_encoder: bool = False) -> ReportGenerator:
    return ReportGenerator(encoder, vocab, dim, depth, heads, max_len, freeze_encoder)


# -- baselines a generated report has to beat (no decoder) -------------------------------------------------------
def majority_report(train_texts: Sequence[str], n: int) -> list[str]:
    """The most frequent training report for every image (ties: the first in sorted order). On texts generated
    from labels this is the label-only caption template filled with the majority label."""
    counts = Counter(train_texts)
    best = max(sorted(counts), key=lambda t: counts[t])
    return [best] * n


def label_majority_reports(train_texts: Sequence[str], train_labels: Sequence[str], labels: Sequence[str]) -> list[str]:
    """For each image, the most frequent training report among the training images of its label (ties: the first
    in sorted order; a label unseen in training: the overall majority): a generator that knows the label perfectly
    and nothing else. On label-only captions it is perfect; on captions that say more, what a model scores above it
    comes from more than the label."""
    by_label: dict[str, list[str]] = {}
    for t, lab in zip(train_texts, train_labels):
        by_label.setdefault(lab, []).append(t)
    fallback = majority_report(train_texts, 1)[0]
    return [majority_report(by_label[lab], 1)[0] if lab in by_label else fallback for lab in labels]


def nearest_neighbour_reports(query: torch.Tensor, train: torch.Tensor, train_texts: Sequence[str]) -> list[str]:
    """The training report of each query's nearest training image by cosine similarity of its features
    (the 1-NN retrieval baseline of report generation, e.g. Liu et al. 2019).

    Shape: query (Q, D), train (N, D) -> Q reports."""
    sim = F.normalize(query.flatten(1).float(), dim=1) @ F.normalize(train.flatten(1).float(), dim=1).T  # (Q, N)
    return [train_texts[i] for i in sim.argmax(1).tolist()]
