"""Differential privacy through Opacus: the DP step equals naive per-sample clipping, BatchNorm is refused with a
hint or replaced, the epsilon a run reports is the RDP accountant's and within its budget, and a DP-trained model
reloads."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from mmfm.engine.privacy import DPConfig, PrivateTraining, fix_layers, incompatible_layers, poisson_indices
from mmfm.errors import ConfigError

opacus = pytest.importorskip("opacus")


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, batch):
        return {"loss": nn.functional.cross_entropy(self.fc(batch["x"]), batch["y"])}


def test_dp_step_is_clipped_mean_of_per_sample_gradients():
    torch.manual_seed(0)
    model = Tiny()
    ref = Tiny()
    ref.load_state_dict(model.state_dict())
    x, y = 5 * torch.randn(8, 3), torch.randint(0, 2, (8,))
    priv = PrivateTraining(DPConfig(epsilon=1.0, max_grad_norm=0.5), n=64, batch_size=8, max_steps=10)
    priv.noise = 0.0    # no noise: the update must be the clipped per-sample gradients' sum / expected batch
    run, opt = priv.prepare(model, torch.optim.SGD(model.parameters(), lr=1.0))
    run({"x": x, "y": y})["loss"].backward()
    opt.step()
    total = [torch.zeros_like(p) for p in ref.parameters()]
    for i in range(8):   # naive DP-SGD (Abadi et al. 2016, Alg. 1)
        ref.zero_grad()
        ref({"x": x[i:i + 1], "y": y[i:i + 1]})["loss"].backward()
        g = [p.grad.clone() for p in ref.parameters()]
        norm = torch.sqrt(sum((t ** 2).sum() for t in g))
        for t, gi in zip(total, g):
            t += gi * min(1.0, 0.5 / float(norm))
    with torch.no_grad():
        expect = [p - t / priv.expected_batch for p, t in zip(ref.parameters(), total)]
    for p, e in zip(model.parameters(), expect):
        assert torch.allclose(p, e, atol=1e-6)


def test_noise_multiplier_spends_the_budget_per_opacus_accountant():
    from opacus.accountants import RDPAccountant

    priv = PrivateTraining(DPConfig(epsilon=4.0, delta=1e-5), n=1000, batch_size=50, max_steps=200)
    acc = RDPAccountant()
    for _ in range(200):
        acc.step(noise_multiplier=priv.noise, sample_rate=0.05)
    assert priv.epsilon(200) == pytest.approx(acc.get_epsilon(1e-5), rel=1e-9)
    assert 3.9 <= priv.epsilon(200) <= 4.0 + 0.05
    assert priv.epsilon(50) < priv.epsilon(200)


def test_poisson_batches_are_seeded_and_have_the_expected_size():
    a = poisson_indices(10_000, 100, seed=3, step=7)
    assert a == poisson_indices(10_000, 100, seed=3, step=7) and a != poisson_indices(10_000, 100, seed=3, step=8)
    sizes = [len(poisson_indices(10_000, 100, 0, s)) for s in range(50)]
    assert 90 < sum(sizes) / 50 < 110 and len(set(sizes)) > 1


def test_batchnorm_is_named_and_fixed_in_place():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    assert any("BatchNorm" in e or "batch" in e.lower() for e in incompatible_layers(model))
    priv = PrivateTraining(DPConfig(epsilon=1.0), n=100, batch_size=16, max_steps=5)
    with pytest.raises(ConfigError, match="fix_norms"):
        priv.prepare(model, torch.optim.SGD(model.parameters(), lr=0.1))
    assert fix_layers(model) == ["1"]
    assert isinstance(model[1], nn.GroupNorm) and not incompatible_layers(model)


def _train(tmp_path, mini_root, *extra):
    from mmfm.workflows.config import load_config
    from mmfm.workflows.supervised import run_supervised

    out = tmp_path / "dp"
    cfg = load_config(None, [f"out={out}", "train.max_steps=12", "train.batch_size=32", "train.progress=false",
                             f"data.root={mini_root}", "train.dp.epsilon=8", *extra])
    return out, run_supervised(cfg)


@pytest.mark.bf16
def test_dp_run_refuses_batchnorm_then_trains_with_fix_and_reloads(tmp_path, mini_root):
    from opacus.accountants import RDPAccountant

    from mmfm.workflows.supervised import load_trained

    with pytest.raises(ConfigError, match="fix_norms"):
        _train(tmp_path, mini_root, "encoder.name=resnet_tiny")
    out, records = _train(tmp_path, mini_root, "encoder.name=resnet_tiny", "train.dp.fix_norms=true")
    dp = json.loads((out / "privacy.json").read_text())
    acc = RDPAccountant()
    acc.history = [(dp["noise_multiplier"], dp["sample_rate"], 12)]
    assert dp["steps"] == 12 and dp["epsilon_spent"] == pytest.approx(acc.get_epsilon(dp["delta"]))
    assert dp["epsilon_spent"] <= 8.0 + 0.05
    eps = [r.value for r in records if r.metric == "dp_epsilon"]
    assert eps == [pytest.approx(dp["epsilon_spent"])]
    model, state = load_trained(out)
    assert state["run_info"]["dp"]["epsilon_spent"] == pytest.approx(dp["epsilon_spent"])
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.bf16
def test_dp_contrastive_pretraining_is_flagged(tmp_path, mini_root):
    from mmfm.workflows.config import load_config
    from mmfm.workflows.pretrain import load_encoder, run_pretrain

    out = tmp_path / "simclr"
    cfg = load_config(None, [f"out={out}", "objective.name=simclr", "encoder.name=resnet_tiny", "train.max_steps=3",
                             "train.batch_size=16", "train.progress=false", f"data.root={mini_root}",
                             "train.dp.epsilon=8", "train.dp.fix_norms=true", "train.precision=bf16"])
    run_pretrain(cfg)
    dp = json.loads((out / "privacy.json").read_text())
    state = json.loads((out / "checkpoints" / "last" / "state.json").read_text())
    assert state["run_info"]["precision"]["used"] == "fp32"          # per-sample gradients in fp32 under bf16
    assert "warning_contrastive" in dp and 0 < dp["epsilon_spent"] <= 8.05
    enc, spec = load_encoder(str(out))       # the exported encoder carries the GroupNorm architecture
    assert spec["dp_fixed_layers"] and not any(isinstance(m, nn.BatchNorm2d) for m in enc.modules())


def test_groupnorm_replacement_keeps_a_1x1_feature_map():
    """Opacus's default (one group per channel) maps a 1x1 feature map to zeros; mmfm's groups of 16 do not."""
    from mmfm.engine.privacy import batchnorm_to_groupnorm

    gn = batchnorm_to_groupnorm(nn.BatchNorm2d(32))
    assert gn.num_groups == 2 and gn.num_channels == 32
    x = torch.randn(4, 32, 1, 1)
    assert gn(x).abs().sum() > 0
    assert batchnorm_to_groupnorm(nn.BatchNorm3d(8)).num_groups == 1


@pytest.mark.bf16
def test_dp_under_bf16_computes_per_sample_gradients_in_fp32_and_says_so(tmp_path, mini_root):
    """bf16 autocast breaks torch's expanded weights (BFloat16 != float in the per-sample matmul): a DP run asked for
    bf16 (or given it by auto on a bf16 machine) trains in fp32, spends the same budget and records why."""
    out, records = _train(tmp_path, mini_root, "encoder.name=resnet_tiny", "train.dp.fix_norms=true",
                          "train.precision=bf16", "train.max_steps=3")
    state = json.loads((out / "checkpoints" / "last" / "state.json").read_text())
    prec = state["run_info"]["precision"]
    assert (prec["requested"], prec["used"]) == ("bf16", "fp32") and "differential privacy" in prec["why"]
    assert 0 < json.loads((out / "privacy.json").read_text())["epsilon_spent"] <= 8.05
    assert any(r.metric == "dp_epsilon" for r in records)
