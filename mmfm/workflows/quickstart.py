"""`mmfm quickstart`: prepare mini if needed, train the supervised baselines, write results and a report."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from mmfm.data.sources.mini import build_mini
from mmfm.evaluation.claims import pretraining_headline
from mmfm.evaluation.report import write_report
from mmfm.evaluation.results import ResultRecord, write_json_atomic, write_results
from mmfm.workflows.config import DataConfig, load_config
from mmfm.workflows.evaluate import evaluate_encoders
from mmfm.workflows.pretrain import run_pretrain
from mmfm.workflows.provenance import provenance
from mmfm.workflows.supervised import run_supervised

log = logging.getLogger(__name__)

SEEDS = (0, 1, 2)
# the packaged foundation encoder: 32 x 32 patches run on a 64 x 64 grid (its 256 x 256 contract would spend 64x the
# compute on interpolated pixels; see mmfm/encoders/litemedsam.py)
FOUNDATION = "litemedsam:input_size=64"


def config_dir() -> Path:
    """The recipes folder: $MMFM_CONFIGS, else ``configs/`` of the source tree."""
    return Path(os.environ.get("MMFM_CONFIGS", Path(__file__).resolve().parents[2] / "configs"))


def _set_aside_finished(out: Path) -> None:
    """A finished quickstart from another mmfm version would block resuming: move it aside, never delete it."""
    if (out / "status.json").exists():
        old = out.with_name(out.name + time.strftime(".previous-%Y%m%d-%H%M%S"))
        out.rename(old)
        log.info(f"moved the finished previous quickstart to {old}")


def quickstart(out: str | Path = "runs/quickstart", overrides: list[str] | None = None,
               max_per_split: int | None = None) -> list[ResultRecord]:
    """mmfm's main job on the built-in corpus (see `mmfm quickstart --help`); ``max_per_split`` caps the patches
    per split of the label-efficiency comparison (a stratified subset; default all)."""
    out = Path(out)
    _set_aside_finished(out)
    root = build_mini()
    log.info(f"mini corpus: {root} (data card: {root / 'card.md'})")
    records: list[ResultRecord] = []
    plots = {}
    for name in ("classification", "segmentation"):  # supervised baselines
        cfg = load_config(config_dir() / f"quickstart_{name}.yaml", [f"out={out / name}", *(overrides or [])])
        log.info(f"{name}: training into {cfg.out}")
        records += run_supervised(cfg)
        plots[f"{name} training loss"] = out / name / "plots" / "loss.png"
    # mmfm's own pretraining, once per seed: the spread below covers pretraining, initialisation and label sampling
    for seed in SEEDS:
        cfg = load_config(config_dir() / "quickstart_pretrain.yaml",
                          [*(overrides or []), f"out={out / 'pretrain' / f'seed{seed}'}", f"train.seed={seed}"])
        log.info(f"pretraining ({cfg.objective['name']}, {cfg.encoder['name']}, seed {seed}): {cfg.out}")
        run_pretrain(cfg)
    plots["pretraining loss (seed 0)"] = out / "pretrain" / "seed0" / "plots" / "loss.png"
    log.info("label efficiency: linear probe of random init, mmfm's pretraining and LiteMedSAM's encoder")
    records += evaluate_encoders([f"random:{cfg.encoder['name']}", str(out / "pretrain" / "seed{seed}"), FOUNDATION],
                                 ["linear"], DataConfig(set="patches2d", label="tissue", root=cfg.data.root),
                                 [0.01, 0.1, 1.0], list(SEEDS), out / "label_efficiency",
                                 max_per_split=max_per_split, seeded_init=True, record_val=True)
    plots["label efficiency"] = out / "label_efficiency" / "plots" / "label_efficiency.png"
    headline = pretraining_headline(records)
    write_results(out / "results.json", records, provenance(out))
    write_report(out / "report.md", "mmfm quickstart", records, plots, [
        "classification: tissue type of 32x32 patches (mini/patches2d), ResNet trained from scratch",
        "segmentation: liver and tumour on LiTS axial slices (mini/slices2d), BasicUNet from scratch, trained on "
        "the train and val slabs with augmentation, tested on the test slab (docs/downstream.md says why)",
        f"pretraining: {cfg.objective['name']} on the unlabelled training patches ({cfg.encoder['name']}, "
        f"{cfg.train.max_steps} steps, seeds {list(SEEDS)}; chosen on the validation split by "
        "scripts/select_quickstart.py, docs/vision_pretraining.md)",
        f"label efficiency: linear probe at 1%, 10% and 100% of the labels; seed s pretrains (or initialises) the "
        f"encoder and draws the labels, so the sd covers all three; {FOUNDATION} is LiteMedSAM's packaged image "
        "encoder (MedSAM, 1.5 M image-mask pairs) on a 64 x 64 grid (label_efficiency/report.md)",
        f"data card: {root / 'card.md'}"], summary=headline)
    log.info(headline)
    write_json_atomic(out / "status.json", {"status": "complete"})
    return records
