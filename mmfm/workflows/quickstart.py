"""`mmfm quickstart`: prepare mini if needed, train the supervised baselines, write results and a report."""

from __future__ import annotations

import os
from pathlib import Path

from mmfm.data.sources.mini import build_mini
from mmfm.evaluation.report import write_report
from mmfm.evaluation.results import ResultRecord, write_json_atomic, write_results
from mmfm.workflows.config import load_config
from mmfm.workflows.supervised import run_supervised


def config_dir() -> Path:
    """The recipes folder: $MMFM_CONFIGS, else ``configs/`` of the source tree."""
    return Path(os.environ.get("MMFM_CONFIGS", Path(__file__).resolve().parents[2] / "configs"))


def quickstart(out: str | Path = "runs/quickstart", overrides: list[str] | None = None) -> list[ResultRecord]:
    out = Path(out)
    root = build_mini()
    print(f"[mmfm] mini corpus: {root} (data card: {root / 'card.md'})", flush=True)
    records: list[ResultRecord] = []
    plots = {}
    for name in ("classification", "segmentation"):
        cfg = load_config(config_dir() / f"quickstart_{name}.yaml", [f"out={out / name}", *(overrides or [])])
        print(f"[mmfm] {name}: training into {cfg.out}", flush=True)
        records += run_supervised(cfg)
        plots[f"{name} training loss"] = out / name / "plots" / "loss.png"
    write_results(out / "results.json", records)
    write_report(out / "report.md", "mmfm quickstart", records, plots, [
        "classification: tissue type of 32x32 patches (mini/patches2d), ResNet trained from scratch",
        "segmentation: liver and tumour on LiTS axial slices (mini/slices2d), BasicUNet from scratch",
        f"data card: {root / 'card.md'}"])
    write_json_atomic(out / "status.json", {"status": "complete"})
    return records
