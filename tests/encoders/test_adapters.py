"""Parameter-efficient tuning (train.peft): where adapters go, what trains, merge, save/load, resume and DDP."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from mmfm.encoders.adapters import (
    PeftSpec,
    add_adapters,
    has_adapters,
    load_adapter,
    merge_adapters,
    save_adapter,
    target_layers,
)
from mmfm.errors import ConfigError
from mmfm.tasks import TASKS
from tests.engine.test_engine import _run, _weights


def _classifier(encoder: dict, dims: int = 2, size: int = 32):
    torch.manual_seed(0)
    return TASKS.build_with("classification", {}, {"encoder": encoder, "num_classes": 3, "spatial_dims": dims,
                                                   "in_channels": 1, "image_size": [size] * dims,
                                                   "class_names": []}, "task")


def _train_steps(model, x, y, steps=5, lr=0.05):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model.logits(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss.item()


@pytest.mark.parametrize("encoder,dims", [({"name": "vit_mini", "patch_size": 8}, 2), ({"name": "resnet_tiny"}, 2),
                                          ({"name": "vit_mini", "patch_size": 8}, 3),
                                          ({"name": "swin_tiny"}, 2)])
def test_lora_trains_only_adapters_and_the_head_and_merges_to_the_same_function(encoder, dims):
    model = _classifier(encoder, dims, size=32 if dims == 2 else 16)
    x = torch.randn(4, 1, *([32] * dims if dims == 2 else [16] * 3))
    y = torch.tensor([0, 1, 2, 0])
    before_out = model.logits(x).detach()
    base = {k: v.clone() for k, v in model.encoder.named_parameters()}
    info = add_adapters(model, PeftSpec("lora", rank=4))
    assert info["parts"] == ["encoder"] and info["layers"] > 0
    assert 0 < info["fraction"] < 0.5 and info["trainable"] < info["total"]
    # LoRA starts as the identity update (B = 0): the function is unchanged
    assert torch.allclose(model.logits(x), before_out, atol=1e-5)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(("lora_" in n) or n.startswith("head.") for n in trainable) and any("lora_" in n for n in trainable)
    assert {"head.weight", "head.bias"} <= trainable
    _train_steps(model, x, y)
    adapted = model.logits(x).detach()
    assert not torch.allclose(adapted, before_out, atol=1e-4)   # it learned something
    sd = model.state_dict()
    for k, v in base.items():   # the encoder's own weights did not move (peft renames adapted ones base_layer;
        #                         BatchNorm statistics are buffers and follow the adapted features)
        key = "encoder." + k
        key = key if key in sd else key.rsplit(".", 1)[0] + ".base_layer." + key.rsplit(".", 1)[1]
        assert torch.equal(sd[key], v), key
    assert merge_adapters(model) == info["layers"]
    assert not has_adapters(model)
    assert {n for n, _ in model.encoder.named_parameters()} == set(base)   # the original architecture again
    assert torch.allclose(model.logits(x), adapted, atol=1e-4)


def test_adapters_reach_both_towers_of_an_image_text_model_and_litemedsam_encoder_and_decoder():
    from mmfm.encoders import build_encoder
    from mmfm.encoders.dual import DualEncoder
    from mmfm.encoders.text import build_text_encoder
    from mmfm.tasks import promptable as P

    dual = DualEncoder(build_encoder("vit_mini", spatial_dims=2, in_channels=1, patch_size=8),
                       build_text_encoder("bert_tiny"), embed_dim=16)
    info = add_adapters(dual, PeftSpec("lora", rank=2))
    assert info["parts"] == ["image", "text"]
    names = [n for n, p in dual.named_parameters() if p.requires_grad]
    assert any(n.startswith("image.") and "lora_" in n for n in names)
    assert any(n.startswith("text.") and "lora_" in n for n in names)
    assert any(n.startswith("image_proj") or n.startswith("text_proj") for n in names)  # new parts train in full

    task = P.promptable_segmentation(num_classes=2, spatial_dims=2, in_channels=1)   # LiteMedSAM
    prompt_before = [p.requires_grad for p in task.model.prompt_encoder.parameters()]
    info = add_adapters(task, PeftSpec("lora", rank=4, targets=("qkv", "q_proj", "v_proj")))
    assert info["parts"] == ["model.image_encoder", "model.mask_decoder"]
    lora = [n for n, p in task.named_parameters() if p.requires_grad and "lora_" in n]
    assert any(".image_encoder." in n for n in lora) and any(".mask_decoder." in n for n in lora)
    assert [p.requires_grad for p in task.model.prompt_encoder.parameters()] == prompt_before  # not adapted
    assert not any(p.requires_grad for n, p in task.model.mask_decoder.named_parameters() if "lora_" not in n)
    assert info["fraction"] < 0.05


def test_dora_loha_lokr_and_targets_by_name_or_regex():
    for method in ("dora", "loha", "lokr"):
        model = _classifier({"name": "vit_mini", "patch_size": 8})
        x = torch.randn(2, 1, 32, 32)
        ref = model.logits(x).detach()
        info = add_adapters(model, PeftSpec(method, rank=2))
        assert info["layers"] > 0, method
        assert torch.allclose(model.logits(x), ref, atol=1e-4), method   # every method starts at the identity
    model = _classifier({"name": "vit_mini", "patch_size": 8})
    qkv = target_layers(model, PeftSpec("lora", targets=("qkv",)))
    assert qkv and all(n.endswith(".qkv") for n in qkv)
    first = target_layers(model, PeftSpec("lora", targets=(r"re:.*blocks\.0\..*",)))
    assert first and all(".blocks.0." in n for n in first)
    with pytest.raises(ConfigError, match="matches no layer"):
        add_adapters(model, PeftSpec("lora", targets=("no_such_layer",)))
    with pytest.raises(ConfigError, match="lora"):
        add_adapters(model, PeftSpec("lorra"))
    with pytest.raises(ConfigError, match="does not have"):
        add_adapters(model, PeftSpec("lora", modules=("decoder",)))


def test_saved_adapter_alone_restores_the_tuned_model(tmp_path):
    model = _classifier({"name": "vit_mini", "patch_size": 8})
    info = add_adapters(model, PeftSpec("lora", rank=4))
    x, y = torch.randn(4, 1, 32, 32), torch.tensor([0, 1, 2, 0])
    _train_steps(model, x, y)
    save_adapter(model, info, tmp_path / "adapter")
    saved = load_file(str(tmp_path / "adapter" / "adapter.safetensors"))
    assert saved and all("lora_" in k for k in saved)          # only the adapter, not the base weights
    fresh = _classifier({"name": "vit_mini", "patch_size": 8})  # same seed: same base weights
    fresh.head.load_state_dict(model.head.state_dict())
    load_adapter(fresh, tmp_path / "adapter")
    assert torch.allclose(fresh.logits(x), model.logits(x), atol=1e-6)
    assert json.loads((tmp_path / "adapter" / "adapter.json").read_text())["fraction"] == info["fraction"]


@pytest.mark.long
@pytest.mark.bf16  # fp32 pinned: must hold with auto on a bf16 machine too
def test_peft_run_resumes_exactly_and_ddp_matches_single_process(tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert _run([str(full), "8", "--peft"]).returncode == 0
    r = _run([str(cut), "8", "--peft", "--crash-after-step", "6"])
    assert r.returncode == 137
    r = _run([str(cut), "8", "--peft"])
    assert r.returncode == 0 and "resuming" in r.stdout, r.stderr[-2000:]
    a, b = _weights(full), _weights(cut)
    assert any("lora_A" in k for k in a) and all(torch.equal(a[k], b[k]) for k in a)
    state = json.loads((full / "checkpoints" / "last" / "state.json").read_text())
    assert 0 < state["run_info"]["peft"]["fraction"] < 1
    assert (full / "adapter" / "adapter.safetensors").exists()
    final = load_file(str(full / "final.safetensors"))        # the caller's model after fit: merged, plain keys
    assert not any("lora_" in k or "base_layer" in k for k in final)
    ddp = tmp_path / "ddp"
    r = _run([str(tmp_path / "single16"), "16", "--peft"])
    assert r.returncode == 0
    r = _run([str(ddp), "8", "--peft"], torchrun=True)
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = _weights(tmp_path / "single16"), _weights(ddp)
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
