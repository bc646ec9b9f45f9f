"""Retrieval as a task: embedding images and texts with an aligned model or a text tower, in batches.

The protocols that rank and score (image<->text retrieval, report section matching) live in
:mod:`mmfm.evaluation.protocols.retrieval`, the metrics in :mod:`mmfm.evaluation.metrics.retrieval`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from mmfm.encoders.text import TextEncoder


@torch.no_grad()
def embed_batches(fn: Callable[[Sequence], torch.Tensor], items: Sequence | torch.utils.data.Dataset,
                  batch_size: int = 64) -> torch.Tensor:
    """``fn`` over ``items`` in batches: texts, an image tensor, or a dataset of ``{"image"}`` items."""
    if isinstance(items, (torch.Tensor, torch.utils.data.Dataset)):
        from mmfm.data.batches import image_batches

        return torch.cat([fn(x).float().cpu() for x in image_batches(items, batch_size)])
    return torch.cat([fn(items[i:i + batch_size]).float().cpu() for i in range(0, len(items), batch_size)])


@torch.no_grad()
def embed_texts(encoder: TextEncoder, texts: Sequence[str], max_length: int = 128,
                batch_size: int = 64) -> torch.Tensor:
    """(N, D) L2-normalised pooled embeddings of a text tower."""
    encoder.eval()
    pooled = embed_batches(lambda t: encoder.encode(list(t), max_length)["pooled"], texts, batch_size)
    return F.normalize(pooled, dim=-1)
