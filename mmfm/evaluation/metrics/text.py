"""Text-generation metrics: BLEU-1..4 (nltk), ROUGE-L (rouge-score), CIDEr-D, and the clinical-efficacy score of
generated reports (finding labels from the rule-based labeller, compared with those of the reference reports).

Policy: texts are lower-cased and split into words and punctuation by one tokenizer for every metric; an empty
generated text scores 0. BLEU is corpus-level (Papineni et al., 2002) with nltk's smoothing method 1 so short
corpora do not give 0 on a missing 4-gram. CIDEr-D (Vedantam et al., 2015) is written here: the reference
implementation (pycocoevalcap) is a 104 MB wheel with Java jars, and the formula is 40 lines; it is tested
against hand-computed values. METEOR is not provided: it needs WordNet data that nltk downloads at run time.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

from mmfm.data.labeller import LABELS, label_matrix

_TOKEN = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall((text or "").lower())


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    from nltk.translate.bleu_score import SmoothingFunction, corpus_bleu

    hyp = [tokenize(h) for h in hypotheses]
    refs = [[tokenize(r)] for r in references]
    smooth = SmoothingFunction().method1
    out = {}
    for n in range(1, 5):
        w = tuple([1.0 / n] * n)
        out[f"BLEU-{n}"] = float(corpus_bleu(refs, hyp, weights=w, smoothing_function=smooth)) if any(hyp) else 0.0
    return out


def rouge_l(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F-measure over pairs."""
    from rouge_score.rouge_scorer import _score_lcs

    scores = [_score_lcs(tokenize(r), tokenize(h)).fmeasure for h, r in zip(hypotheses, references)]
    return float(np.mean(scores)) if scores else 0.0


def _ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _tfidf(counts: Counter, df: Counter, log_n: float) -> dict[tuple[str, ...], float]:
    return {g: tf * (log_n - math.log(max(1.0, float(df[g])))) for g, tf in counts.items()}


def cider_d(hypotheses: Sequence[str], references: Sequence[Sequence[str] | str], sigma: float = 6.0) -> float:
    """CIDEr-D: for n = 1..4, cosine of TF-IDF n-gram vectors (document frequency over the reference sets),
    with the hypothesis counts clipped to the reference counts and a Gaussian length penalty; averaged over n
    and references, times 10."""
    hyps = [tokenize(h) for h in hypotheses]
    refs = [[tokenize(r) for r in ([rs] if isinstance(rs, str) else rs)] for rs in references]
    n_docs = len(refs)
    if n_docs == 0:
        return 0.0
    scores = np.zeros(n_docs)
    for n in range(1, 5):
        df: Counter = Counter()
        for rs in refs:
            df.update(set(g for r in rs for g in _ngrams(r, n)))
        log_n = math.log(float(n_docs))
        for i, (h, rs) in enumerate(zip(hyps, refs)):
            vh = _tfidf(_ngrams(h, n), df, log_n)
            norm_h = math.sqrt(sum(v * v for v in vh.values()))
            acc = 0.0
            for r in rs:
                vr = _tfidf(_ngrams(r, n), df, log_n)
                norm_r = math.sqrt(sum(v * v for v in vr.values()))
                dot = sum(min(vh[g], vr[g]) * vr[g] for g in vh if g in vr)     # clipped counts (the "-D")
                cos = dot / (norm_h * norm_r) if norm_h > 0 and norm_r > 0 else 0.0
                acc += cos * math.exp(-((len(h) - len(r)) ** 2) / (2 * sigma ** 2))
            scores[i] += acc / len(rs) / 4.0
    return float(scores.mean() * 10.0)


def clinical_efficacy(hypotheses: Sequence[str], references: Sequence[str],
                      labels: list[str] | None = None) -> dict[str, float]:
    """Micro precision / recall / F1 of the labeller's positive findings (uncertain counted as positive) in the
    generated reports against those of the reference reports; ``normal`` is left out by default. Policy: when no
    reference report has any finding the scores are undefined and nothing is returned."""
    labels = labels or [k for k in LABELS if k != "normal"]
    p, r = label_matrix(hypotheses, labels), label_matrix(references, labels)
    if r.sum() == 0:
        return {}  # no finding in any reference report: clinical efficacy is undefined, so it is not reported
    tp = int((p & r).sum())
    prec = tp / p.sum() if p.sum() else 0.0
    rec = tp / r.sum() if r.sum() else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return {"CE_precision": float(prec), "CE_recall": float(rec), "CE_F1": float(f1)}


def generation_metrics(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    return {**bleu(hypotheses, references), "ROUGE-L": rouge_l(hypotheses, references),
            "CIDEr-D": cider_d(hypotheses, references), **clinical_efficacy(hypotheses, references)}
