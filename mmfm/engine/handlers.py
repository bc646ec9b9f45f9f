"""The training loop's optional parts, as handlers called at named points of :meth:`Trainer.fit`.

The loop itself (:mod:`mmfm.engine.trainer`) steps, accumulates, clips, logs, checkpoints and resumes; everything
a run may or may not have is a :class:`Handler`: differential privacy (Opacus), PEFT adapters, the fixed norms DP
needs, FSDP's gathering of the weights, the fp16 gradient scaler, the fp32 recomputation of non-finite CPU bf16
steps, ``torch.compile`` and TensorBoard. ``Trainer(..., handlers=[...])`` adds the caller's own after these (tests
inject faults this way: ``tests/engine/faults.py``).

The points, in the order a run meets them (each gets the run's :class:`FitState`):

- ``on_fit_start``: before the model is placed, sharded and resumed; change the caller's model (adapters, layers)
  or the precision.
- ``on_loop_start``: after the model is placed and the checkpoint, if any, loaded (``fit.start``, ``fit.resumed``);
  wrap ``fit.run`` (the module the batches go through), ``fit.opt``, ``fit.accumulate`` (one step's forward and
  backward passes), or set ``fit.scaling``.
- ``on_record``: after each optimiser step, with the step's record before it is logged and checkpointed; add to it.
- ``on_checkpoint``: with the state a checkpoint is about to hold; add to it.
- ``on_step_end``: after the step is logged and, where due, checkpointed. An exception here stops the run with the
  last checkpoint whole.
- ``on_fit_end``: after the last step, before ``fit`` returns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mmfm.engine.distributed import is_main
from mmfm.engine.precision import Precision
from mmfm.errors import ConfigError, MMFMError

if TYPE_CHECKING:
    from mmfm.engine.trainer import Trainer

logger = logging.getLogger(__name__)


class TrainingDiverged(MMFMError):
    """The loss became NaN or infinite."""


class Handler:
    """A part of a run called at the loop's named points (see the module docstring); each does nothing here."""

    def on_fit_start(self, fit: FitState) -> None:
        pass

    def on_loop_start(self, fit: FitState) -> None:
        pass

    def on_record(self, fit: FitState, record: dict[str, Any]) -> None:
        pass

    def on_checkpoint(self, fit: FitState, state: dict[str, Any]) -> None:
        pass

    def on_step_end(self, fit: FitState) -> None:
        pass

    def on_fit_end(self, fit: FitState) -> None:
        pass


class Scaling:
    """How a step's loss is scaled and its optimiser stepped: as is (fp32, bf16)."""

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return loss

    def unscale(self, opt: torch.optim.Optimizer) -> None:
        pass

    def step(self, opt: torch.optim.Optimizer) -> None:
        opt.step()


@dataclass
class FitState:
    """One run of :meth:`Trainer.fit`, as the loop and its handlers share it."""
    trainer: Trainer
    precision: Precision
    sharded: bool                        # FSDP across processes
    model: nn.Module | None = None       # the module trained: the caller's, or FSDP's sharded copy
    ddp: nn.Module | None = None         # ``model`` under DDP where several processes train it
    run: Callable[[Any], Any] | None = None   # what the batches go through (``ddp``, compiled or per-sample)
    opt: Any = None
    accumulate: Callable[[list[Any], str], dict[str, float]] | None = None
    scaling: Scaling = field(default_factory=Scaling)
    clip: float = 0.0                    # optim.grad_clip on the summed gradients; 0: none
    fused_optimizer: bool = True         # torch's fused AdamW where the device has it
    start: int = 0                       # the first step this process runs (after resuming)
    resumed: dict[str, Any] | None = None   # the state of the checkpoint resumed from
    step: int = 0                        # the step running (0-based)
    losses: dict[str, float] = field(default_factory=dict)   # the last step's loss terms

    def logs(self, done: int) -> bool:
        """Whether the step that makes ``done`` steps writes a metrics line."""
        cfg = self.trainer.cfg
        return done % cfg.log_every == 0 or done == cfg.max_steps or done == self.start + 1


class DifferentialPrivacy(Handler):
    """DP-SGD through Opacus: per-sample gradients in fp32, clipped and noised by the DP optimiser, and the epsilon
    spent recorded where the run logs or saves."""

    def __init__(self, dp: Any, batch_size: int, max_steps: int) -> None:
        self.dp, self.batch_size, self.max_steps = dp, batch_size, max_steps
        self.privacy: Any = None

    def on_fit_start(self, fit: FitState) -> None:
        t = fit.trainer
        if isinstance(t.dataset, torch.utils.data.IterableDataset):
            raise ConfigError("train.dp needs random access to the training samples (Poisson sampling)",
                              "use a folder or catalog dataset instead of shards")
        p = fit.precision
        if p.used != "fp32":
            # torch's expanded weights (Opacus's per-sample gradients) multiply the layer's fp32 weight by the
            # activations' dtype and fail under autocast; DP steps run in fp32, and the record says so
            fit.precision = t.precision = Precision(p.requested, "fp32", f"differential privacy computes per-sample "
                                                    f"gradients in fp32 (asked/chosen: {p.used}, {p.why})")
            t.run_info["precision"] = fit.precision.as_dict()
        fit.fused_optimizer = False
        fit.clip = 0.0   # each sample's gradient is clipped instead

    def on_loop_start(self, fit: FitState) -> None:
        from mmfm.engine.privacy import PrivateTraining

        self.privacy = PrivateTraining(self.dp, len(fit.trainer.dataset), self.batch_size, self.max_steps)
        fit.run, fit.opt = self.privacy.prepare(fit.model, fit.opt)
        self.privacy.steps = fit.start
        if is_main():
            logger.info(f"differential privacy: epsilon {self.dp.epsilon:g} at delta {self.dp.delta:g} over "
                        f"{self.max_steps} steps -> noise multiplier {self.privacy.noise:.3f}, sample rate "
                        f"{self.privacy.sample_rate:.4f}")
        inner = fit.accumulate

        def accumulate(micro_batches: list[Any], used: str) -> dict[str, float]:
            sums = inner(micro_batches, used)
            if fit.step == fit.start:   # after the first backward pass: every parameter got per-sample gradients
                self.privacy.check(fit.model)
            return sums
        fit.accumulate = accumulate

    def on_record(self, fit: FitState, record: dict[str, Any]) -> None:
        done, cfg, t = record["step"], fit.trainer.cfg, fit.trainer
        self.privacy.steps = done
        # the accountant's epsilon only where it is logged or saved, not at every step
        if done % cfg.log_every == 0 or done % cfg.ckpt_every == 0 or done in (fit.start + 1, cfg.max_steps):
            t.run_info["dp"] = self.privacy.record(contrastive=bool(getattr(t.model, "couples_samples", False)))
            record["epsilon"] = t.run_info["dp"]["epsilon_spent"]


class FixNorms(Handler):
    """``train.dp.fix_norms``: BatchNorm -> GroupNorm before resuming (the checkpoint holds the fixed layers; also
    without DP: the non-private baseline of the same architecture)."""

    def on_fit_start(self, fit: FitState) -> None:
        from mmfm.engine.privacy import fix_layers

        fixed = fix_layers(fit.trainer.model)
        fit.trainer.run_info["dp_fixed_layers"] = fixed
        if fixed and is_main():
            logger.info(f"train.dp.fix_norms: {len(fixed)} layers replaced for per-sample gradients "
                        "(BatchNorm -> GroupNorm)")


class Adapters(Handler):
    """PEFT: adapters added before the copy FSDP shards and before resuming (the checkpoint holds them); at the
    end the adapter is saved on its own, then merged: what follows (evaluation, export) sees a plain model."""

    def __init__(self, spec: Any) -> None:
        self.spec = spec

    def on_fit_start(self, fit: FitState) -> None:
        from mmfm.encoders.adapters import add_adapters, has_adapters

        t = fit.trainer
        if has_adapters(t.model):
            raise ConfigError("train.peft is set, but the model already has adapters",
                              "merge them first (mmfm.encoders.adapters.merge_adapters) or drop train.peft")
        p = t.run_info["peft"] = add_adapters(t.model, self.spec)
        if is_main():
            logger.info(f"{self.spec.method} adapters on {p['layers']} layers of "
                        f"{', '.join(p['parts']) or 'the model'}: {p['trainable']:,} of {p['total']:,} parameters "
                        f"train ({100 * p['fraction']:.2f}%)")

    def on_fit_end(self, fit: FitState) -> None:
        from mmfm.encoders.adapters import merge_adapters, save_adapter

        t = fit.trainer
        if is_main():
            save_adapter(t.model, t.run_info["peft"], t.run_dir / "adapter")
        merge_adapters(t.model)


class GatherShards(Handler):
    """FSDP trains a sharded copy; at the end the caller's module gets the full weights."""

    def on_fit_end(self, fit: FitState) -> None:
        from mmfm.engine.fsdp import gather_into

        gather_into(fit.model, fit.trainer.model)


class GradScaling(Handler, Scaling):
    """fp16: the loss scaled up before backward (fp16's range underflows small gradients), the gradients unscaled
    before clipping, a step skipped where they overflowed; the scale is checkpointed."""

    def __init__(self) -> None:
        self.scaler: Any = None

    def on_loop_start(self, fit: FitState) -> None:
        from mmfm.engine.precision import grad_scaler

        self.scaler = grad_scaler(fit.precision, fit.trainer.device)
        if self.scaler is None:
            return
        if fit.resumed is not None and "grad_scaler" in fit.resumed:
            self.scaler.load_state_dict(fit.resumed["grad_scaler"])
        fit.scaling = self

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return self.scaler.scale(loss)

    def unscale(self, opt: torch.optim.Optimizer) -> None:
        self.scaler.unscale_(opt)

    def step(self, opt: torch.optim.Optimizer) -> None:
        self.scaler.step(opt)
        self.scaler.update()

    def on_checkpoint(self, fit: FitState, state: dict[str, Any]) -> None:
        if self.scaler is not None:
            state["grad_scaler"] = self.scaler.state_dict()


class RecomputeInFp32(Handler):
    """CPU bf16 steps whose loss or gradients come back non-finite are recomputed in fp32.

    oneDNN's CPU bf16 convolution backward can return NaN weight gradients from a primitive cached by earlier
    convolutions in the same process (found on an avx512_bf16 CPU: fp32 then bf16 LoRA training of a ResNet, VoCo 3D
    after other objectives; ONEDNN_PRIMITIVE_CACHE_CAPACITY=0 avoids it at several times the cost of a step). The
    step is recomputed in fp32 instead of letting Adam write NaN into the weights; a real divergence is still an
    error, since the fp32 loss and gradients must then be finite. Steps recomputed are listed in run_info."""

    def on_loop_start(self, fit: FitState) -> None:
        t = fit.trainer
        if not (fit.precision.used == "bf16" and t.device.type == "cpu" and not fit.sharded):
            return
        recomputed: list[int] = list(t.run_info.get("steps_recomputed_in_fp32", []))
        inner = fit.accumulate

        def accumulate(micro_batches: list[Any], used: str) -> dict[str, float]:
            try:
                sums = inner(micro_batches, used)
                if t._gradients_finite(fit.model):
                    return sums
            except TrainingDiverged:
                pass
            fit.opt.zero_grad(set_to_none=True)
            sums = inner(micro_batches, "fp32")
            if not t._gradients_finite(fit.model):
                raise TrainingDiverged(f"the gradients became non-finite at step {fit.step + 1} (the loss is "
                                       f"finite; {used}, recomputed in fp32)", t._diverged_hint("fp32"))
            recomputed.append(fit.step + 1)
            t.run_info["steps_recomputed_in_fp32"] = list(recomputed)
            if is_main() and len(recomputed) == 1:
                logger.info(f"{used} gave a non-finite loss or gradients at step {fit.step + 1} where fp32 "
                            "does not (a CPU kernel issue); such steps are recomputed in fp32 (listed in run_info)")
            return sums
        fit.accumulate = accumulate


class Compile(Handler):
    """``train.compile``: the batches go through ``torch.compile`` of the (DDP-wrapped) model."""

    def on_loop_start(self, fit: FitState) -> None:
        fit.run = torch.compile(fit.run)


class TensorBoard(Handler):
    """``train.tensorboard``: the loss terms of each logged step, on the main process, in ``RUN/tensorboard``."""

    def __init__(self) -> None:
        self.writer: Any = None

    def on_loop_start(self, fit: FitState) -> None:
        if not is_main():
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            logger.info("tensorboard is not installed; metrics go to metrics.jsonl only")
            return
        self.writer = SummaryWriter(str(fit.trainer.run_dir / "tensorboard"))

    def on_record(self, fit: FitState, record: dict[str, Any]) -> None:
        if self.writer is not None and fit.logs(record["step"]):
            for k, v in fit.losses.items():
                self.writer.add_scalar(k, v, record["step"])

    def on_fit_end(self, fit: FitState) -> None:
        if self.writer is not None:
            self.writer.close()


def feature_handlers(trainer: Trainer) -> list[Handler]:
    """The handlers ``trainer``'s configuration asks for, in the order they are called."""
    cfg, out = trainer.cfg, []
    if cfg.dp.epsilon:
        out.append(DifferentialPrivacy(cfg.dp, cfg.batch_size, cfg.max_steps))
    if trainer.world > 1 and cfg.strategy == "fsdp":
        out.append(GatherShards())      # before the adapters are saved and merged: into the caller's module
    if cfg.peft:
        from mmfm.engine.trainer import peft_spec

        out.append(Adapters(peft_spec(cfg)))
    if cfg.dp.fix_norms:
        out.append(FixNorms())
    out += [GradScaling(), RecomputeInFp32()]
    if cfg.compile:
        out.append(Compile())
    if cfg.tensorboard:
        out.append(TensorBoard())
    return out
