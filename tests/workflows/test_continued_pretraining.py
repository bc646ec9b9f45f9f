"""Continued (domain-adaptive) pretraining: `mmfm pretrain CONFIG encoder.weights=SOURCE` starts the objective's
encoder from SOURCE's weights (LiteMedSAM's packaged encoder, or an earlier pretrain run) and records where it
started in encoder.json. With a learning rate of 0 the weights after training are the starting weights, so any
other initialisation would show."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from mmfm.cli.main import main
from mmfm.workflows.pretrain import load_encoder

FROZEN = ["optim.lr=0", "optim.weight_decay=0", "optim.warmup_steps=0"]   # AdamW then leaves weights unchanged


def _pretrain(mini_root, out, *extra: str) -> int:
    return main(["pretrain", "configs/pretrain/simclr_2d.yaml", f"out={out}", f"data.root={mini_root}",
                 "train.max_steps=3", "train.batch_size=4", "train.progress=false", *extra])


def _params(enc: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Trainable weights (BatchNorm running statistics move in train mode even at lr 0)."""
    return {k: v.detach().float() for k, v in enc.named_parameters()}


@pytest.mark.realdata
@pytest.mark.slow
def test_continued_from_litemedsam_starts_from_its_weights_and_says_so(mini_root, tmp_path):
    out = tmp_path / "cont"
    assert _pretrain(mini_root, out, "encoder.weights=litemedsam:input_size=64", *FROZEN) == 0
    spec = json.loads((out / "encoder" / "encoder.json").read_text())
    assert spec["name"] == "litemedsam" and spec["options"] == {"input_size": 64, "pretrained": False}
    assert spec["started_from"] == {"source": "litemedsam:input_size=64",
                                    "method": "litemedsam-pretrained[input_size=64]"}
    assert spec["method"] == "litemedsam-pretrained[input_size=64]+simclr[continued]"
    ref, _ = load_encoder("litemedsam:input_size=64")
    saved = load_file(str(out / "encoder" / "encoder.safetensors"))
    want = _params(ref)
    assert set(want) <= set(saved)
    assert all(torch.equal(saved[k].float(), v) for k, v in want.items())
    # the run reloads as an encoder (options without the package's weights, then its own)
    again, _ = load_encoder(str(out))
    assert all(torch.equal(a, want[k]) for k, a in _params(again).items())


@pytest.mark.realdata
def test_continued_from_a_pretrain_run_and_refusals(mini_root, tmp_path):
    first = tmp_path / "first"
    assert _pretrain(mini_root, first, "encoder.name=vit_micro") == 0
    start, start_spec = load_encoder(str(first))
    second = tmp_path / "second"
    assert _pretrain(mini_root, second, f"encoder.weights={first}", *FROZEN) == 0
    spec = json.loads((second / "encoder" / "encoder.json").read_text())
    assert spec["name"] == "vit_micro"
    assert spec["started_from"]["source"] == str(first)
    assert spec["started_from"]["method"] == start_spec["method"] == "vit_micro-simclr"
    assert spec["started_from"]["steps"] == 3
    cont, _ = load_encoder(str(second))
    assert all(torch.equal(v, _params(start)[k]) for k, v in _params(cont).items())
    # and it did train: with a learning rate the weights move away from the start
    third = tmp_path / "third"
    assert _pretrain(mini_root, third, f"encoder.weights={first}") == 0
    moved, _ = load_encoder(str(third))
    assert any(not torch.equal(v, _params(start)[k]) for k, v in _params(moved).items())
    # MAE needs a ViT patch grid: LiteMedSAM's TinyViT cannot drop tokens -> one-line ConfigError, exit 2
    assert main(["pretrain", "configs/pretrain/mae_2d.yaml", f"out={tmp_path / 'mae'}", f"data.root={mini_root}",
                 "encoder.weights=litemedsam:input_size=64", "train.max_steps=1"]) == 2
    # a 2D encoder on 3D crops
    assert main(["pretrain", "configs/pretrain/simclr_3d.yaml", f"out={tmp_path / 'c3d'}", f"data.root={mini_root}",
                 f"encoder.weights={first}", "train.max_steps=1"]) == 2
