"""Retrieval protocols: image<->text retrieval with an aligned model and radiology section matching with a text
tower (findings query the impressions of the split)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mmfm.encoders.dual import DualEncoder
from mmfm.encoders.text import TextEncoder
from mmfm.evaluation.metrics.retrieval import relevance_from_texts, retrieval_metrics
from mmfm.tasks.retrieval import embed_batches, embed_texts


@torch.no_grad()
def image_text_retrieval(model: DualEncoder, images: torch.Tensor, texts: Sequence[str],
                         ks: tuple[int, ...] = (1, 5, 10), batch_size: int = 64) -> dict[str, float]:
    """Pairs (images[i], texts[i]). The text side is deduplicated first (identical texts after case and
    whitespace folding are one gallery item / one query), so a corpus of generated captions is scored at class
    level and a corpus of distinct reports exactly as usual. Returns ``i2t_*`` (images query the distinct texts)
    and ``t2i_*`` (each distinct text queries the images; every image paired with that text is relevant), with
    R@K, median rank, mAP and chance R@K, plus ``distinct_texts``."""
    model.eval()
    norm = [" ".join(t.lower().split()) for t in texts]
    distinct = list(dict.fromkeys(norm))                                # first-seen order
    first = {t: texts[norm.index(t)] for t in distinct}
    v = embed_batches(model.encode_image, images, batch_size)           # (N, E)
    t = embed_batches(lambda x: model.encode_text(list(x)), [first[d] for d in distinct], batch_size)   # (T, E)
    rel = relevance_from_texts(list(texts), [first[d] for d in distinct])   # (N, T) image i <-> distinct text j
    sim = v @ t.T
    i2t = retrieval_metrics(sim, rel, ks)
    t2i = retrieval_metrics(sim.T, rel.T, ks)
    return {**{f"i2t_{k}": x for k, x in i2t.items()}, **{f"t2i_{k}": x for k, x in t2i.items()},
            "distinct_texts": float(len(distinct))}


@torch.no_grad()
def section_matching(encoder: TextEncoder, findings: Sequence[str], impressions: Sequence[str],
                     ks: tuple[int, ...] = (1, 5, 10), max_length: int = 128) -> dict[str, float]:
    """Radiology Section Matching: for each report's findings, rank all impressions of the split; identical
    impressions count as relevant."""
    q = embed_texts(encoder, findings, max_length)
    g = embed_texts(encoder, impressions, max_length)
    return retrieval_metrics(q @ g.T, relevance_from_texts(list(impressions), list(impressions)), ks)


def frequency_baseline(findings: Sequence[str], impressions: Sequence[str],
                       ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """The no-model baseline of section matching: every query gets the same ranking, the impressions ordered by
    how often their text occurs in the gallery (most frequent first; equal counts in a fixed order). A text tower
    is only useful where it beats this."""
    norm = [" ".join(t.lower().split()) for t in impressions]
    counts: dict[str, int] = {}
    for t in norm:
        counts[t] = counts.get(t, 0) + 1
    order = {t: i for i, t in enumerate(dict.fromkeys(norm))}  # first occurrence breaks ties between texts
    score = torch.tensor([counts[t] - order[t] / (len(norm) + 1.0) for t in norm], dtype=torch.float64)
    sim = score[None].expand(len(findings), -1)                  # (Q, G), one ranking for all queries
    return retrieval_metrics(sim, relevance_from_texts(list(impressions), list(impressions)), ks)
