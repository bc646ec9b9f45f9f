"""The sentence a report leads with is computed from its records: best pretrained vs best random, mean ± sd."""

from __future__ import annotations

import json

import numpy as np

from mmfm.evaluation.claims import pretraining_headline
from mmfm.evaluation.report import write_report
from mmfm.evaluation.results import ResultRecord

T = "classification/linear"


def _recs(method, fraction, values, split="test"):
    return [ResultRecord(T, "d", split, method, "balanced_accuracy", v, s, fraction) for s, v in enumerate(values)]


def test_headline_names_the_best_arms_with_their_spread():
    recs = (_recs("resnet_small-random", 0.01, [0.30, 0.40, 0.35]) + _recs("vit-random", 0.01, [0.2, 0.2, 0.2])
            + _recs("resnet_small-moco", 0.01, [0.60, 0.50, 0.55]) + _recs("litemedsam-pretrained", 0.01, [0.5] * 3)
            + _recs("resnet_small-moco", 0.1, [0.41, 0.39, 0.40]) + _recs("resnet_small-random", 0.1, [0.4, 0.3, 0.5])
            + [ResultRecord(T, "d", "test", "resnet_small-moco", "accuracy", 0.99, 0, 0.01)])
    text = pretraining_headline(recs)
    a, b = np.array([0.60, 0.50, 0.55]), np.array([0.30, 0.40, 0.35])
    assert (f"at 1% of the labels resnet_small-moco reaches {a.mean():.3f} ± {a.std(ddof=1):.3f} against "
            f"{b.mean():.3f} ± {b.std(ddof=1):.3f} for resnet_small-random (+20.0 points, outside one sd") in text
    assert "at 10% of the labels resnet_small-moco reaches 0.400 ± 0.010 against 0.400 ± 0.100" in text
    assert "+0.0 points, within one sd" in text
    assert "chosen by their test mean (no validation records), so the gap is optimistic" in text
    assert pretraining_headline(_recs("x-random", 0.01, [0.3])) == "No pretrained-vs-random comparison was recorded."


def test_headline_chooses_the_arms_on_validation_and_scores_them_on_test():
    """moco is best on test but simclr on val: the sentence names simclr, with its TEST numbers and the paired
    per-seed difference against random; val numbers never appear as results."""
    test = (_recs("r-random", 0.01, [0.30, 0.40, 0.35]) + _recs("r-moco", 0.01, [0.90, 0.80, 0.85])
            + _recs("r-simclr", 0.01, [0.50, 0.45, 0.55]))
    val = (_recs("r-random", 0.01, [0.3] * 3, "val") + _recs("r-moco", 0.01, [0.4] * 3, "val")
           + _recs("r-simclr", 0.01, [0.6] * 3, "val"))
    text = pretraining_headline(test + val)
    assert "each arm chosen on the validation split" in text
    assert "r-simclr reaches 0.500 ± 0.050 against 0.350 ± 0.050 for r-random (+15.0 points" in text
    d = np.array([0.20, 0.05, 0.20])
    assert f"paired by seed +15.0 ± {100 * d.std(ddof=1):.1f}" in text
    assert "moco" not in text and "0.600" not in text


def test_report_leads_with_the_summary(tmp_path):
    write_report(tmp_path / "report.md", "t", _recs("a-random", 0.01, [0.3]), {}, [], summary="A <b>claim</b>.")
    md = (tmp_path / "report.md").read_text().splitlines()
    assert md[2] == "**A <b>claim</b>.**"
    assert json.loads((tmp_path / "headline.json").read_text()) == {"text": "A <b>claim</b>."}
    page = (tmp_path / "report.html").read_text()
    assert "A &lt;b&gt;claim&lt;/b&gt;." in page and page.index("claim") < page.index("run folder")
