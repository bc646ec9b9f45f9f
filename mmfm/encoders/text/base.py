"""The text-encoder interface and registry.

A text encoder tokenises report text and returns features only:

    tokenize(texts: list[str], max_length) -> {"input_ids": (B, L), "attention_mask": (B, L)}
    forward(input_ids, attention_mask)     -> {"tokens": (B, L, D), "pooled": (B, D), "mask": (B, L) bool}

``pooled`` is the attention-masked mean of the last hidden states (sentence-transformers' pooling, which is how
the packaged MiniLM was trained). ``mask`` marks real word pieces (special tokens and padding excluded), which
local alignment (GLoRIA) attends over. Special token ids (``pad_id``, ``mask_id``) and ``vocab_size`` are
exposed for masked language modelling, which lives in the objectives, not here.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmfm.errors import SampleError
from mmfm.registry import Registry


class TextEncoder(nn.Module):
    out_dim: int
    vocab_size: int
    pad_id: int
    mask_id: int
    special_ids: tuple[int, ...]
    tokenizer: Any

    def tokenize(self, texts: list[str] | tuple[str, ...], max_length: int = 128) -> dict[str, torch.Tensor]:
        if isinstance(texts, str):
            texts = [texts]
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise SampleError(f"text {bad[0]} is {type(texts[bad[0]]).__name__}, not a string",
                              "pass report text as strings (use '' for a missing section)")
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        device = next(self.parameters()).device
        return {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}

    def backbone(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover - interface

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.backbone(input_ids, attention_mask)                    # (B, L, D)
        m = attention_mask.unsqueeze(-1).to(h.dtype)                     # (B, L, 1)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)                # (B, D)
        words = attention_mask.bool()
        for sid in self.special_ids:
            words &= input_ids != sid
        return {"tokens": h, "pooled": pooled, "mask": words}

    def encode(self, texts: list[str], max_length: int = 128) -> dict[str, torch.Tensor]:
        """Tokenise and encode in one call."""
        return self(**self.tokenize(texts, max_length))


TEXT_ENCODERS: Registry[TextEncoder] = Registry("text encoder")


def build_text_encoder(name: str, **kwargs: Any) -> TextEncoder:
    return TEXT_ENCODERS.build(name, **kwargs)
