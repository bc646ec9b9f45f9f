"""The label-only retrieval baseline against a hand computation."""

from __future__ import annotations

import pytest

from mmfm.evaluation.protocols.retrieval import label_only_retrieval


def test_label_only_retrieval_matches_a_hand_computation():
    # images 0..3 with captions a, b, c, a and labels x, x, y, x: distinct texts a, b, c (labels x, x, y)
    m = label_only_retrieval(["a", "b", "c", "a"], ["x", "x", "y", "x"])
    # image -> text: images of label x rank {a, b} first in random order, one of them relevant: R@1 = 1/2, AP
    # = 1/2 * 1 + 1/2 * 1/2 = 3/4; the image of label y has its text alone: R@1 = AP = 1
    assert m["i2t_R@1"] == pytest.approx((0.5 + 0.5 + 1 + 0.5) / 4)
    assert m["i2t_mAP"] == pytest.approx((0.75 * 3 + 1) / 4)
    assert m["i2t_R@5"] == pytest.approx(1.0)
    # text -> image: a ranks images {0, 1, 3} (2 relevant): R@1 = 2/3, AP = E over the 3 orders of the position
    # of the irrelevant one: first (1/2 * (1/2 + 2/3)), second (1/3 * (1 + 2/3) ... averaged by hand below
    ap_a = ((0.5 + 2 / 3) / 2 + (1 + 2 / 3) / 2 + (1 + 1) / 2) / 3
    ap_b = (1 + 1 / 2 + 1 / 3) / 3
    assert m["t2i_R@1"] == pytest.approx((2 / 3 + 1 / 3 + 1) / 3)
    assert m["t2i_mAP"] == pytest.approx((ap_a + ap_b + 1) / 3)


def test_label_only_captions_make_it_perfect():
    m = label_only_retrieval(["a", "b", "a"], ["a", "b", "a"])
    assert all(v == pytest.approx(1.0) for v in m.values())
