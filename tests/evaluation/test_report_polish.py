"""Report polish (issue 29, item 6): the training loss drawn once, numbers to four significant digits in report.md
and report.html, wide tables that scroll, and a first line that says how good the model is."""

from __future__ import annotations

import json
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mmfm.evaluation.headline import run_headline  # noqa: E402
from mmfm.evaluation.loss_curves import draw_losses, loss_series  # noqa: E402
from mmfm.evaluation.report import plot_losses, write_report  # noqa: E402
from mmfm.evaluation.results import ResultRecord, write_results  # noqa: E402
from mmfm.evaluation.rounding import format_number, rounded  # noqa: E402

LONG = 0.08941480912120137


def _metrics(path, terms):
    """metrics.jsonl whose total ``loss`` is the sum of ``terms`` (name -> scale) at each step."""
    rows = []
    for step in (1, 10, 20):
        parts = {k: scale / step for k, scale in terms.items()}
        rows.append({"step": step, "lr": 0.00030000000000000003, "loss": sum(parts.values()), **parts})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_numbers_have_four_significant_digits():
    assert format_number(0.5) == "0.5000" and format_number(LONG) == "0.08941"
    assert format_number(2.1299583857285413) == "2.130" and format_number(1861.0) == "1861"
    assert format_number(123456.7) == "123457" and format_number(3) == "3" and format_number(1.234e-6) == "1.234e-06"
    assert rounded({"t": 2.1299583857285413, "bins": [LONG, 7], "name": "x"}) == {"t": 2.13, "bins": [0.08941, 7],
                                                                                  "name": "x"}


def test_report_rounds_values_in_markdown_and_html(tmp_path):
    (tmp_path / "calibration.json").write_text(json.dumps({"temperature": 2.1299583857285413, "ece_after": LONG,
                                                           "samples": 906}))
    recs = [ResultRecord("classification", "toy", "test", "m", "ece", LONG, 0)]
    write_results(tmp_path / "results.json", recs)       # report.html reads the run's files, as the workflows write
    md = write_report(tmp_path / "report.md", "t", recs, {}, []).read_text()
    page = (tmp_path / "report.html").read_text()
    assert "| ece | 0.08941 |" in md
    assert "2.130" in page and "0.08941" in page and "906" in page
    for text in (md, page):
        assert not re.search(r"\d\.\d{6,}", text.split("<h3>Configuration")[0])   # no 16-digit float anywhere


def test_a_single_term_objective_draws_its_loss_once(tmp_path):
    one = _metrics(tmp_path / "one.jsonl", {"contrast_loss": 5.0})
    rows = [json.loads(ln) for ln in one.read_text().splitlines()]
    assert list(loss_series(rows)) == ["loss"]              # contrast_loss repeats the total: left out
    two = [json.loads(ln) for ln in _metrics(tmp_path / "two.jsonl", {"itc_loss": 2.0, "itm_loss": 1.0})
           .read_text().splitlines()]
    assert list(loss_series(two)) == ["itc_loss", "itm_loss", "loss"]    # several terms: each once, and the total
    fig, ax = plt.subplots()
    draw_losses(ax, loss_series(rows))
    assert len(ax.lines) == 1 and [t.get_text() for t in ax.get_legend().get_texts()] == ["loss"]
    plt.close(fig)
    run = tmp_path / "run"
    run.mkdir()
    one.rename(run / "metrics.jsonl")
    png = plot_losses(run / "metrics.jsonl", run / "plots" / "loss.png", "pretraining loss")
    md = write_report(run / "report.md", "t", [], {"training loss": png}, []).read_text()
    page = (run / "report.html").read_text()
    assert md.count("![training loss]") == 1
    assert page.count("<figure>") == 1 and 'alt="training curves"' in page and 'alt="loss"' not in page


def test_every_report_opens_with_how_good_the_model_is(tmp_path):
    recs = [ResultRecord("classification", "toy", split, "m", metric, value, seed)
            for seed, shift in ((0, 0.0), (1, 0.1)) for split in ("val", "test")
            for metric, value in (("accuracy", 0.9 - shift), ("balanced_accuracy", 0.8 - shift), ("ece", LONG),
                                  ("support", 50.0))]
    write_results(tmp_path / "results.json", recs)
    md = write_report(tmp_path / "report.md", "t", recs, {}, []).read_text().splitlines()
    assert md[2] == "**m: balanced_accuracy 0.7500 ± 0.071 (mean ± sd over 2 seeds) on the test split of toy, " \
                    "n = 50.**"
    assert json.loads((tmp_path / "headline.json").read_text())["text"] == md[2].strip("*")
    page = (tmp_path / "report.html").read_text()
    assert page.index("balanced_accuracy 0.7500") < page.index("<main>")       # in the page's header
    assert '<div class=scroll><table><tr><th>task</th>' in page               # the results table scrolls sideways
    # a run folder without headline.json (a pretraining run) still leads with its result
    pre = tmp_path / "pre"
    pre.mkdir()
    (pre / "results.json").write_text(json.dumps([{"task": "pretrain", "dataset": "toy", "split": "train",
                                                   "method": "mae", "metric": "loss", "value": 0.4321, "seed": 0}]))
    from mmfm.evaluation.html_report import write_html_report

    head = write_html_report(pre).read_text().split("<main>")[0]
    assert "mae: training loss at the last step 0.4321 (1 seed) on the train split of toy." in head
    assert run_headline([]) is None
