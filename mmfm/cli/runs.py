"""What a finished run prints: its result records, its folder, what to do next."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any


def run_config(a: argparse.Namespace, run: Callable[[Any], Path]) -> Path:
    """`mmfm train|pretrain|report-gen|vqa`: validate the config (a config error is reported before any workflow
    is imported), run it through its `mmfm` function, print its records on the main process."""
    from mmfm import api

    cfg = api.config(a.config, a.overrides)
    out = run(cfg)
    from mmfm.engine.distributed import is_main

    if is_main():
        print_run(out, cfg.out)
    return out


def print_run(run: Path, out: str) -> None:
    """The records of a finished run (its results.json), then where its files are."""
    from mmfm.evaluation.results import read_results

    print_records(read_results(run / "results.json"), out)


def next_step(out: Path) -> str:
    """What a finished pretraining run can be evaluated with."""
    if (out / "dual").is_dir():
        return f"use it: mmfm zeroshot --model {out}; mmfm retrieve --model {out}"
    if (out / "text_encoder").is_dir() and not (out / "encoder").is_dir():
        return f"evaluate it: mmfm retrieve --text-encoder {out}"
    return f"evaluate it: mmfm evaluate --encoder {out}"


def print_records(records: list, out: str) -> None:
    for r in records:
        print(f"  {r.task:17s} {r.split:5s} {r.metric:26s} {r.value:.4f}")
    print(f"run directory: {out}   results: {out}/results.json   report: {out}/report.md")
