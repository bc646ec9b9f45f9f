"""What a finished run prints: its result records, its folder, what to do next."""

from __future__ import annotations

import argparse
from pathlib import Path


def run_config(a: argparse.Namespace, kind: str) -> int:
    """`mmfm train|pretrain|report-gen|vqa`: load the config, run the workflow, print on the main process."""
    from mmfm.workflows.config import load_config

    cfg = load_config(a.config, a.overrides)     # a config error is reported before any workflow is imported
    from mmfm.engine.distributed import is_main
    from mmfm.workflows.pretrain import run_pretrain
    from mmfm.workflows.supervised import run_supervised
    from mmfm.workflows.vision_language import run_report_generation, run_vqa

    runs = {"train": run_supervised, "pretrain": run_pretrain, "report-gen": run_report_generation, "vqa": run_vqa}
    records = runs[kind](cfg)
    if is_main():
        print_records(records, cfg.out)
        if kind == "pretrain":
            print(next_step(Path(cfg.out)))
    return 0


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
