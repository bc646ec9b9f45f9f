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


def test_open_clip_folder_image_tower_is_loaded_and_matches_open_clip(home):
    """An open_clip folder (open_clip_config.json + weights) becomes an mmfm encoder: the image tower only, with
    open_clip's own weights; its tokens equal open_clip's (output_tokens) on the same normalised input."""
    import open_clip

    from mmfm.workflows.pretrain import load_encoder

    cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 4, "width": 32, "patch_size": 8,
                                           "head_width": 16},
           "text_cfg": {"context_length": 8, "vocab_size": 50, "width": 16, "heads": 2, "layers": 1}}
    torch.manual_seed(0)
    ref = open_clip.CLIP(**cfg).eval()
    folder = home / "myclip"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    entry = zoo.add_user(folder, "myclip")
    assert entry["format"] == "open_clip" and entry["usable"] and "note" not in entry
    enc, spec = load_encoder("myclip")
    assert spec["name"] == "open_clip_tower" and enc.out_dim == 32 and enc.spatial_dims == 2
    x = torch.rand(2, 1, 40, 40)                          # grey, another size: repeated to RGB, resized
    with torch.no_grad():
        got = enc(x)
        rgb = torch.nn.functional.interpolate(x.expand(-1, 3, -1, -1), size=(32, 32), mode="bilinear")
        norm = (rgb - torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)) / \
            torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
        ref.visual.output_tokens = True
        _, tokens = ref.visual(norm)
    assert got["tokens"].shape == (2, 16, 32)
    torch.testing.assert_close(got["tokens"], tokens, rtol=1e-5, atol=1e-5)
    levels = enc.pyramid(x)                                # patch 8: 3 levels on the 4x4 grid
    assert [tuple(t.shape) for t in levels] == [(2, 32, 4, 4)] * 3
    # the architecture alone (how a fine-tuned run is rebuilt) and a mismatching checkpoint
    from mmfm.encoders.base import build_encoder

    assert build_encoder("open_clip_tower", spatial_dims=2, in_channels=1, folder=str(folder)).out_dim == 32
    cfg["vision_cfg"]["width"] = 64
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    from mmfm.encoders.open_clip_tower import load_tower

    with pytest.raises(CheckpointError, match="do not match"):
        load_tower(folder, dict(ref.state_dict()))
