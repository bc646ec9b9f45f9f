"""Differentially private training (DP-SGD) through Opacus: per-sample gradients clipped to ``max_grad_norm``,
Gaussian noise calibrated so that the whole run spends at most ``epsilon`` at ``delta``, and the spent epsilon
tracked by Opacus's RDP accountant.

What is mmfm's own here, and why: Opacus's ``PrivacyEngine.make_private`` wants to own the DataLoader, while the
trainer draws its batches as a pure function of (seed, step) so runs resume exactly. Under DP the trainer draws
**Poisson** batches instead (every sample independently with probability q = batch_size / N, seeded by (seed,
step)), the sampling the RDP accountant's guarantee assumes, and uses Opacus's parts directly: ``GradSampleModule``
(per-sample gradients), ``DPOptimizer`` (clip + noise) and ``RDPAccountant`` (whose history, (noise, q, steps), is
a function of the step, so a resumed run reports the same epsilon).

Layers Opacus cannot compute per-sample gradients for (BatchNorm mixes the samples of a batch) are an error that
names them; ``train.dp.fix_norms=true`` replaces them with Opacus's fixes (BatchNorm -> GroupNorm) in place, and a
trained model is rebuilt the same way when loaded.

Contrastive objectives: the loss of one sample depends on the others in its batch (negatives), so clipping each
sample's gradient does not bound one sample's influence on the whole update, and the epsilon Opacus reports is not a
formal guarantee there (it is for losses that are a mean of per-sample terms, e.g. classification). mmfm runs
them and says so in the run's privacy record.

Reference: Abadi et al., Deep Learning with Differential Privacy, CCS 2016; Mironov, Renyi DP, 2017;
Yousefpour et al., Opacus, 2021.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from mmfm.engine.settings import DPConfig  # also importable from here, its first home
from mmfm.errors import ConfigError


def check_dp_config(dp: DPConfig, grad_accum: int, world: int, compile_: bool, batch_size: int) -> None:
    if dp.epsilon < 0 or dp.epsilon == 0:
        if dp.epsilon < 0:
            raise ConfigError(f"train.dp.epsilon={dp.epsilon} must be positive (0 turns DP off)")
        return
    if not 0 < dp.delta < 1:
        raise ConfigError(f"train.dp.delta={dp.delta} must be in (0, 1)", "e.g. 1e-5, below 1 / training samples")
    if dp.max_grad_norm <= 0:
        raise ConfigError(f"train.dp.max_grad_norm={dp.max_grad_norm} must be positive", "e.g. 1.0")
    if grad_accum != 1 or world != 1 or compile_:
        raise ConfigError("train.dp runs in one process without gradient accumulation or torch.compile",
                          "set train.grad_accum=1, train.compile=false and run without torchrun")
    if batch_size < 16:  # Poisson batches: an empty one (probability ~exp(-batch_size)) must stay negligible
        raise ConfigError(f"train.dp needs train.batch_size >= 16 (got {batch_size})",
                          "DP-SGD works best with large batches; raise train.batch_size")


def incompatible_layers(model: nn.Module) -> list[str]:
    """'name: reason' for each trainable layer Opacus cannot compute per-sample gradients for."""
    from opacus.validators import ModuleValidator

    return [str(e) for e in ModuleValidator.validate(model, strict=False)]


def fix_layers(model: nn.Module) -> list[str]:
    """Replace, in place, every layer Opacus has a fixer for (BatchNorm -> GroupNorm, MultiheadAttention -> its
    DP version); returns the names replaced. In place (Opacus's ``ModuleValidator.fix`` returns a copy) so the
    caller's model object is the one trained."""
    from opacus.validators import ModuleValidator

    replaced = []
    for name, module in list(model.named_modules()):
        fixer = (batchnorm_to_groupnorm if isinstance(module, nn.modules.batchnorm._BatchNorm)
                 else ModuleValidator.FIXERS.get(type(module)))
        if fixer is None or not name:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, fixer(module))
        replaced.append(name)
    return replaced


def batchnorm_to_groupnorm(bn: nn.Module) -> nn.GroupNorm:
    """GroupNorm with groups of (about) 16 channels for a BatchNorm layer. Opacus's own fixer uses one group per
    channel up to 32 groups, which normalises a 1x1 feature map (the last stage of a CNN on a small input) to zero
    and leaves the model nothing to learn from; 16 channels per group keep the statistics over channels."""
    c = bn.num_features
    groups = max(1, c // 16)
    while c % groups:
        groups -= 1
    return nn.GroupNorm(groups, c, affine=bn.affine)


def no_inplace_activations(model: nn.Module) -> None:
    """In-place activations (``ReLU(inplace=True)``) modify the outputs Opacus's hooks hand on, which autograd
    forbids; switch them to out-of-place (same function, same weights)."""
    for module in model.modules():
        if getattr(module, "inplace", False) is True:
            module.inplace = False


class PerSampleGradients(nn.Module):
    """Calls ``model(batch)`` with per-sample gradients (``p.grad_sample``, (B, *p.shape)) through PyTorch's
    expanded weights, the mode Opacus offers as ``GradSampleModuleExpandedWeights``; that class takes one tensor,
    mmfm's models take a batch dict, hence this wrapper. (Opacus's hook mode fails on residual blocks that add in
    place, e.g. MONAI's ResNet.) A layer expanded weights cannot handle is a ConfigError naming what to do."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.module = model

    def forward(self, batch: dict[str, Any]) -> Any:
        from torch.nn.utils._per_sample_grad import call_for_per_sample_grads

        n = len(next(v for v in batch.values() if torch.is_tensor(v)))
        try:
            return call_for_per_sample_grads(self.module, batch_size=n, loss_reduction="mean")(batch)
        except RuntimeError as e:
            if "Expanded Weights" not in str(e):
                raise
            raise ConfigError(f"differential privacy: per-sample gradients are not available for a layer of this "
                              f"model ({e})", "train only layers Opacus supports: a linear probe "
                              "(task.freeze_encoder=true) of any encoder, or a CNN encoder with "
                              "train.dp.fix_norms=true") from None


def missing_grad_samples(model: nn.Module) -> list[str]:
    """Trainable parameters that received no per-sample gradient in the last backward pass."""
    return [n for n, p in model.named_parameters()
            if p.requires_grad and p.grad is not None and getattr(p, "grad_sample", None) is None]


def poisson_indices(n: int, batch_size: int, seed: int, step: int) -> list[int]:
    """The samples of one DP step: each of ``n`` independently with probability batch_size / n (seeded)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return torch.nonzero(torch.rand(n, generator=g) < batch_size / n).flatten().tolist()


class PrivateTraining:
    """The DP parts of one run: wrap the model and optimiser, count steps, report the epsilon spent."""

    def __init__(self, dp: DPConfig, n: int, batch_size: int, max_steps: int) -> None:
        from opacus.accountants.utils import get_noise_multiplier

        self.dp, self.n = dp, n
        self.sample_rate = min(1.0, batch_size / n)
        self.expected_batch = max(1, round(self.sample_rate * n))
        self.noise = get_noise_multiplier(target_epsilon=dp.epsilon, target_delta=dp.delta,
                                          sample_rate=self.sample_rate, steps=max_steps, accountant="rdp")
        self.steps = 0

    def prepare(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[nn.Module, Any]:
        """(the model to call, with per-sample gradient hooks; the DP optimiser). ``model`` itself is unchanged,
        so checkpoints keep its own keys."""
        from opacus.optimizers import DPOptimizer

        bad = incompatible_layers(model)
        if bad:
            raise ConfigError("differential privacy cannot train these layers: " + "; ".join(bad[:5])
                              + (f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""),
                              "set train.dp.fix_norms=true to replace them (BatchNorm -> GroupNorm), or use an "
                              "encoder without BatchNorm (a ViT)")
        no_inplace_activations(model)
        gsm = PerSampleGradients(model)
        opt = DPOptimizer(optimizer, noise_multiplier=self.noise, max_grad_norm=self.dp.max_grad_norm,
                          expected_batch_size=self.expected_batch, loss_reduction="mean")
        return gsm, opt

    def check(self, model: nn.Module) -> None:
        """After the first backward pass: every trainable parameter got a per-sample gradient."""
        missing = missing_grad_samples(model)
        if missing:
            raise ConfigError(f"differential privacy: no per-sample gradient for {len(missing)} trainable "
                              f"parameters ({', '.join(missing[:4])})", "freeze them (task.freeze_encoder=true) "
                              "or use a CNN encoder with train.dp.fix_norms=true")

    def epsilon(self, steps: int | None = None) -> float:
        """The epsilon spent after ``steps`` (default: those taken), from Opacus's RDP accountant."""
        from opacus.accountants import RDPAccountant

        acc = RDPAccountant()
        k = self.steps if steps is None else steps
        if k:
            acc.history = [(self.noise, self.sample_rate, k)]
        return float(acc.get_epsilon(self.dp.delta)) if k else 0.0

    def record(self, contrastive: bool = False) -> dict[str, Any]:
        rec = {**asdict(self.dp), "target_epsilon": self.dp.epsilon, "epsilon_spent": self.epsilon(),
               "noise_multiplier": self.noise, "sample_rate": self.sample_rate, "steps": self.steps,
               "accountant": "rdp (opacus)", "sampling": "poisson"}
        rec.pop("epsilon")
        if self.dp.delta >= 1 / self.n:
            rec["warning"] = f"delta {self.dp.delta:g} is not below 1/N = {1 / self.n:.2g}: a weak guarantee"
        if contrastive:
            rec["warning_contrastive"] = ("a contrastive loss couples the samples of a batch: the epsilon is Opacus's "
                                          "per-sample accounting, not a formal guarantee for this objective")
        if not math.isfinite(rec["epsilon_spent"]):
            rec["epsilon_spent"] = None
        return rec
