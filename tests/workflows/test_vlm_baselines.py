"""The baselines that report generation and VQA record next to every model (majority report, nearest-neighbour
report, majority answer), each checked against a naive computation; and the workflows record them."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from mmfm.cli.main import main
from mmfm.tasks.report_generation import majority_report, nearest_neighbour_reports
from mmfm.tasks.vqa import majority_answers

ROOT = Path(__file__).resolve().parents[2]
TINY = ["train.max_steps=1", "train.progress=false", "train.batch_size=4", "data.eval_splits=[test]"]


def _naive_mode(items: list[str]) -> str:
    best, count = None, -1
    for t in sorted(set(items)):                      # ties: the first in sorted order
        c = sum(1 for x in items if x == t)
        if c > count:
            best, count = t, c
    return best


def test_majority_report_is_the_most_frequent_training_text():
    train = ["b", "a", "c", "a", "b", "a"]
    assert majority_report(train, 3) == [_naive_mode(train)] * 3 == ["a", "a", "a"]
    assert majority_report(["z", "y"], 1) == ["y"]     # a tie goes to the first in sorted order


def test_nearest_neighbour_report_matches_a_loop_over_cosine_similarities():
    g = torch.Generator().manual_seed(0)
    train, query = torch.randn(7, 2, 3, 3, generator=g), torch.randn(5, 2, 3, 3, generator=g)   # images
    texts = [f"report {i}" for i in range(7)]

    def cos(a: torch.Tensor, b: torch.Tensor) -> float:
        a, b = a.flatten().tolist(), b.flatten().tolist()
        dot = sum(x * y for x, y in zip(a, b))
        return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    naive = [texts[max(range(7), key=lambda j: cos(q, train[j]))] for q in query]
    assert nearest_neighbour_reports(query, train, texts) == naive
    assert nearest_neighbour_reports(train[[3, 1]] * 2.5, train, texts) == ["report 3", "report 1"]  # scale-free


def test_majority_answer_is_each_questions_most_frequent_training_answer():
    qs = ["is it ct?", "is it ct?", "is it ct?", "region?", "region?", "tumour?"]
    ans = ["yes", "no", "yes", "brain", "abdomen", "no"]
    asked = ["is it ct?", "region?", "tumour?", "never seen?"]
    naive = [_naive_mode([a for q2, a in zip(qs, ans) if q2 == q]) if q in qs else _naive_mode(ans) for q in asked]
    assert majority_answers(qs, ans, asked) == naive == ["yes", "abdomen", "no", "no"]


def _run(command: str, config: str, extra: list[str], out: Path) -> tuple[dict[tuple[str, str], float], Any]:
    """Run ``mmfm COMMAND CONFIG`` on tiny budgets; its test records by (method, metric), and its config."""
    from mmfm.workflows.config import load_config

    assert main([command, str(ROOT / config), *TINY, "encoder.name=resnet_tiny", *extra, f"out={out}"]) == 0
    assert json.loads((out / "status.json").read_text())["status"] == "complete"
    records = {(r["method"], r["metric"]): r["value"] for r in json.loads((out / "results.json").read_text())
               if r["split"] == "test"}
    return records, load_config(ROOT / config, ["data.eval_splits=[test]"])


def test_report_generation_records_its_baselines(mini_root, tmp_path):
    from mmfm.data import spec as dataspec
    from mmfm.evaluation.metrics.text import generation_metrics

    r, cfg = _run("report-gen", "configs/report_generation_2d.yaml", ["task.max_len=8"], tmp_path / "rg")
    train, test = dataspec.pairs(cfg.data, "train"), dataspec.pairs(cfg.data, "test")
    majority = generation_metrics([_naive_mode(list(train.texts))] * len(test.texts), test.texts)
    assert r[("majority report (no image)", "CIDEr-D")] == majority["CIDEr-D"]
    assert r[("majority report (no image)", "CE_F1")] == majority["CE_F1"]
    nn = generation_metrics(nearest_neighbour_reports(
        torch.stack([test[i]["image"] for i in range(len(test))]),
        torch.stack([train[i]["image"] for i in range(len(train))]), train.texts), test.texts)
    assert r[("nearest-neighbour report (pixels)", "BLEU-4")] == nn["BLEU-4"]
    assert ("nearest-neighbour report (resnet_tiny-decoder features)", "CE_F1") in r


def test_vqa_records_the_majority_answer(mini_root, tmp_path):
    from mmfm.data.spec import generated_vqa

    r, cfg = _run("vqa", "configs/vqa_2d.yaml", ["text_encoder.name=bert_tiny"], tmp_path / "vqa")
    train, test = generated_vqa(cfg.data, "train"), generated_vqa(cfg.data, "test")
    prior = {q: _naive_mode([a for q2, a in zip(train["question"], train["answer"]) if q2 == q])
             for q in set(train["question"])}
    right = [prior[q] == a for q, a in zip(test["question"], test["answer"])]
    assert r[("majority answer per question (no image)", "accuracy")] == sum(right) / len(right)
    closed = [ok for ok, t in zip(right, test["answer_type"]) if t == "CLOSED"]
    assert r[("majority answer per question (no image)", "closed_accuracy")] == sum(closed) / len(closed)
