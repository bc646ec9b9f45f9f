"""Retrieval protocols: image<->text retrieval with an aligned model and radiology section matching with a text
tower (findings query the impressions of the split)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mmfm.encoders.dual import DualEncoder
from mmfm.encoders.text import TextEncoder
from mmfm.evaluation.metrics.retrieval import (
    random_average_precision,
    random_recall_at,
    relevance_from_texts,
    retrieval_metrics,
)
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


def label_only_retrieval(texts: Sequence[str], label_texts: Sequence[str],
                         ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """The label-only baseline of image<->text retrieval: the expected scores of a retriever that knows every
    item's label perfectly and nothing else. Pairs (image i, ``texts[i]``) with label ``label_texts[i]`` (e.g.
    mini's ``caption_label``); the text side is deduplicated as in :func:`image_text_retrieval`, a distinct text
    takes the label of its first image. Each query ranks the gallery items of its own label first, in a random
    order, then the rest; R@K and AP are the expectations over that order (the chance formulas within the label's
    block). Returns ``i2t_R@K``, ``i2t_mAP``, ``t2i_R@K``, ``t2i_mAP``. With label-only captions it is perfect
    (1.0); what a model scores above it is retrieval of more than the label."""
    norm = [" ".join(t.lower().split()) for t in texts]
    distinct = list(dict.fromkeys(norm))
    label_of = {t: label_texts[norm.index(t)] for t in distinct}
    rel = relevance_from_texts(list(texts), distinct)                                  # (N, T)
    same = torch.tensor([[label_texts[i] == label_of[t] for t in distinct] for i in range(len(texts))])  # (N, T)
    out: dict[str, float] = {}
    for side, r, b in (("i2t", rel, same), ("t2i", rel.T, same.T)):
        n_block, n_rel = b.sum(1).tolist(), (r & b).sum(1).tolist()   # per query: its label's items, relevant ones
        for k in ks:
            out[f"{side}_R@{k}"] = float(np.mean([random_recall_at(n, m, k) for n, m in zip(n_block, n_rel)]))
        out[f"{side}_mAP"] = float(np.mean([random_average_precision(n, m) for n, m in zip(n_block, n_rel) if m]))
    return out


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
