"""Report-side proxy tasks on text alone (the review's Section IV-B.2b): masked language modelling, sentence
shuffling within sections, and Radiology Section Matching.

* ``mlm``  batches carry ``text``; 15% of word pieces are masked (BERT's rule) and predicted.
* ``rsm``  batches carry ``findings`` and ``impression`` of the same reports; the text tower's pooled
  embeddings of the two sections are aligned with eq. (6) (one shared tower, learnable temperature), so the
  tower learns which impression goes with which findings. Identical impressions (common: "No acute
  cardiopulmonary abnormality.") are treated as positives, not negatives. ``shuffle`` shuffles the sentences of
  each section; ``mlm_weight`` adds MLM on both sections.
The trained ``encoder`` is the text tower (``inputs = ("text",)``).
"""

from __future__ import annotations

import math
import random
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmfm.encoders.text import TextEncoder
from mmfm.errors import ConfigError
from mmfm.objectives.base import OBJECTIVES, Objective
from mmfm.objectives.losses import ClipLoss
from mmfm.objectives.text_masking import mask_tokens, shuffle_sentences, text_groups


class MaskedLanguageModel(Objective):
    inputs = ("text",)

    def __init__(self, encoder: TextEncoder, mask_prob: float = 0.15, max_length: int = 128,
                 shuffle: bool = False) -> None:
        super().__init__()
        self.encoder, self.mask_prob, self.max_length, self.shuffle = encoder, mask_prob, max_length, shuffle
        d = encoder.out_dim
        self.head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d), nn.Linear(d, encoder.vocab_size))

    def mlm_loss(self, texts: list[str], condition: torch.Tensor | None = None) -> torch.Tensor:
        """Cross-entropy on the masked pieces; ``condition`` (B, D) is added to every token's features first
        (MReM conditions the restoration on the image)."""
        te = self.encoder
        tok = te.tokenize(texts, self.max_length)
        ids, labels = mask_tokens(tok["input_ids"], tok["attention_mask"], te.special_ids, te.mask_id,
                                  te.vocab_size, self.mask_prob)
        h = te(ids, tok["attention_mask"])["tokens"]                          # (B, L, D)
        if condition is not None:
            h = h + condition[:, None]
        chosen = labels != -100                                               # predict masked pieces only
        logits = self.head(h[chosen])                                         # (M, V)
        return F.cross_entropy(logits.float(), labels[chosen])

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        texts = _shuffled(batch["text"]) if self.shuffle else list(batch["text"])
        return self.total({"mlm_loss": self.mlm_loss(texts)})


class SectionMatching(Objective):
    inputs = ("text",)

    def __init__(self, encoder: TextEncoder, shuffle: bool = True, mlm_weight: float = 0.0, max_length: int = 128,
                 temperature: float = 0.05, mask_prob: float = 0.15) -> None:
        super().__init__()
        self.encoder, self.shuffle, self.mlm_weight, self.max_length = encoder, shuffle, mlm_weight, max_length
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / temperature)))
        self.loss = ClipLoss()
        self.mlm = MaskedLanguageModel(encoder, mask_prob, max_length) if mlm_weight > 0 else None

    def embed(self, texts: list[str]) -> torch.Tensor:
        return self.encoder.encode(texts, self.max_length)["pooled"]          # (B, D)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        if "findings" not in batch or "impression" not in batch:
            raise ConfigError("section matching needs 'findings' and 'impression' in each batch",
                              "pretrain on reports (data.set=reports)")
        f, i = list(batch["findings"]), list(batch["impression"])
        if self.shuffle:
            f, i = _shuffled(f), _shuffled(i)
        groups = text_groups(list(batch["impression"])).to(self.logit_scale.device)
        terms = {"rsm_loss": self.loss(self.embed(f), self.embed(i), self.logit_scale, groups=groups)}
        if self.mlm is not None:
            terms["mlm_loss"] = self.mlm_weight * self.mlm.mlm_loss(f + i)
        return self.total(terms)


def _shuffled(texts: Any) -> list[str]:
    rng = random.Random(int(torch.randint(0, 2**31 - 1, (1,))))             # from the (saved) global RNG
    return [shuffle_sentences(t, rng) for t in texts]


OBJECTIVES.register("mlm")(MaskedLanguageModel)
OBJECTIVES.register("rsm")(SectionMatching)
