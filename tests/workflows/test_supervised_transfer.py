"""A `mmfm train` run as a starting point (STU-Net-style supervised transfer): its task's encoder, with the
preprocessing it was trained on, loads through the same sources as pretraining runs and starts another run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmfm.errors import CheckpointError
from mmfm.workflows.config import load_config
from mmfm.workflows.pretrain import load_encoder
from mmfm.workflows.supervised import load_trained, run_supervised

ROOT = Path(__file__).resolve().parents[2]


def _train(out: Path, *extra: str) -> Path:
    cfg = load_config(ROOT / "configs" / "quickstart_classification.yaml",
                      [f"out={out}", "train.max_steps=2", "train.batch_size=8", "data.eval_splits=[]",
                       "train.progress=false", "calibrate=", *extra])
    run_supervised(cfg)
    return out


@pytest.mark.realdata
def test_a_train_run_is_a_starting_point(mini_root, tmp_path):
    run = _train(tmp_path / "source")
    enc, spec = load_encoder(str(run))
    model, _ = load_trained(run)
    ref = model.encoder.state_dict()
    assert spec["method"] == "resnet_small-supervised[classification]" and spec["spatial_dims"] == 2
    assert all(torch.equal(v, ref[k]) for k, v in enc.state_dict().items())
    assert enc.contract["presets"]["CT"]["name"] == "ct_abdomen" and enc.contract["input_size"] == [32, 32]
    # it starts another run: at lr 0 the second run's encoder is the first's (the head is new)
    second = _train(tmp_path / "second", f"encoder.weights={run}", "optim.lr=0", "optim.warmup_steps=0")
    got, _ = load_trained(second)
    assert all(torch.equal(v, ref[k]) for k, v in got.encoder.state_dict().items() if v.dtype.is_floating_point
               and "running" not in k)


@pytest.mark.realdata
def test_a_run_without_a_registry_encoder_is_refused(mini_root, tmp_path):
    cfg = load_config(ROOT / "configs" / "quickstart_segmentation.yaml",
                      [f"out={tmp_path / 'seg'}", "train.max_steps=1", "train.batch_size=2", "data.eval_splits=[]",
                       "train.progress=false", "data.augment=[]"])
    run_supervised(cfg)
    with pytest.raises(CheckpointError, match="no registry encoder|without a registry encoder"):
        load_encoder(str(tmp_path / "seg"))
