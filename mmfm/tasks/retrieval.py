"""Image-to-text and text-to-image retrieval with an aligned model, and report section matching with a text tower.

Tasks embed; the ranking metrics live in :mod:`mmfm.evaluation.metrics.retrieval`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from mmfm.encoders.dual import DualEncoder
from mmfm.encoders.text import TextEncoder
from mmfm.evaluation.metrics.retrieval import relevance_from_texts, retrieval_metrics


@torch.no_grad()
def embed_batches(fn: Callable[[Sequence], torch.Tensor], items: Sequence, batch_size: int = 64) -> torch.Tensor:
    return torch.cat([fn(items[i:i + batch_size]).float().cpu() for i in range(0, len(items), batch_size)])


@torch.no_grad()
def embed_texts(encoder: TextEncoder, texts: Sequence[str], max_length: int = 128,
                batch_size: int = 64) -> torch.Tensor:
    """(N, D) L2-normalised pooled embeddings of a text tower."""
    encoder.eval()
    pooled = embed_batches(lambda t: encoder.encode(list(t), max_length)["pooled"], texts, batch_size)
    return F.normalize(pooled, dim=-1)


@torch.no_grad()
def image_text_retrieval(model: DualEncoder, images: torch.Tensor, texts: Sequence[str],
                         ks: tuple[int, ...] = (1, 5, 10), batch_size: int = 64) -> dict[str, float]:
    """Pairs (images[i], texts[i]). Returns ``i2t_R@K`` and ``t2i_R@K`` (identical texts count as relevant)."""
    model.eval()
    v = embed_batches(model.encode_image, images, batch_size)           # (N, E)
    t = embed_batches(lambda x: model.encode_text(list(x)), list(texts), batch_size)
    rel = relevance_from_texts(list(texts), list(texts))                # (N, N) image i <-> text j
    sim = v @ t.T
    i2t = retrieval_metrics(sim, rel, ks)
    t2i = retrieval_metrics(sim.T, rel.T, ks)
    return {**{f"i2t_{k}": x for k, x in i2t.items()}, **{f"t2i_{k}": x for k, x in t2i.items()}}


@torch.no_grad()
def section_matching(encoder: TextEncoder, findings: Sequence[str], impressions: Sequence[str],
                     ks: tuple[int, ...] = (1, 5, 10), max_length: int = 128) -> dict[str, float]:
    """Radiology Section Matching: for each report's findings, rank all impressions of the split; identical
    impressions count as relevant."""
    q = embed_texts(encoder, findings, max_length)
    g = embed_texts(encoder, impressions, max_length)
    return retrieval_metrics(q @ g.T, relevance_from_texts(list(impressions), list(impressions)), ks)
