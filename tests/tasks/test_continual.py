"""Continual learning: the gate, routed experts, replay's loss, the forgetting measure, and `mmfm continual` on
mini (the experts leave earlier tasks exactly as they were)."""

from __future__ import annotations

import json

import pytest
import torch

from mmfm.encoders import build_encoder
from mmfm.encoders.adapters import PeftSpec, add_adapters, use_adapter
from mmfm.tasks.continual import PrototypeGate, ReplayMix, RoutedEncoder
from mmfm.workflows.continual import forgetting


def test_gate_routes_each_input_to_the_task_whose_prototypes_are_nearest():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(40, 8, generator=g) * 0.1 + torch.tensor([3.0] + [0] * 7)
    b = torch.randn(40, 8, generator=g) * 0.1 + torch.tensor([0, 3.0] + [0] * 6)
    gate = PrototypeGate(per_task=4)
    gate.add_task("a", a)
    gate.add_task("b", b)
    assert gate.route(a).eq(0).all() and gate.route(b).eq(1).all()
    mixed = torch.cat([a[:3], b[:2]])
    assert gate.route(mixed).tolist() == [0, 0, 0, 1, 1]


def test_routed_encoder_sends_each_sample_through_its_expert():
    torch.manual_seed(0)
    enc = build_encoder("vit_mini", spatial_dims=2, in_channels=1, patch_size=8).eval()
    add_adapters(enc, PeftSpec("lora", rank=2), adapter="e1")
    for n, p in enc.named_parameters():
        if "lora_B" in n:
            p.data.normal_(0, 0.5)
    x = torch.randn(4, 1, 32, 32)

    class Fixed(PrototypeGate):   # samples 0, 2 -> task 0 (base), 1, 3 -> task 1 (expert e1)
        def route(self, features):
            return torch.tensor([0, 1, 0, 1])

    routed = RoutedEncoder(enc, Fixed(), [None, "e1"])
    out = routed(x)["pooled"]
    use_adapter(enc, None)
    base = enc(x)["pooled"]
    use_adapter(enc, "e1")
    expert = enc(x)["pooled"]
    assert not torch.allclose(base, expert, atol=1e-4)
    assert torch.allclose(out[[0, 2]], base[[0, 2]], atol=1e-5)
    assert torch.allclose(out[[1, 3]], expert[[1, 3]], atol=1e-5)
    pyr = routed.pyramid(x)
    use_adapter(enc, "e1")
    assert torch.allclose(pyr[-1][[1, 3]], enc.pyramid(x)[-1][[1, 3]], atol=1e-5)
    assert torch.cat(routed.history).tolist() == [0, 1, 0, 1, 0, 1, 0, 1]


def test_replay_adds_the_mean_loss_of_the_earlier_tasks_buffers():
    class Task(torch.nn.Module):
        def __init__(self, w):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor(w))

        def forward(self, batch):
            return {"loss": (self.w * batch["image"]).mean()}

    cur, old1, old2 = Task(1.0), Task(2.0), Task(3.0)
    buf1 = [{"image": torch.full((2,), 1.0)}] * 5
    buf2 = [{"image": torch.full((2,), 4.0)}] * 5
    mix = ReplayMix(cur, [old1, old2], [buf1, buf2], batch_size=3)
    out = mix({"image": torch.ones(4, 2)})
    assert out["replay_loss"].item() == pytest.approx((2.0 * 1 + 3.0 * 4) / 2)
    assert out["loss"].item() == pytest.approx(1.0 + 7.0)


def test_forgetting_is_best_earlier_minus_final():
    m = [[0.9, None, None], [0.7, 0.8, None], [0.5, 0.85, 0.6]]
    assert forgetting(m) == pytest.approx([0.4, 0.8 - 0.85])


@pytest.mark.realdata
def test_moe_leaves_earlier_tasks_untouched_and_sequential_changes_them(mini_root, tmp_path):
    from mmfm.cli.main import main

    common = ["configs/continual_mini.yaml", f"data.root={mini_root}", "continual.steps_per_task=3",
              "train.batch_size=8", "encoder.name=vit_micro"]
    assert main(["continual", *common, f"out={tmp_path / 'moe'}"]) == 0
    moe = json.loads((tmp_path / "moe" / "continual.json").read_text())
    oracle = moe["oracle_matrix"]
    assert oracle[0][0] == oracle[1][0] == oracle[2][0]      # the expert of task 1 is the frozen base itself
    assert oracle[1][1] == oracle[2][1]                      # a later expert never touches an earlier one
    assert moe["oracle_mean_forgetting"] == 0.0
    assert all(0.0 <= r <= 1.0 for row in moe["routing_accuracy"] for r in row if r is not None)
    assert len(moe["matrix"]) == 3 and moe["tasks"] == ["ct_tissue", "mr_tissue", "liver_seg"]
    assert main(["continual", *common, "continual.method=sequential", f"out={tmp_path / 'seq'}"]) == 0
    seq = json.loads((tmp_path / "seq" / "continual.json").read_text())
    assert seq["matrix"][0][0] != seq["matrix"][2][0] or seq["matrix"][1][1] != seq["matrix"][2][1]
    recs = json.loads((tmp_path / "seq" / "results.json").read_text())
    assert {r["split"] for r in recs} == {"after:ct_tissue", "after:mr_tissue", "after:liver_seg"}
    assert main(["continual", *common, "continual.method=replay", "continual.replay_per_task=8",
                 f"out={tmp_path / 'rep'}"]) == 0
    assert (tmp_path / "rep" / "plots" / "continual.png").exists()
