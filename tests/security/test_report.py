"""`mmfm report` on run folders from elsewhere (issue 24, item 12): non-numeric values in results, curves and
records are rendered (escaped), never a crash; markup in them stays text."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mmfm.evaluation.html_report import write_html_report

EVIL = "<script>alert(1)</script>"


@pytest.fixture()
def odd_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps([
        {"task": "cls", "dataset": "d", "split": "test", "method": "m", "metric": "auroc", "value": 0.91, "seed": 0},
        {"task": "cls", "dataset": "d", "split": "test", "method": "m", "metric": "auroc", "value": "n/a", "seed": 1},
        {"task": "cls", "dataset": "d", "split": "test", "method": "m", "metric": "note", "value": EVIL, "seed": 0},
        {"task": "cls", "dataset": "d", "split": "test", "method": "m", "metric": "acc", "value": None},
        {"task": "cls", "dataset": "d", "split": "test", "method": "m", "metric": "ece", "value": [1, 2],
         "label_fraction": "all"},
        {"task": "cls", "dataset": "d", "split": "test", "method": "m", "value": 3.0},   # no metric name
        "not a record",
    ]))
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"step": 1, "loss": 1.0}, {"step": 2, "loss": "nan?"}, {"loss": 0.5}, {"step": "x", "loss": 0.4},
        {"step": 3, "loss": 0.3}, {"step": 4, "loss": {"a": 1}}]) + "\nnot json\n")
    (run / "calibration.json").write_text(json.dumps({"ece": "high", "bins": EVIL}))
    return run


def test_report_renders_non_numeric_values(odd_run):
    out = write_html_report(odd_run)
    page = out.read_text()
    assert "0.91" in page and "n/a" in page and "&lt;script&gt;" in page and "<script>" not in page
    assert "training curves" in page                          # the numeric points are still drawn


def test_report_cli_exits_cleanly_on_odd_values(odd_run):
    r = subprocess.run([sys.executable, "-m", "mmfm.cli.main", "report", str(odd_run)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (odd_run / "report.html").is_file()


@pytest.mark.parametrize("files", [{"card.json": "{not json"}, {"config.yaml": "- a\n- b\n"},
                                   {"config.yaml": "data: [1, 2]\n"}, {"config.yaml": "a: [unclosed\n"},
                                   {"results.json": '{"a": 1}'}])
def test_report_survives_damaged_side_files(tmp_path, files):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.5}\n')
    for name, text in files.items():
        (run / name).write_text(text)
    page = write_html_report(run).read_text()
    assert "training curves" in page
