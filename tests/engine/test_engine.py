"""Engine: schedule, checkpoints, exact resume after a hard kill, gradient accumulation, 2-process DDP (gloo)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmfm.engine.checkpoint import load_checkpoint, save_checkpoint
from mmfm.engine.trainer import OptimConfig, lr_factor
from tests.torchrun import failure
from tests.torchrun import torchrun as launch

SCRIPT = str(Path(__file__).with_name("train_script.py"))
ROOT = str(Path(__file__).resolve().parents[2])


def _run(args, env_extra=None, torchrun=False, timeout=300):
    if torchrun:
        return launch([SCRIPT, *args], env=env_extra, timeout=timeout)
    env = {**os.environ, "PYTHONPATH": ROOT, **(env_extra or {})}
    return subprocess.run([sys.executable, SCRIPT, *args], env=env, capture_output=True, text=True, timeout=timeout)


def _losses(run):
    return [json.loads(ln)["loss"] for ln in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def _weights(run):
    return load_file(str(Path(run) / "checkpoints" / "last" / "model.safetensors"))


def test_warmup_then_cosine():
    cfg = OptimConfig(warmup_steps=4, schedule="cosine", min_lr_ratio=0.1)
    f = [lr_factor(s, cfg, 20) for s in range(20)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0]
    assert f[4] == pytest.approx(1.0) and f[-1] > 0.1 and all(a >= b for a, b in zip(f[4:], f[5:]))
    assert lr_factor(10**6, cfg, 20) == pytest.approx(0.1)


def test_checkpoint_roundtrip_restores_optimizer_and_rng(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    torch.manual_seed(5)
    save_checkpoint(tmp_path / "ck", model, opt, {"step": 7})
    expected = torch.rand(3)
    model2 = torch.nn.Linear(3, 2)
    opt2 = torch.optim.AdamW(model2.parameters(), lr=0.1)
    state = load_checkpoint(tmp_path / "ck", model2, opt2)
    assert state["step"] == 7
    assert torch.equal(model.weight, model2.weight)
    assert torch.equal(opt.state_dict()["state"][0]["exp_avg"], opt2.state_dict()["state"][0]["exp_avg"])
    assert torch.equal(torch.rand(3), expected)  # RNG restored to the checkpoint's state
    assert not (tmp_path / "ck.tmp").exists()


@pytest.mark.bf16  # fp32 pinned: must hold with auto on a bf16 machine too
def test_killed_run_resumes_to_identical_weights(tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert _run([str(full), "8", "--dropout"]).returncode == 0
    r = _run([str(cut), "8", "--dropout", "--crash-after-step", "6"])
    assert r.returncode == 137  # hard kill after step 6; the last checkpoint is at step 4
    assert json.loads((cut / "checkpoints" / "last" / "state.json").read_text())["step"] == 4
    r = _run([str(cut), "8", "--dropout"])
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stdout
    a, b = _weights(full), _weights(cut)
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(x)["step"] for x in (cut / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13))  # no step logged twice


@pytest.mark.long
def test_resume_refuses_other_config(tmp_path):
    assert _run([str(tmp_path), "8"]).returncode == 0
    r = _run([str(tmp_path), "4"])
    assert r.returncode != 0 and "another configuration" in r.stderr


@pytest.mark.long
@pytest.mark.bf16  # fp32 pinned: must hold with auto on a bf16 machine too
def test_grad_accumulation_equals_bigger_batch(tmp_path):
    assert _run([str(tmp_path / "big"), "16"]).returncode == 0
    assert _run([str(tmp_path / "acc"), "8", "--accum", "2"]).returncode == 0
    # the same 16 samples per optimiser step either way (data order is by global position)
    a, b = _weights(tmp_path / "big"), _weights(tmp_path / "acc")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


@pytest.mark.bf16  # fp32 pinned: must hold with auto on a bf16 machine too
def test_two_process_ddp_matches_single_process(tmp_path):
    """A BatchNorm model: with SyncBatchNorm, 2 processes x 8 samples == 1 process x 16 samples, weights and BN
    statistics alike; the logged loss is the mean over both processes, not rank 0's alone."""
    assert _run([str(tmp_path / "single"), "16", "--bn"]).returncode == 0
    r = _run([str(tmp_path / "ddp"), "8", "--bn"], torchrun=True)
    assert r.returncode == 0, failure(r)
    a, b = _weights(tmp_path / "single"), _weights(tmp_path / "ddp")
    assert any("running_mean" in k for k in a)
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a), [
        k for k in a if not torch.allclose(a[k].float(), b[k].float(), atol=1e-5)]
    assert _losses(tmp_path / "single") == pytest.approx(_losses(tmp_path / "ddp"), abs=1e-5)
    shutil.rmtree(tmp_path)


@pytest.mark.long
def test_diverging_loss_on_one_rank_stops_every_rank_cleanly(tmp_path):
    r = _run([str(tmp_path / "ddp"), "8", "--nan-on-rank", "1", "--nan-at-step", "3"], torchrun=True, timeout=180)
    assert r.returncode != 0
    assert r.stderr.count("mmfm: error: the loss became nan at step 3 on at least one process") == 2  # both ranks
    assert "mmfm/engine" not in r.stderr  # no traceback from mmfm's code (torchrun prints its own summary)


@pytest.mark.long
def test_kill_between_the_checkpoint_renames_resumes_from_the_previous_one(tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert _run([str(full), "8", "--dropout"]).returncode == 0
    r = _run([str(cut), "8", "--dropout", "--crash-in-save"])
    assert r.returncode == 137  # killed while saving step 8: last/ moved to last.old/, the new one not in place
    ck = cut / "checkpoints"
    assert not (ck / "last").exists() and (ck / "last.old").exists()
    r = _run([str(cut), "8", "--dropout"])
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stdout and "from step 4" in r.stdout
    assert _losses(cut) == _losses(full)  # metrics.jsonl kept the first steps and is whole again
    a, b = _weights(full), _weights(cut)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_with_shared_modules(tmp_path):
    class Shared(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = torch.nn.Linear(3, 3)
            self.parts = torch.nn.ModuleDict({"a": torch.nn.Sequential(self.encoder),
                                              "b": torch.nn.Sequential(self.encoder)})

    m = Shared()
    save_checkpoint(tmp_path / "ck", m, state={"step": 1})
    m2 = Shared()
    load_checkpoint(tmp_path / "ck", m2)
    assert torch.equal(m2.parts["b"][0].weight, m.encoder.weight) and m2.parts["a"][0] is m2.encoder


@pytest.mark.long
def test_thread_count_changes_results_only_within_tolerance(tmp_path):
    """What the README promises: same thread count -> bit-exact; another thread count -> the same weights within
    1e-3 after 12 steps (floating-point reductions in another order), not bit-exact necessarily."""
    one = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    two = {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    for name, env in (("t1", one), ("t1b", one), ("t2", two)):
        assert _run([str(tmp_path / name), "8", "--bn"], env).returncode == 0
    a, a2, b = _weights(tmp_path / "t1"), _weights(tmp_path / "t1b"), _weights(tmp_path / "t2")
    assert all(torch.equal(a[k], a2[k]) for k in a)
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-3) for k in a)


def test_loader_workers_give_the_same_batches_in_the_same_order(tmp_path):
    """DataLoader workers load ahead; the order is still the pure function of (seed, epoch, rank) that exact resume
    relies on, and a resumed loader starts at the step it is given."""
    from torch.utils.data import DataLoader, default_collate

    from mmfm.data.datasets import ArrayDataset
    from mmfm.engine.trainer import TrainConfig, Trainer, _Fetch, _StepBatches, num_workers

    ds = ArrayDataset(torch.arange(40, dtype=torch.float32).view(40, 1, 1, 1).numpy(), torch.zeros(40).numpy())
    t = Trainer(torch.nn.Linear(1, 1), ds, TrainConfig(max_steps=7, batch_size=4, grad_accum=2, progress=False),
                OptimConfig(), tmp_path)

    def batches(workers, start=0):
        loader = DataLoader(_Fetch(ds, default_collate), sampler=_StepBatches(t, start), batch_size=None,
                            num_workers=workers)
        return [b["image"].flatten().tolist() for b in loader]

    serial = batches(0)
    assert len(serial) == 14 and serial == batches(2)
    assert serial == [t.batch_indices(s, m) for s in range(7) for m in range(2)]
    assert batches(2, start=3) == serial[6:]
    assert num_workers(TrainConfig(), ds) == 0  # in-memory arrays: no workers by default
