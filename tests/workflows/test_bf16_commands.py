"""Every command that trains, run with ``train.precision=bf16`` (what ``auto`` takes on a CPU with bf16 units or a
recent GPU; emulated here where the CPU has none), end to end through the CLI on tiny budgets: pretraining of each
objective family (masked image, contrastive, image-text, report text), the vision-language tasks, federated and
continual learning; then the inference commands (explain) on a model trained in bf16. Each run must finish, record
the precision it used, and give finite metrics. (The task x {full, frozen, peft, dp} matrix, with its own bf16
cells, is tests/workflows/test_combination_matrix.py; the loss-level checks are tests/engine/test_bf16.py.)
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from mmfm.cli.main import main

pytestmark = [pytest.mark.bf16, pytest.mark.realdata]
ROOT = Path(__file__).resolve().parents[2]
BF16 = ["train.precision=bf16", "train.max_steps=2", "train.progress=false", "train.batch_size=8",
        "train.ckpt_every=2"]


def _precision(run: Path) -> dict:
    return json.loads((run / "checkpoints" / "last" / "state.json").read_text())["run_info"]["precision"]


def _finite_results(run: Path) -> list[dict]:
    recs = json.loads((run / "results.json").read_text())
    recs = recs["records"] if isinstance(recs, dict) else recs
    values = [r["value"] for r in recs if isinstance(r.get("value"), (int, float))]
    assert values and all(math.isfinite(v) for v in values)
    return recs


@pytest.mark.parametrize("config,extra", [
    ("pretrain/mae_2d.yaml", []),
    ("pretrain/simclr_3d.yaml", ["encoder.name=resnet_tiny"]),
    ("pretrain/clip_2d.yaml", ["encoder.name=resnet_tiny", "text_encoder.name=bert_tiny"]),
    ("pretrain/rsm_minilm.yaml", ["text_encoder.name=bert_tiny", "objective.max_length=32"]),
], ids=["mae", "simclr-3d", "clip", "rsm"])
def test_pretraining_runs_in_bf16(config, extra, mini_root, tmp_path):
    run = tmp_path / "run"
    assert main(["pretrain", str(ROOT / "configs" / config), *BF16, *extra, f"data.root={mini_root}",
                 f"out={run}"]) == 0
    assert _precision(run)["used"] == "bf16"
    losses = [json.loads(ln)["loss"] for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert losses and all(math.isfinite(v) for v in losses)


def test_report_generation_and_vqa_run_in_bf16(mini_root, tmp_path):
    rg, vqa = tmp_path / "rg", tmp_path / "vqa"
    assert main(["report-gen", str(ROOT / "configs/report_generation_2d.yaml"), *BF16, "encoder.name=resnet_tiny",
                 "task.max_len=8", "data.eval_splits=[test]", f"data.root={mini_root}", f"out={rg}"]) == 0
    assert main(["vqa", str(ROOT / "configs/vqa_2d.yaml"), *BF16, "encoder.name=resnet_tiny",
                 "text_encoder.name=bert_tiny", "data.eval_splits=[test]", f"data.root={mini_root}",
                 f"out={vqa}"]) == 0
    for run in (rg, vqa):
        assert _precision(run)["used"] == "bf16"
        _finite_results(run)


def test_federated_simulation_runs_in_bf16(mini_root, tmp_path):
    out = tmp_path / "fed"
    assert main(["federate", "simulate", str(ROOT / "configs/federated_classification.yaml"),
                 f"data.root={mini_root}", "encoder.name=resnet_tiny", "train.batch_size=8", "train.precision=bf16",
                 "train.progress=false", "data.eval_splits=[test]", "federate.rounds=1", "federate.local_steps=2",
                 f"out={out}"]) == 0
    _finite_results(out)


@pytest.mark.slow
def test_continual_runs_in_bf16(mini_root, tmp_path):
    out = tmp_path / "moe"
    assert main(["continual", str(ROOT / "configs/continual_mini.yaml"), f"data.root={mini_root}",
                 "continual.steps_per_task=2", "train.batch_size=8", "encoder.name=vit_micro",
                 "train.precision=bf16", f"out={out}"]) == 0
    rec = json.loads((out / "continual.json").read_text())
    assert len(rec["matrix"]) == 3


def test_a_bf16_trained_classifier_explains(mini_root, tmp_path):
    import nibabel as nib

    run = tmp_path / "run"
    assert main(["train", str(ROOT / "configs/quickstart_classification.yaml"), *BF16, "encoder.name=resnet_tiny",
                 f"data.root={mini_root}", "data.eval_splits=[test]", f"out={run}"]) == 0
    assert _precision(run)["used"] == "bf16"
    patches = np.load(mini_root / "patches2d.npz")
    img = tmp_path / "patch.nii.gz"
    nib.save(nib.Nifti1Image(patches["image"][0, 0][:, :, None].astype(np.float32), np.eye(4)), img)
    out = tmp_path / "why"
    assert main(["explain", str(img), "--model", str(run), "--out", str(out)]) == 0
    maps = json.loads((out / "explain.json").read_text())["maps"]
    assert "gradcam" in maps
    g = np.asarray(nib.load(out / "gradcam.nii.gz").dataobj)
    assert np.isfinite(g).all() and g.max() > 0
