"""`mmfm summarize`: findings -> impression on radiology reports (text only), a language model against the
baselines it has to beat (:mod:`mmfm.tasks.summarization`), scored by the report-generation metrics.

The training split is only a bank for the baselines that need one (the most frequent impression, the nearest
neighbour); the scored splits are never seen by any method before it writes their impressions.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from mmfm.data import spec as dataspec
from mmfm.errors import ConfigError, unknown_option
from mmfm.evaluation.metrics.text import generation_metrics
from mmfm.evaluation.results import ResultRecord
from mmfm.jsonio import write_jsonl_atomic
from mmfm.tasks import summarization as summ
from mmfm.workflows.config import RunConfig
from mmfm.workflows.vision_language import _check_task_keys, _finish, _start

log = logging.getLogger(__name__)

METHODS = ("most_frequent", "last_sentence", "nearest_neighbour", "prompted")
TASK_KEYS = ("name", "methods", "model", "text_encoder", "max_new_tokens", "max_reports", "max_length")


def method_label(method: str, task: dict[str, Any]) -> str:
    """The name a method's rows carry in results.json (what it is, and that the baselines use no model)."""
    return {"most_frequent": "most frequent impression (no model)",
            "last_sentence": "last sentence of the findings (no model)",
            "nearest_neighbour": f"nearest-neighbour impression ({task.get('text_encoder', 'minilm')})",
            "prompted": f"{task.get('model', 'smollm2')} prompted (no training)"}[method]


def _methods(task: dict[str, Any]) -> list[str]:
    methods = task.get("methods", list(METHODS))
    methods = [methods] if isinstance(methods, str) else list(methods)
    for m in methods:
        if m not in METHODS:
            raise unknown_option(f"task.methods: {m}", str(m), METHODS, "mmfm summarize")
    if not methods:
        raise ConfigError("task.methods is empty", f"give one or more of {', '.join(METHODS)}")
    return methods


def _rows(cfg: RunConfig, split: str, limit: int | None) -> list[dict[str, str]]:
    rows = [r for r in dataspec.reports(cfg.data, split).rows if r["findings"].strip() and r["impression"].strip()]
    if not rows:
        raise ConfigError(f"the {split} split holds no report with both findings and an impression",
                          "summarisation needs FINDINGS and IMPRESSION sections in the reports")
    return rows[:limit] if limit else rows


def run_summarize(cfg: RunConfig) -> list[ResultRecord]:
    """task: {methods: [most_frequent, last_sentence, nearest_neighbour, prompted], model: smollm2 (the language
    model prompted), text_encoder: minilm (the nearest neighbour's), max_new_tokens: 48, max_reports: (all)}."""
    _check_task_keys(cfg, TASK_KEYS)
    task = dict(cfg.task)
    methods = _methods(task)
    if "train" in cfg.data.eval_splits:
        raise ConfigError("data.eval_splits holds train, the split the baselines retrieve from",
                          "score val or test (data.eval_splits=[test])")
    limit = int(task["max_reports"]) if task.get("max_reports") else None
    out = _start(cfg)
    train = _rows(cfg, "train", None)
    tools = _tools(cfg, task, methods)
    records: list[ResultRecord] = []
    for split in cfg.data.eval_splits:
        rows = _rows(cfg, split, limit)
        findings, refs = [r["findings"] for r in rows], [r["impression"] for r in rows]
        for method in methods:
            hyps = _impressions(method, tools, train, findings)
            label = method_label(method, task)
            write_jsonl_atomic(out / f"impressions_{split}_{method}.jsonl", [
                {"findings": f, "reference": r, "generated": h} for f, r, h in zip(findings, refs, hyps)])
            records += [ResultRecord("summarization", dataspec.name(cfg.data), split, label, k, float(v), 0)
                        for k, v in {**generation_metrics(hyps, refs), "reports": float(len(rows))}.items()]
            log.info(f"{split}: {label} done ({len(rows)} reports)")
    notes = ["task: the impression written from the findings alone; references: the reports' own impressions",
             f"the training split ({len(train)} reports) is the bank of the most frequent and nearest-neighbour "
             "baselines; no method saw the scored reports",
             "CE_*: the labeller's findings in the generated vs the reference impressions (normal left out)",
             "the language model is research output, not a diagnosis"]
    return _finish(cfg, "Findings -> impression summarisation", records, notes)


def _tools(cfg: RunConfig, task: dict[str, Any], methods: list[str]) -> dict[str, Any]:
    """What the chosen methods need, loaded once: the nearest neighbour's text encoder, the prompted model."""
    tools: dict[str, Any] = {}
    if "nearest_neighbour" in methods:
        from mmfm.tasks.retrieval import embed_texts
        from mmfm.workflows.towers import load_text_encoder

        enc, _ = load_text_encoder(str(task.get("text_encoder", "minilm")))
        max_length = int(task.get("max_length", 128))
        tools["embed"] = lambda texts: embed_texts(enc, texts, max_length)
    if "prompted" in methods:
        from mmfm.tasks.assistant import GenerationOptions
        from mmfm.workflows.chat import load_assistant

        precision = getattr(cfg.train.precision, "value", cfg.train.precision)
        tools["assistant"] = load_assistant(str(task.get("model", "smollm2")), precision=str(precision))
        if tools["assistant"].vision:
            raise ConfigError("task.model is a run with an image bridge", "summarise with a language model "
                                                                          "(task.model=smollm2)")
        tools["options"] = GenerationOptions(max_new_tokens=int(task.get("max_new_tokens", 48)))
        tools["progress"] = bool(cfg.train.progress)
    return tools


def _impressions(method: str, tools: dict[str, Any], train: list[dict[str, str]], findings: list[str]) -> list[str]:
    if method == "most_frequent":
        return summ.most_frequent_impression([r["impression"] for r in train], len(findings))
    if method == "last_sentence":
        return summ.last_sentence(findings)
    if method == "nearest_neighbour":
        return summ.nearest_neighbour_impressions(tools["embed"], [r["findings"] for r in train],
                                                  [r["impression"] for r in train], findings)
    from tqdm import tqdm

    with tqdm(total=len(findings), desc="summarize", unit="report", disable=not tools["progress"],
              file=sys.stderr) as bar:
        return summ.prompted_impressions(tools["assistant"], findings, tools["options"],
                                         progress=lambda i: bar.update(1))
