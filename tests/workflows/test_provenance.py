"""Every results record says where it came from (commit, date, torch, device, CPU flags, precision), and a
calibration split the model trains on is refused before anything is trained or written."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import torch

from mmfm.cli.main import main
from mmfm.engine.precision import cpu_flags, cpu_has_native_bf16
from mmfm.errors import ConfigError
from mmfm.evaluation.results import ResultRecord, read_results, write_results
from mmfm.trust.temperature import check_held_out
from mmfm.workflows.provenance import provenance, trained_precision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from userdata import write_labelled_folder  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def test_the_block_names_this_checkout_this_machine_and_now():
    from mmfm.workflows.provenance import git_commit

    git_commit.cache_clear()   # read once per process (the code a process runs); HEAD may have moved since
    p = provenance()
    if _git("rev-parse", "--is-inside-work-tree") == "true":
        assert p["commit"] == _git("rev-parse", "HEAD") and isinstance(p["uncommitted_changes"], bool)
    assert abs(datetime.fromisoformat(p["date"]) - datetime.now(timezone.utc)) < timedelta(minutes=5)
    assert p["torch"] == torch.__version__
    assert p["device"].startswith("cuda: " if torch.cuda.is_available() else "cpu: ")
    assert set(p["cpu_flags"]) <= cpu_flags()          # the engine's reading of /proc/cpuinfo, filtered
    assert ("avx512_bf16" in p["cpu_flags"]) == ("avx512_bf16" in cpu_flags())
    assert p["native_bf16"] == cpu_has_native_bf16()
    assert p["precision"] == {"train": None, "evaluation": "fp32"}     # nothing trained
    assert provenance(train_precision="bf16")["precision"]["train"] == "bf16"


def test_trained_precision_is_read_from_the_runs_checkpoint(tmp_path):
    assert trained_precision(tmp_path) is None and trained_precision(None) is None
    state = tmp_path / "checkpoints" / "last" / "state.json"
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"run_info": {"precision": {"requested": "auto", "used": "bf16", "why": "x"}}}))
    assert trained_precision(tmp_path) == "bf16" and provenance(tmp_path)["precision"]["train"] == "bf16"
    state.write_text("{not json")
    assert trained_precision(tmp_path) is None


def test_write_results_stamps_records_without_their_own(tmp_path):
    own = {"commit": "abc", "precision": {"train": "fp32"}}
    recs = [ResultRecord("t", "d", "test", "m", "accuracy", 0.5, 0), ResultRecord("t", "d", "test", "m", "auroc",
                                                                                 0.7, 0, provenance=own)]
    write_results(tmp_path / "results.json", recs, provenance())
    back = read_results(tmp_path / "results.json")
    assert back[0].provenance["torch"] == torch.__version__ and back[1].provenance == own
    assert recs[0].provenance == back[0].provenance    # the caller's records carry it on (quickstart gathers them)


def test_a_training_run_records_its_precision_and_calibration_on_a_trained_split_is_refused(tmp_path, capsys):
    lab = write_labelled_folder(tmp_path / "lab", n_per_class=8)
    common = ["train", "configs/quickstart_classification.yaml", "data.dataset=folder", f"data.root={lab}",
              "data.size=[24,24]", "encoder.name=vit_micro", "train.max_steps=2", "train.batch_size=4",
              "train.progress=false"]
    refused = tmp_path / "refused"
    assert main([*common, "data.train_split=train+val", "data.eval_splits=[test]", f"out={refused}"]) == 2
    err = capsys.readouterr().err
    assert "calibrate=val" in err and "trains on that split" in err and "Traceback" not in err
    assert not refused.exists()                                       # refused before anything was written
    run = tmp_path / "run"
    assert main([*common, "data.train_split=train+val", "data.eval_splits=[test]", "calibrate=",
                 "train.precision=fp32", f"out={run}"]) == 0
    recs = json.loads((run / "results.json").read_text())
    assert recs and all(r["provenance"]["precision"] == {"train": "fp32", "evaluation": "fp32"} for r in recs)
    assert all(r["provenance"]["torch"] == torch.__version__ for r in recs)
    assert not (run / "calibration.json").exists()


@pytest.mark.parametrize("split, train_split", [("val", "train+val"), ("train", "train"), ("val", "val")])
def test_check_held_out_refuses_trained_splits(split, train_split):
    with pytest.raises(ConfigError, match="trains on that split"):
        check_held_out(split, train_split)


@pytest.mark.parametrize("split, train_split", [("val", "train"), ("", "train+val"), (None, "train+val"),
                                                ("test", "train+val")])
def test_check_held_out_passes_held_out_or_no_calibration(split, train_split):
    check_held_out(split, train_split)
