"""An autoregressive text decoder that cross-attends to image (and question) features, over a compact
vocabulary: the word pieces of a WordPiece tokenizer that occur in the training texts (a softmax over 30,522
pieces when a corpus uses 2,000 would waste most of the compute).

    Vocabulary.encode(texts) -> (B, L) ids: [BOS] pieces [EOS] [PAD]...
    TextDecoder(memory (B, M, D), ids (B, L)) -> logits (B, L, V)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmfm.errors import ConfigError

PAD, BOS, EOS, UNK = 0, 1, 2, 3


def default_tokenizer() -> Any:
    """The uncased WordPiece tokenizer shipped with the MiniLM package (offline)."""
    from transformers import AutoTokenizer

    from mmfm.encoders.text.hf import _offline, minilm_path

    _offline()
    return AutoTokenizer.from_pretrained(str(minilm_path()), local_files_only=True)


class Vocabulary:
    def __init__(self, pieces: Sequence[int], tokenizer: Any = None) -> None:
        self.tokenizer = tokenizer or default_tokenizer()
        self.pieces = [int(p) for p in pieces]                         # local id i + 4 <-> tokenizer id pieces[i]
        self.to_local = {p: i + 4 for i, p in enumerate(self.pieces)}

    @classmethod
    def build(cls, texts: Sequence[str], tokenizer: Any = None) -> Vocabulary:
        tok = tokenizer or default_tokenizer()
        ids = sorted({i for t in texts for i in tok(t, add_special_tokens=False)["input_ids"]})
        if not ids:
            raise ConfigError("no text to build a vocabulary from", "the training reports are all empty")
        return cls(ids, tok)

    def __len__(self) -> int:
        return len(self.pieces) + 4

    def encode(self, texts: Sequence[str], max_len: int = 64) -> torch.Tensor:
        rows = []
        for t in texts:
            ids = [self.to_local.get(i, UNK) for i in self.tokenizer(t, add_special_tokens=False)["input_ids"]]
            rows.append([BOS, *ids[:max_len - 2], EOS])
        out = torch.full((len(rows), max(len(r) for r in rows)), PAD, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, :len(r)] = torch.tensor(r)
        return out

    def decode(self, ids: Sequence[int]) -> str:
        pieces = []
        for i in ids:
            i = int(i)
            if i == EOS:
                break
            if i >= 4:
                pieces.append(self.pieces[i - 4])
        text = self.tokenizer.decode(pieces, skip_special_tokens=True).strip()
        return text.replace(" - ", "-")          # WordPiece decoding spaces out hyphens ("t1 - weighted")

    def to_dict(self) -> dict[str, Any]:
        return {"pieces": self.pieces, "tokenizer": "minilm"}


class TextDecoder(nn.Module):
    def __init__(self, vocab_size: int, memory_dim: int, dim: int = 128, depth: int = 2, heads: int = 4,
                 max_len: int = 64) -> None:
        super().__init__()
        self.max_len = max_len
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=PAD)
        self.pos = nn.Parameter(torch.randn(max_len, dim) * 0.02)
        self.memory_proj = nn.Linear(memory_dim, dim)
        layer = nn.TransformerDecoderLayer(dim, heads, 4 * dim, dropout=0.1, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerDecoder(layer, depth)
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, vocab_size)

    def forward(self, memory: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """memory: (B, M, Dm); ids: (B, L) -> logits (B, L, V)."""
        L = ids.shape[1]
        if L > self.max_len:
            raise ConfigError(f"text of {L} pieces is longer than the decoder's max_len {self.max_len}",
                              "raise task.max_len or shorten the reports")
        x = self.embed(ids) + self.pos[:L]                                       # (B, L, D)
        causal = torch.triu(torch.ones(L, L, dtype=torch.bool, device=ids.device), diagonal=1)  # True = hidden
        h = self.blocks(x, self.memory_proj(memory), tgt_mask=causal, tgt_key_padding_mask=ids == PAD)
        return self.out(self.norm(h))

    def loss(self, memory: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Teacher-forced cross-entropy of ids[:, 1:] given ids[:, :-1] (padding ignored)."""
        logits = self(memory, ids[:, :-1])
        return F.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten(), ignore_index=PAD)

    @torch.no_grad()
    def generate(self, memory: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
        """Greedy decoding: (B, L) ids starting with BOS, padded after EOS."""
        max_len = min(max_len or self.max_len, self.max_len)
        ids = torch.full((memory.shape[0], 1), BOS, dtype=torch.long, device=memory.device)
        done = torch.zeros(memory.shape[0], dtype=torch.bool, device=memory.device)
        for _ in range(max_len - 1):
            nxt = self(memory, ids)[:, -1].argmax(-1)                            # (B,)
            nxt = nxt.masked_fill(done, PAD)
            ids = torch.cat([ids, nxt[:, None]], dim=1)
            done |= nxt == EOS
            if done.all():
                break
        return ids

    @torch.no_grad()
    def score(self, memory: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Sum of log-probabilities of each candidate text for each memory: (B, K) for candidates (K, L)."""
        b, k = memory.shape[0], candidates.shape[0]
        mem = memory.repeat_interleave(k, dim=0)                                 # (B*K, M, D)
        ids = candidates.repeat(b, 1)                                            # (B*K, L)
        logp = F.log_softmax(self(mem, ids[:, :-1]).float(), dim=-1)
        tgt = ids[:, 1:]
        lp = logp.gather(-1, tgt[..., None]).squeeze(-1).masked_fill(tgt == PAD, 0.0)
        return lp.sum(1).view(b, k)
