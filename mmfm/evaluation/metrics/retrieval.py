"""Retrieval metrics: Recall@K, median rank and the chance level.

Policy: an item of the gallery is relevant to a query when ``relevant[q, g]`` is true; by default that is the
paired item only, but when several gallery items carry the same text (duplicate captions, the many "No acute
cardiopulmonary abnormality." impressions) all of them are relevant (``relevance_from_texts``), so retrieving an
identical text is not counted as a miss. Ties in similarity are broken against the query (pessimistic).
"""

from __future__ import annotations

import numpy as np
import torch


def relevance_from_texts(query_keys: list[str], gallery_keys: list[str]) -> torch.Tensor:
    """(Q, G) bool: same text after lower-casing and whitespace folding."""
    norm = [" ".join(t.lower().split()) for t in gallery_keys]
    index: dict[str, list[int]] = {}
    for j, t in enumerate(norm):
        index.setdefault(t, []).append(j)
    rel = torch.zeros(len(query_keys), len(gallery_keys), dtype=torch.bool)
    for i, t in enumerate(query_keys):
        rel[i, index.get(" ".join(t.lower().split()), [])] = True
    return rel


def first_relevant_rank(sim: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """1-based rank of the best-ranked relevant item per query: 1 + number of items scored strictly higher, plus
    the irrelevant ones scored equally (pessimistic ties). Queries without a relevant item get rank G + 1."""
    sim = sim.float()
    best = sim.masked_fill(~relevant, float("-inf")).max(dim=1).values          # (Q,)
    higher = (sim > best[:, None]) | ((sim == best[:, None]) & ~relevant)
    rank = higher.sum(1) + 1
    return torch.where(relevant.any(1), rank, torch.full_like(rank, sim.shape[1] + 1))


def mean_average_precision(sim: torch.Tensor, relevant: torch.Tensor) -> float:
    """Mean over queries (with at least one relevant item) of the average of precision@rank at each relevant
    item's rank (ties ranked pessimistically: irrelevant items first)."""
    aps = []
    for s, r in zip(sim.double().numpy(), relevant.numpy()):
        if not r.any():
            continue
        hits = r[np.lexsort((r, -s))].astype(np.float64)            # by score, then irrelevant before relevant
        prec = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        aps.append(float((prec * hits).sum() / hits.sum()))
    return float(np.mean(aps)) if aps else 0.0


def random_average_precision(n: int, r: int) -> float:
    """Expected AP of a random ranking of n items of which r (> 0) are relevant:
    E[AP] = (r - 1) / (n - 1) + (n - r) / (n (n - 1)) * H_n, with H_n the n-th harmonic number."""
    if n == 1:
        return 1.0
    h = float(np.sum(1.0 / np.arange(1, n + 1)))
    return (r - 1) / (n - 1) + (n - r) / (n * (n - 1)) * h


def random_recall_at(n: int, r: int, k: int) -> float:
    """P(at least one of r relevant items in the top k of a random ranking of n) = 1 - C(n - r, k) / C(n, k)."""
    return 1.0 - float(np.prod([(n - r - i) / (n - i) for i in range(min(k, n))])) if r > 0 else 0.0


def chance_average_precision(relevant: torch.Tensor) -> float:
    """Expected mAP of a random ranking (mean of :func:`random_average_precision` over queries with a relevant
    item)."""
    n = relevant.shape[1]
    vals = [random_average_precision(n, r) for r in relevant.sum(1).tolist() if r > 0]
    return float(np.mean(vals)) if vals else 0.0


def retrieval_metrics(sim: torch.Tensor, relevant: torch.Tensor | None = None,
                      ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """sim: (Q, G) similarities; relevant: (Q, G) bool (default: the diagonal). Returns R@K, median rank, mAP and
    the R@K a random ranking would reach (``chance_R@K``)."""
    if relevant is None:
        relevant = torch.eye(*sim.shape, dtype=torch.bool)
    rank = first_relevant_rank(sim, relevant)
    out = {f"R@{k}": float((rank <= k).float().mean()) for k in ks}
    out["median_rank"] = float(rank.float().median())
    out["mAP"] = mean_average_precision(sim, relevant)
    out["chance_mAP"] = chance_average_precision(relevant)
    g = sim.shape[1]
    n_rel = relevant.sum(1).tolist()
    for k in ks:
        out[f"chance_R@{k}"] = float(np.mean([random_recall_at(g, r, k) for r in n_rel]))
    return out
