"""The CLI end to end: help texts, data commands, train (with resume) and quickstart on tiny budgets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mmfm.cli.main import main

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args, cwd=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "mmfm.cli.main", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=timeout)


@pytest.mark.parametrize("args", [[], ["data"], ["quickstart"], ["train"], ["data", "inspect"], ["data", "prepare"],
                                  ["zeroshot"], ["retrieve"], ["report-gen"], ["vqa"], ["pretrain"]])
def test_help_explains(args, capsys):
    with pytest.raises(SystemExit) as e:
        main([*args, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: mmfm" in out and len(out) > 200


def test_data_list_and_info(capsys):
    assert main(["data", "list", "--table", "III", "--json"]) == 0
    names = [e["name"] for e in json.loads(capsys.readouterr().out)]
    assert "MIMIC-CXR" in names and "MedNLI" not in names
    assert main(["data", "info", "SLAKE"]) == 0
    assert "vqa_json" in capsys.readouterr().out
    assert main(["data", "info", "SLAK"]) == 2
    assert "did you mean SLAKE" in capsys.readouterr().err


def test_inspect_json(dicom_path, tmp_path, capsys):
    import nibabel as nib
    import numpy as np

    assert main(["data", "inspect", dicom_path("CT_small.dcm"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["modality"] == "CT" and info["shape"] == [1, 128, 128] and info["min"] < -800
    assert {"shape", "spacing", "orientation", "modality", "min", "max"} <= set(info)
    assert "PatientName" not in json.dumps(info) and "PatientID" not in json.dumps(info)
    p = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 5, 6), np.float32), np.diag([2, 2, 3, 1])), p)
    assert main(["data", "inspect", str(p), "--json", "--modality", "MR"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["spacing"] == [2, 2, 3] and info["orientation"] == "RAS" and info["modality"] == "MR"


@pytest.mark.long
@pytest.mark.realdata
def test_train_end_to_end_and_resume(mini_root, tmp_path):
    out = tmp_path / "run"
    args = ["train", "configs/quickstart_classification.yaml", f"out={out}", "train.max_steps=4",
            "train.ckpt_every=2", "train.batch_size=16", "data.eval_splits=[test]"]
    r = _cli(*args)
    assert r.returncode == 0, r.stderr
    results = json.loads((out / "results.json").read_text())
    assert {x["metric"] for x in results} == {"accuracy", "balanced_accuracy", "auroc", "ece", "brier",
                                              "ece_unscaled", "brier_unscaled", "temperature"}
    assert all(x["split"] == "test" and (0 <= x["value"] <= 1 or x["metric"] in ("brier", "brier_unscaled",
                                                                               "temperature")) for x in results)
    for f in ("config.yaml", "metrics.jsonl", "report.md", "report.html", "plots/loss.png", "calibration.json",
              "plots/reliability.png", "checkpoints/last/model.safetensors"):
        assert (out / f).exists(), f
    r = _cli(*args[:-1], "train.max_steps=6", "data.eval_splits=[test]")  # another config into the same dir
    assert r.returncode == 2 and "another configuration" in r.stderr


@pytest.mark.realdata
def test_quickstart_tiny(mini_root, tmp_path):
    out = tmp_path / "qs"
    # the whole main job at 2 steps: three pretraining runs and LiteMedSAM's encoder make it the longest CLI test
    r = _cli("quickstart", "--out", str(out), "--max-per-split", "20", "train.max_steps=2", "train.batch_size=4",
             timeout=1800)
    assert r.returncode == 0, r.stderr
    results = json.loads((out / "results.json").read_text())
    assert {x["task"] for x in results} == {"classification", "segmentation", "classification/linear"}
    assert any(x["metric"] == "dice_liver" for x in results)
    probe = [x for x in results if x["task"] == "classification/linear"]
    assert {x["label_fraction"] for x in probe} == {0.01, 0.1, 1.0}
    # three starting points, each with 3 seeds (pretraining runs, random inits, label draws)
    methods = {x["method"] for x in probe}
    assert len(methods) == 3 and "litemedsam-pretrained[input_size=64]" in methods
    assert sum(m.endswith("-random") for m in methods) == 1
    assert all({x["seed"] for x in probe if x["method"] == m} == {0, 1, 2} for m in methods)
    # every probe below 100% of the labels also scored on validation (at 100% the head is chosen on all of val),
    # and the headline's arms are chosen there, not on test
    assert {(x["method"], x["label_fraction"], x["seed"]) for x in probe if x["split"] == "val"} == {
        (x["method"], x["label_fraction"], x["seed"]) for x in probe if x["split"] == "test"
        and x["label_fraction"] < 1}
    for seed in (0, 1, 2):
        assert (out / "pretrain" / f"seed{seed}" / "encoder" / "encoder.safetensors").exists()
    headline = json.loads((out / "headline.json").read_text())["text"]
    assert "at 1% of the labels" in headline and headline in (out / "report.md").read_text()
    assert "each arm chosen on the validation split" in headline
    assert json.loads((out / "status.json").read_text())["status"] == "complete"


@pytest.mark.realdata
def test_trained_model_reloads_with_its_preprocessing(mini_root, tmp_path):
    import torch

    from mmfm.workflows.config import load_config
    from mmfm.workflows.supervised import build_split, load_trained, run_supervised

    cfg = load_config(ROOT / "configs" / "quickstart_classification.yaml",
                      [f"out={tmp_path}", "train.max_steps=3", "train.batch_size=16", "data.eval_splits=[val]",
                       "train.progress=false"])
    run_supervised(cfg)
    model, state = load_trained(tmp_path)
    pre = state["run_info"]["preprocessing"]
    assert pre["presets"]["CT"]["name"] == "ct_abdomen" and pre["shape"] == [1, 32, 32]
    ds, _ = build_split(cfg.data, "val", "classification")
    probs = model.predict(torch.stack([ds[i]["image"] for i in range(8)]))
    assert probs.shape == (8, 5) and torch.allclose(probs.sum(1), torch.ones(8))


@pytest.mark.realdata
def test_same_seed_same_weights(mini_root, tmp_path):
    from safetensors.torch import load_file

    from mmfm.workflows.config import load_config
    from mmfm.workflows.supervised import run_supervised

    weights = []
    for name in ("a", "b"):
        cfg = load_config(ROOT / "configs" / "quickstart_classification.yaml",
                          [f"out={tmp_path / name}", "train.max_steps=3", "train.batch_size=16",
                           "data.eval_splits=[]", "train.progress=false"])
        run_supervised(cfg)
        weights.append(load_file(str(tmp_path / name / "checkpoints" / "last" / "model.safetensors")))
    assert all(weights[0][k].equal(weights[1][k]) for k in weights[0])


@pytest.mark.long
@pytest.mark.realdata
def test_pretrain_then_evaluate(mini_root, tmp_path):
    run = tmp_path / "mae"
    r = _cli("pretrain", "configs/pretrain/mae_2d.yaml", f"out={run}", "train.max_steps=3", "train.batch_size=16",
             "encoder.name=vit_micro", "train.progress=false")
    assert r.returncode == 0, r.stderr
    assert (run / "encoder" / "encoder.safetensors").exists()
    spec = json.loads((run / "encoder" / "encoder.json").read_text())
    assert spec["name"] == "vit_micro" and spec["objective"]["name"] == "mae"
    assert spec["contract"]["presets"]["CT"]["name"] == "ct_abdomen" and spec["contract"]["input_size"] == [32, 32]
    from mmfm.workflows.pretrain import load_encoder

    assert load_encoder(str(run))[0].contract == spec["contract"]
    out = tmp_path / "eval"
    r = _cli("evaluate", "--encoder", str(run), "random:vit_micro", "--protocol", "linear", "knn", "finetune",
             "--fractions", "0.1", "--seeds", "0", "1", "--finetune-steps", "2", "--out", str(out))
    assert r.returncode == 0, r.stderr
    results = json.loads((out / "results.json").read_text())
    assert {x["method"] for x in results} == {"vit_micro-mae", "vit_micro-random"}
    assert {x["task"] for x in results} == {"classification/linear", "classification/knn", "classification/finetune"}
    summary = json.loads((out / "summary.json").read_text())
    assert all(s["n_seeds"] == 2 for s in summary)
    assert (out / "plots" / "label_efficiency.png").exists() and "± " in (out / "report.md").read_text()


def test_finished_quickstart_is_moved_aside_not_deleted(tmp_path):
    from mmfm.workflows.quickstart import _set_aside_finished

    out = tmp_path / "qs"
    out.mkdir()
    (out / "status.json").write_text('{"status": "complete"}')
    _set_aside_finished(out)
    moved = list(tmp_path.glob("qs.previous-*"))
    assert not out.exists() and len(moved) == 1 and (moved[0] / "status.json").exists()
    unfinished = tmp_path / "u"
    unfinished.mkdir()
    _set_aside_finished(unfinished)  # an unfinished run stays, to be resumed
    assert unfinished.exists()
