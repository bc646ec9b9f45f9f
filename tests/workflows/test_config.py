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


# -- every option is checked against its factory (a typo is an error with a hint, never silently ignored) --------
@pytest.mark.parametrize("override, match", [
    ("objective.mask_raito=0.5", "did you mean 'mask_ratio'"),
    ("encoder.patch_szie=8", "did you mean 'patch_size'"),
    ("objective.masking_options={blok: 2}", "did you mean 'block'"),
])
def test_option_typos_are_refused_before_training(override, match, tmp_path, mini_root):
    from mmfm.workflows.pretrain import run_pretrain

    path = Path(__file__).resolve().parents[2] / "configs" / "pretrain" / "mae_2d.yaml"
    over = [override, "objective.masking=block" if "blok" in override else "train.max_steps=1", f"out={tmp_path}"]
    with pytest.raises(ConfigError, match=match):
        run_pretrain(load_config(path, over))
    assert not (tmp_path / "checkpoints").exists()


def test_task_and_text_encoder_and_loader_typos_are_refused(tmp_path):
    from mmfm.data.catalog import load_dataset
    from mmfm.encoders.text import build_text_encoder
    from mmfm.tasks import TASKS

    with pytest.raises(ConfigError, match="did you mean 'freeze_encoder'"):
        TASKS.build_with("classification", {"freeze_encodr": True},
                         {"encoder": {"name": "resnet_tiny"}, "num_classes": 2, "spatial_dims": 2, "in_channels": 1})
    with pytest.raises(ConfigError, match="unknown option"):
        build_text_encoder("bert_tiny", dim=64)
    np_file = tmp_path / "x.npz"
    np_file.write_bytes(b"")
    with pytest.raises(ConfigError, match="did you mean 'modality'"):
        load_dataset("MMR-ChestXray", np_file, modalty="XR")


def test_every_registered_factory_lists_its_options():
    """The registries refuse factories with **kwargs, which is what makes typos detectable."""
    from mmfm.registry import Registry

    reg = Registry("thing")
    with pytest.raises(TypeError, match="no \\*\\*kwargs"):
        reg.register("loose")(lambda a=1, **kw: None)


@pytest.mark.parametrize("value", ["bf61", "fp8", "float32"])
def test_precision_is_validated(value):
    from mmfm.engine.trainer import TrainConfig, check_train_config

    with pytest.raises(ConfigError, match="train.precision"):
        check_train_config(TrainConfig(precision=value))
    check_train_config(TrainConfig(precision="bf16"))


@pytest.mark.parametrize("opts, match", [({"mask_ratio": 1.5}, "between 0 and 1"),
                                         ({"mask_ratio": 0.0}, "between 0 and 1")])
def test_mask_ratio_out_of_range_is_a_config_error(opts, match):
    from mmfm.encoders import build_encoder
    from mmfm.objectives import build_objective

    with pytest.raises(ConfigError, match=match):
        build_objective("mae", build_encoder("vit_micro", spatial_dims=2, in_channels=1), **opts)
