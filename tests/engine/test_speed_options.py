"""The engine's speed options change speed or memory, not results: precision chosen per device (and recorded),
fp16 with a gradient scaler, FSDP == one process (and resumable), torch.compile == eager, gradient checkpointing
== plain backward, channels-last == contiguous, fused AdamW == AdamW."""

from __future__ import annotations

import json

import pytest
import torch

from mmfm.encoders.base import enable_grad_checkpointing, to_channels_last
from mmfm.encoders.vit import ViTEncoder
from mmfm.engine import precision as prec
from mmfm.engine.trainer import OptimConfig, TrainConfig, check_train_config, make_optimizer
from mmfm.errors import ConfigError
from tests.engine.test_engine import _losses, _run, _weights
from tests.torchrun import failure


def test_auto_precision_is_bf16_only_where_the_cpu_has_native_bf16(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv("MMFM_NATIVE_BF16", raising=False)      # the flags decide, not the override
    monkeypatch.setattr(prec, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    p = prec.resolve_precision("auto", cpu)
    assert (p.used, p.requested) == ("fp32", "auto") and "emulated" in p.why
    monkeypatch.setattr(prec, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))
    p = prec.resolve_precision("auto", cpu)
    assert p.used == "bf16" and "avx512_bf16" in p.why
    monkeypatch.setattr(prec, "cpu_flags", lambda: frozenset({"amx_bf16", "amx_tile"}))
    assert prec.resolve_precision("auto", cpu).used == "bf16"
    assert prec.resolve_precision("fp32", cpu).used == "fp32"           # what the user asks for wins
    assert prec.resolve_precision("fp16", cpu).used == "fp16"
    with prec.autocast(prec.resolve_precision("bf16", cpu).used, cpu):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    assert prec.grad_scaler(prec.resolve_precision("fp16", cpu), cpu) is not None
    assert prec.grad_scaler(prec.resolve_precision("bf16", cpu), cpu) is None


def test_unknown_precision_and_strategy_are_errors_with_the_choices():
    with pytest.raises(ConfigError, match="fp16"):
        check_train_config(TrainConfig(precision="half"))
    with pytest.raises(ConfigError, match="fsdp"):
        check_train_config(TrainConfig(strategy="zero3"))


@pytest.mark.long
@pytest.mark.bf16  # fp32 pinned: must hold with auto on a bf16 machine too
def test_fp16_and_bf16_runs_follow_the_fp32_loss_curve_and_record_their_precision(tmp_path):
    for p in ("fp32", "bf16", "fp16"):
        r = _run([str(tmp_path / p), "16", "--precision", p])
        assert r.returncode == 0, r.stderr[-2000:]
    state = {p: json.loads((tmp_path / p / "checkpoints" / "last" / "state.json").read_text())
             for p in ("fp32", "bf16", "fp16")}
    assert state["bf16"]["run_info"]["precision"] == {"requested": "bf16", "used": "bf16", "why": "asked for"}
    assert "grad_scaler" in state["fp16"] and "grad_scaler" not in state["bf16"]
    ref, w = _losses(tmp_path / "fp32"), _weights(tmp_path / "fp32")
    # low precision: the same curve and nearly the same weights (relative difference of each tensor; bf16 keeps
    # 8 mantissa bits, and Adam's near-sign updates amplify rounding on tiny gradients); an unscaled, skipped or
    # double-scaled fp16 step would be far off
    for p, tol in (("bf16", 0.2), ("fp16", 0.01)):
        assert _losses(tmp_path / p) == pytest.approx(ref, abs=0.03), p
        got = _weights(tmp_path / p)
        assert max(float((w[k] - got[k]).norm() / w[k].norm()) for k in w) < tol, p


@pytest.mark.long
@pytest.mark.bf16  # fp32 pinned: must hold with auto on a bf16 machine too
def test_two_process_fsdp_matches_single_process_and_resumes_after_a_kill(tmp_path):
    """Sharded blocks, a BatchNorm and a parameter no step uses: 2 processes x 8 under FSDP give the weights of
    1 process x 16; killed after step 6, the FSDP run resumes from its step-4 checkpoint to the same weights."""
    args = ["--blocks", "--bn"]
    assert _run([str(tmp_path / "single"), "16", *args]).returncode == 0
    r = _run([str(tmp_path / "fsdp"), "8", *args, "--fsdp", "--crash-after-step", "6"], torchrun=True)
    assert r.returncode != 0
    assert json.loads((tmp_path / "fsdp" / "checkpoints" / "last" / "state.json").read_text())["step"] == 4
    r = _run([str(tmp_path / "fsdp"), "8", *args, "--fsdp"], torchrun=True)
    assert r.returncode == 0, failure(r)        # each rank's own lines: a signal death shows where it was
    a, b = _weights(tmp_path / "single"), _weights(tmp_path / "fsdp")
    assert sorted(a) == sorted(b) and any(k.startswith("blocks.1") for k in a)
    bad = [k for k in a if not torch.allclose(a[k].float(), b[k].float(), atol=1e-5)]
    assert not bad, bad
    assert _losses(tmp_path / "single") == pytest.approx(_losses(tmp_path / "fsdp"), abs=1e-5)
    from safetensors.torch import load_file
    final = load_file(str(tmp_path / "fsdp" / "final.safetensors"))  # the weights are back in the caller's model
    assert all(torch.equal(final[k], b[k]) for k in b)


@pytest.mark.long
def test_compiled_training_gives_the_eager_weights(tmp_path):
    assert _run([str(tmp_path / "eager"), "16", "--steps", "4"]).returncode == 0
    r = _run([str(tmp_path / "compiled"), "16", "--steps", "4", "--compile"], timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = _weights(tmp_path / "eager"), _weights(tmp_path / "compiled")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_grad_checkpointing_recomputes_blocks_and_gives_the_same_gradients():
    torch.manual_seed(0)
    enc = ViTEncoder(2, 1, patch_size=4, dim=32, depth=2, heads=2, max_grid=8)
    x = torch.randn(2, 1, 16, 16)
    calls, fc1 = [], enc.blocks[0].mlp.fc1.forward     # counted by a wrapper (recomputation runs no hooks)
    enc.blocks[0].mlp.fc1.forward = lambda t: calls.append(1) or fc1(t)

    def grads():
        enc.zero_grad()
        enc(x)["tokens"].square().mean().backward()
        return [p.grad.clone() for p in enc.parameters() if p.grad is not None]

    plain = grads()
    assert len(calls) == 1
    assert enable_grad_checkpointing(torch.nn.ModuleDict({"enc": enc})) == ["enc"]
    calls.clear()
    again = grads()
    assert len(calls) == 2                                  # the block ran again in backward
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, again))
    assert enable_grad_checkpointing(torch.nn.Linear(2, 2)) == []   # the trainer turns this into an error


def test_channels_last_changes_layout_not_outputs():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3))
    net3 = torch.nn.Conv3d(1, 4, 3)
    x, x3 = torch.randn(2, 1, 16, 16), torch.randn(1, 1, 8, 8, 8)
    ref, ref3 = net(x), net3(x3)
    to_channels_last(net), to_channels_last(net3)
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert net3.weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert torch.allclose(net(x), ref, atol=1e-5) and torch.allclose(net3(x3), ref3, atol=1e-5)


def test_fused_adamw_is_used_on_cpu_and_steps_like_plain_adamw():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(8, 4), torch.nn.Linear(8, 4)
    b.load_state_dict(a.state_dict())
    fused = make_optimizer(a, OptimConfig(lr=0.01), torch.device("cpu"))
    plain = make_optimizer(b, OptimConfig(lr=0.01), torch.device("cpu"), sharded=True)  # sharded: no fused
    assert fused.defaults["fused"] and not plain.defaults["fused"]
    x = torch.randn(16, 8)
    for _ in range(3):
        for m, o in ((a, fused), (b, plain)):
            o.zero_grad()
            m(x).square().mean().backward()
            o.step()
    assert torch.allclose(a.weight, b.weight, atol=1e-6)


@pytest.mark.parametrize("dims", [2, 3])
def test_swin_fused_window_attention_matches_monai_in_training(dims):
    """Swin's attention runs through SDPA with gradients too; outputs and gradients equal MONAI's own."""
    import copy

    from monai.networks.nets.swin_unetr import WindowAttention

    from mmfm.encoders.swin import FusedWindowAttention, swin_small

    torch.manual_seed(0)
    enc = swin_small(dims, 1)                          # 2 blocks a stage: the second one shifts (mask path)
    ref = copy.deepcopy(enc)
    fused = [m for m in enc.modules() if isinstance(m, FusedWindowAttention)]
    assert fused and all(type(m) is FusedWindowAttention for m in fused)
    for m in ref.modules():
        if type(m) is FusedWindowAttention:
            m.__class__ = WindowAttention
    x = torch.randn(2, 1, *([32] * dims))
    out, expect = enc(x)["tokens"], ref(x)["tokens"]
    assert torch.allclose(out, expect, atol=1e-5)
    out.square().sum().backward(), expect.square().sum().backward()
    g = dict(ref.named_parameters())
    assert all(torch.allclose(p.grad, g[n].grad, atol=1e-4) for n, p in enc.named_parameters() if p.grad is not None)


def test_frozen_batchnorm_keeps_its_statistics_while_the_rest_trains(tmp_path):
    """A frozen encoder's BatchNorm must not drift to the training batches' statistics (linear probe, LiteMedSAM's
    frozen image encoder, the base under adapters); a trainable one still updates."""
    import torch
    from torch import nn

    from mmfm.data.datasets import ArrayDataset
    from mmfm.engine.trainer import OptimConfig, TrainConfig, Trainer

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.frozen = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)).requires_grad_(False)
            self.trained = nn.Sequential(nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4))
            self.head = nn.Linear(4, 2)

        def forward(self, batch):
            h = self.trained(self.frozen(batch["image"])).mean((2, 3))
            return {"loss": nn.functional.cross_entropy(self.head(h), batch["label"])}

    torch.manual_seed(0)
    net = Net()
    before_frozen = net.frozen[1].running_mean.clone()
    before_trained = net.trained[1].running_mean.clone()
    ds = ArrayDataset(torch.randn(16, 1, 8, 8).numpy() * 3 + 1, torch.randint(0, 2, (16,)).numpy())
    Trainer(net, ds, TrainConfig(max_steps=3, batch_size=4, progress=False), OptimConfig(), tmp_path).fit()
    assert torch.equal(net.frozen[1].running_mean, before_frozen)
    assert not torch.equal(net.trained[1].running_mean, before_trained)
