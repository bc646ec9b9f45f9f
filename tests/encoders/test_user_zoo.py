"""Your own checkpoints in the offline zoo: formats recognised by path, SHA-256 recorded and checked on load,
timm ViT weights loaded into mmfm's ViT, files never touched, clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from mmfm.cli.main import main
from mmfm.encoders import zoo
from mmfm.errors import CheckpointError, ConfigError, InputFileError


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MMFM_HOME", str(tmp_path / "home"))
    return tmp_path


def test_timm_vit_checkpoint_is_added_checked_and_loaded(home, capsys):
    import timm

    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(home / "tiny.safetensors"))
    assert zoo.detect_format(home / "tiny.safetensors") == "timm"
    with pytest.raises(ConfigError, match="--architecture"):
        zoo.add_user(home / "tiny.safetensors")
    assert main(["zoo", "add", str(home / "tiny.safetensors"), "--name", "mytiny",
                 "--architecture", "vit_tiny_patch16_224"]) == 0
    entry = json.loads((home / "home" / "zoo" / "user.json").read_text())["mytiny"]
    assert entry["format"] == "timm" and entry["usable"] and len(entry["files"][0]["sha256"]) == 64
    from mmfm.workflows.pretrain import load_encoder

    enc, spec = load_encoder("mytiny")
    assert spec["options"]["dim"] == 192 and spec["options"]["depth"] == 12
    assert torch.equal(enc.state_dict()["blocks.3.attn.qkv.weight"], ref.state_dict()["blocks.3.attn.qkv.weight"])
    assert enc(torch.zeros(1, 1, 64, 64))["tokens"].shape == (1, 16, 192)
    capsys.readouterr()
    assert main(["zoo", "list"]) == 0 and "mytiny" in capsys.readouterr().out
    # a changed file is refused; `remove` forgets the entry and leaves the file
    save_file({"x": torch.zeros(1)}, str(home / "tiny.safetensors"))
    with pytest.raises(CheckpointError, match="changed since it was added"):
        load_encoder("mytiny")
    assert main(["zoo", "remove", "mytiny"]) == 0
    assert (home / "tiny.safetensors").exists() and "mytiny" not in zoo.user_entries()


def test_mmfm_encoder_folder_and_recorded_only_formats(home):
    from mmfm.encoders.base import build_encoder
    from mmfm.workflows.pretrain import load_encoder

    folder = home / "enc"
    folder.mkdir()
    enc = build_encoder("vit_micro", spatial_dims=2, in_channels=1)
    save_file(enc.state_dict(), str(folder / "encoder.safetensors"))
    (folder / "encoder.json").write_text(json.dumps({"name": "vit_micro", "options": {}, "spatial_dims": 2,
                                                     "in_channels": 1}))
    assert zoo.add_user(folder, "mine")["format"] == "mmfm-encoder"
    got, _ = load_encoder("mine")
    assert torch.equal(got.state_dict()["patch_embed.weight"], enc.state_dict()["patch_embed.weight"])
    bundle = home / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    (bundle / "configs" / "metadata.json").write_text("{}")
    torch.save({"w": torch.zeros(2)}, bundle / "models" / "model.pt")
    e = zoo.add_user(bundle, "mybundle")
    assert e["format"] == "monai-bundle" and not e["usable"] and "cannot build" in e["note"]
    with pytest.raises(ConfigError, match="monai-bundle"):
        load_encoder("mybundle")


def test_user_zoo_errors(home, capsys):
    with pytest.raises(InputFileError, match="no such file"):
        zoo.add_user(home / "nothing")
    (home / "notes.txt").write_text("x")
    with pytest.raises(InputFileError, match="not a checkpoint"):
        zoo.add_user(home / "notes.txt")
    save_file({"a": torch.zeros(1)}, str(home / "litemedsam.safetensors"))
    with pytest.raises(ConfigError, match="packaged model"):
        zoo.add_user(home / "litemedsam.safetensors")
    assert main(["zoo", "remove", "ghost"]) == 2
    assert "unknown user zoo model" in capsys.readouterr().err
