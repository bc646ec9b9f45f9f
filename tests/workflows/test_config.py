"""Typed config: YAML + overrides; typos and wrong types are refused with a hint."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmfm.errors import ConfigError
from mmfm.workflows.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads(path):
    from mmfm.encoders import ENCODERS
    from mmfm.encoders.text import TEXT_ENCODERS
    from mmfm.objectives import OBJECTIVES
    from mmfm.tasks import TASKS

    cfg = load_config(path)
    assert cfg.task["name"] in TASKS
    assert cfg.encoder["name"] in ENCODERS and cfg.text_encoder["name"] in TEXT_ENCODERS
    if path.parent.name == "pretrain":
        assert cfg.objective["name"] in OBJECTIVES


def test_overrides_and_types(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train: {max_steps: 5}\ndata: {set: slices2d}\n")
    cfg = load_config(p, ["train.max_steps=7", "optim.lr=1e-2", "data.eval_splits=[test]", "out=x"])
    assert cfg.train.max_steps == 7 and cfg.optim.lr == 0.01 and cfg.data.eval_splits == ["test"]
    assert cfg.data.set == "slices2d" and cfg.out == "x"


def test_typo_and_type_errors(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'train.max_steps'"):
        load_config(overrides=["train.max_step=3"])
    with pytest.raises(ConfigError, match="expected int"):
        load_config(overrides=["train.max_steps=abc"])
    with pytest.raises(ConfigError, match="no '='"):
        load_config(overrides=["train.max_steps"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["mae_3d", "simclr_3d", "voco_3d", "dae_3d"])
def test_3d_pretrain_recipes_run(mini_root, tmp_path, name):
    from mmfm.workflows.pretrain import load_encoder, run_pretrain

    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "pretrain" / f"{name}.yaml",
                      [f"out={tmp_path}", "train.max_steps=1", "train.batch_size=2", "train.progress=false"])
    run_pretrain(cfg)
    enc, spec = load_encoder(str(tmp_path))
    assert spec["spatial_dims"] == 3 and enc.spatial_dims == 3
