"""Token masking for masked language modelling (BERT's 80/10/10 rule) and sentence shuffling within a section.

References: Devlin et al., BERT, 2019; sentence shuffling of report sections as in the review's [138].
"""

from __future__ import annotations

import random
import re
import zlib

import torch

_SENT = re.compile(r"(?<=[.;!?])\s+")


def mask_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor, special_ids: tuple[int, ...], mask_id: int,
                vocab_size: int, prob: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L) ids -> (masked ids, labels) with labels = -100 where nothing is predicted. Of the chosen word
    pieces 80% become [MASK], 10% a random piece, 10% stay. At least one piece per text is chosen."""
    can = attention_mask.bool()
    for sid in special_ids:
        can &= input_ids != sid
    chosen = (torch.rand(input_ids.shape, device=input_ids.device) < prob) & can      # (B, L)
    none = ~chosen.any(1) & can.any(1)
    if none.any():                                        # short texts: mask one random word piece each
        pick = torch.multinomial(can[none].float(), 1).squeeze(1)
        chosen[none.nonzero().squeeze(1), pick] = True
    labels = input_ids.masked_fill(~chosen, -100)
    r = torch.rand(input_ids.shape, device=input_ids.device)
    masked = input_ids.clone()
    masked[chosen & (r < 0.8)] = mask_id
    rand = chosen & (r >= 0.8) & (r < 0.9)
    masked[rand] = torch.randint(vocab_size, (int(rand.sum()),), device=input_ids.device)
    return masked, labels


def shuffle_sentences(text: str, rng: random.Random) -> str:
    """The sentences of one section in a random order (the section's meaning does not depend on it)."""
    parts = [p for p in _SENT.split(text.strip()) if p]
    rng.shuffle(parts)
    return " ".join(parts)


def text_groups(texts: list[str]) -> torch.Tensor:
    """(B,) int64 ids equal for texts that are the same after lower-casing and whitespace folding (stable across
    processes, unlike ``hash``)."""
    return torch.tensor([zlib.crc32(" ".join(t.lower().split()).encode()) for t in texts], dtype=torch.int64)
