"""Text-generation and retrieval metrics against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from mmfm.evaluation.metrics.retrieval import (
    first_relevant_rank,
    mean_average_precision,
    relevance_from_texts,
    retrieval_metrics,
)
from mmfm.evaluation.metrics.text import bleu, cider_d, clinical_efficacy, generation_metrics, rouge_l

HYP, REF = "the cat sat on the mat", "the cat is on the mat"


def test_bleu_by_hand():
    b = bleu([HYP], [REF])
    assert b["BLEU-1"] == pytest.approx(5 / 6, abs=1e-6)                   # 5 of 6 unigrams, no brevity penalty
    assert b["BLEU-2"] == pytest.approx(math.sqrt(5 / 6 * 3 / 5), abs=1e-6)  # 3 of 5 bigrams
    short = bleu(["the cat"], [REF])                                         # brevity penalty exp(1 - 6/2)
    assert short["BLEU-1"] == pytest.approx(math.exp(1 - 3), abs=1e-6)


def test_rouge_l_by_hand():
    assert rouge_l([HYP], [REF]) == pytest.approx(5 / 6, abs=1e-6)          # LCS "the cat on the mat"
    assert rouge_l(["a b c"], ["c b a"]) == pytest.approx(1 / 3, abs=1e-6)


def test_cider_d_by_hand():
    # doc 1 identical ("a b"): cos 1 for n = 1, 2; doc 2 "c d" vs "c e": unigram cos 1/2, nothing else.
    assert cider_d(["a b", "c d"], ["a b", "c e"]) == pytest.approx(10 * ((1 + 1) / 4 + 0.5 / 4) / 2, abs=1e-9)
    # length penalty exp(-(delta^2) / (2 sigma^2)) with delta = 1 on an otherwise identical unigram vector
    got = cider_d(["x x", "y"], ["x", "y"])
    uni_cos = 1 * 1 / (2 * 1)     # hyp (2 ln2) clipped to ref (ln2): dot ln2^2 / (2 ln2 * ln2)
    assert got == pytest.approx(10 * (uni_cos * math.exp(-1 / 72) / 4 + 1 / 4) / 2, abs=1e-9)


def test_clinical_efficacy_by_hand():
    ce = clinical_efficacy(["Cardiomegaly.", "No effusion."], ["Cardiomegaly. Small effusion.", "Normal."])
    assert ce["CE_precision"] == pytest.approx(1.0)
    assert ce["CE_recall"] == pytest.approx(0.5)
    assert ce["CE_F1"] == pytest.approx(2 / 3)


def test_clinical_efficacy_is_undefined_without_reference_findings():
    assert clinical_efficacy(["Axial CT slice."], ["Axial MRI slice."]) == {}
    ce = clinical_efficacy(["CT crop containing liver tumour."], ["CT crop without tumour."])
    assert ce == {} or ce["CE_precision"] == 0.0      # the negated reference has no positive finding
    ce = clinical_efficacy(["CT crop without tumour.", "CT crop with tumour."],
                           ["CT crop containing liver tumour.", "CT crop containing liver tumour."])
    assert ce["CE_precision"] == 1.0 and ce["CE_recall"] == 0.5


def test_empty_generation_scores_zero():
    m = generation_metrics(["", ""], ["heart normal", "effusion"])
    assert m["BLEU-1"] == 0.0 and m["ROUGE-L"] == 0.0 and m["CIDEr-D"] == 0.0


def test_retrieval_ranks_by_hand():
    sim = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.3, 0.8], [0.4, 0.4, 0.1]])
    assert first_relevant_rank(sim, torch.eye(3, dtype=torch.bool)).tolist() == [1, 2, 3]
    m = retrieval_metrics(sim, ks=(1, 2))
    assert m["R@1"] == pytest.approx(1 / 3) and m["R@2"] == pytest.approx(2 / 3) and m["median_rank"] == 2
    assert m["chance_R@1"] == pytest.approx(1 / 3) and m["chance_R@2"] == pytest.approx(2 / 3)


def test_retrieval_ties_are_pessimistic_and_duplicates_relevant():
    tie = torch.tensor([[0.5, 0.5]])
    assert first_relevant_rank(tie, torch.tensor([[False, True]])).tolist() == [2]
    rel = relevance_from_texts(["No acute disease.", "Effusion."],
                               ["no acute  disease.", "Effusion.", "No acute disease."])
    assert rel.tolist() == [[True, False, True], [False, True, False]]
    sim = torch.tensor([[0.1, 0.3, 0.9], [0.0, 0.2, 0.5]])
    m = retrieval_metrics(sim, rel, ks=(1,))
    assert m["R@1"] == pytest.approx(0.5)                                  # query 0 finds its duplicate first
    assert m["chance_R@1"] == pytest.approx((2 / 3 + 1 / 3) / 2)


def test_mean_average_precision_by_hand():
    sim = torch.tensor([[0.9, 0.8, 0.7, 0.6], [0.5, 0.5, 0.1, 0.0]])
    rel = torch.tensor([[True, False, True, False], [False, True, False, False]])
    # query 0: hits at ranks 1 and 3 -> (1/1 + 2/3) / 2; query 1: the tie puts the relevant item second -> 1/2
    assert mean_average_precision(sim, rel) == pytest.approx(((1 + 2 / 3) / 2 + 0.5) / 2)


def test_chance_average_precision_matches_enumeration():
    import itertools

    from mmfm.evaluation.metrics.retrieval import chance_average_precision

    n, r = 5, 2
    aps = []
    for pos in itertools.combinations(range(n), r):      # every placement of the relevant items
        rel = torch.zeros(1, n, dtype=torch.bool)
        rel[0, list(pos)] = True
        aps.append(mean_average_precision(-torch.arange(n, dtype=torch.float32)[None], rel))
    rel = torch.zeros(1, n, dtype=torch.bool)
    rel[0, :r] = True
    assert chance_average_precision(rel) == pytest.approx(sum(aps) / len(aps))
