"""One training loop for every objective and task.

The model is any ``nn.Module`` whose ``forward(batch: dict) -> dict`` returns named losses with ``loss`` the sum
to minimise (``*_loss`` keys are logged). The loop owns the optimiser, a warm-up + cosine schedule (a pure
function of the step, so resuming needs no scheduler state), gradient accumulation, mixed precision where the
hardware has it (``mmfm.engine.precision``), seeds, a progress bar, JSONL metrics, checkpoints, resume, DDP or
FSDP under ``torchrun`` (``mmfm.engine.fsdp``), and the speed options: ``torch.compile``, channels-last memory for
CNNs, gradient checkpointing in the encoders, and a fused AdamW where torch has one for the device. What a run
may or may not have (differential privacy, PEFT adapters, FSDP's gathering, the fp16 gradient scaler, the fp32
recomputation of non-finite CPU bf16 steps, torch.compile, TensorBoard) is a handler called at the loop's named
points (``mmfm.engine.handlers``); ``Trainer(..., handlers=[...])`` adds the caller's own. Messages go to the
``logging`` logger of this module (and of the handlers' module) at INFO.

Data order is a pure function of (seed, epoch): a resumed run sees exactly the batches it would have seen.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from mmfm.data.datasets import collate_samples
from mmfm.encoders.base import enable_grad_checkpointing, to_channels_last
from mmfm.engine.checkpoint import (
    load_checkpoint,
    read_checkpoint,
    read_state,
    recover_interrupted_save,
    restore_rng,
    save_checkpoint,
)
from mmfm.engine.distributed import all_reduce_mean, barrier, init_distributed, is_main
from mmfm.engine.handlers import FitState, Handler, TrainingDiverged, feature_handlers
from mmfm.engine.precision import PRECISIONS, Precision, autocast, resolve_precision
from mmfm.engine.privacy import check_dp_config, poisson_indices
from mmfm.engine.settings import OptimConfig, TrainConfig  # also importable from here, their first home
from mmfm.engine.sync_batchnorm import convert_batchnorm
from mmfm.errors import CheckpointError, ConfigError

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lr_factor(step: int, cfg: OptimConfig, max_steps: int) -> float:
    """Linear warm-up for ``warmup_steps``, then cosine decay to ``min_lr_ratio`` (or constant)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule != "cosine":
        raise ConfigError(f"unknown schedule '{cfg.schedule}'", "use cosine or constant")
    t = (step - cfg.warmup_steps) / max(1, max_steps - cfg.warmup_steps)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


PARALLEL_STRATEGIES = ("ddp", "fsdp")


def _device() -> torch.device:
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)  # each torchrun process on its own GPU (NCCL needs it)
        return device
    return torch.device("cpu")


_ANNOUNCED: set[str] = set()


def announce_precision(cfg: TrainConfig, device: torch.device | None = None) -> Precision:
    """Log, once per process and on the main rank, the precision a run takes (and why) and its device: the
    first lines of a run's log (`mmfm train` says it before reading data, the trainer again only if not said)."""
    device = device or _device()
    precision = resolve_precision(cfg.precision, device)
    where = device.type if device.type != "cuda" else f"cuda ({torch.cuda.get_device_name(device)})"
    line = (f"precision {precision.used} (train.precision={cfg.precision}: {precision.why}); device {where}"
            + (f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""))
    if line not in _ANNOUNCED and is_main():
        _ANNOUNCED.add(line)
        logger.info(line)
    return precision


def check_train_config(cfg: TrainConfig) -> None:
    """Reject values that would otherwise run silently with another meaning."""
    if cfg.precision not in PRECISIONS:
        raise ConfigError(f"train.precision='{cfg.precision}' is not a precision mmfm knows",
                          f"use one of {', '.join(PRECISIONS)}")
    if cfg.strategy not in PARALLEL_STRATEGIES:
        raise ConfigError(f"train.strategy='{cfg.strategy}' is not a strategy mmfm knows",
                          f"use one of {', '.join(PARALLEL_STRATEGIES)}")
    for name in ("max_steps", "batch_size", "grad_accum", "ckpt_every", "log_every"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"train.{name}={getattr(cfg, name)} must be at least 1")
    if cfg.peft:
        from mmfm.encoders.adapters import check_spec

        check_spec(peft_spec(cfg))
    elif cfg.peft_targets or cfg.peft_modules:
        raise ConfigError("train.peft_targets/peft_modules are set but train.peft is empty",
                          "set train.peft=lora (or dora, loha, lokr), or drop those options")
    if cfg.workers < -1:
        raise ConfigError(f"train.workers={cfg.workers} must be -1 (auto), 0 or more")
    check_dp_config(cfg.dp, cfg.grad_accum, int(os.environ.get("WORLD_SIZE", "1")), cfg.compile, cfg.batch_size)


def peft_spec(cfg: TrainConfig) -> Any:
    from mmfm.encoders.adapters import PeftSpec

    return PeftSpec(cfg.peft, cfg.peft_rank, cfg.peft_alpha, cfg.peft_dropout, tuple(cfg.peft_targets),
                    tuple(cfg.peft_modules))


def num_workers(cfg: TrainConfig, dataset: Any) -> int:
    """``train.workers``, or with -1 (auto): 0 for in-memory datasets, else up to 4 (one core left free)."""
    if cfg.workers >= 0:
        return cfg.workers
    if not getattr(dataset, "reads_files", False):
        return 0
    return max(0, min(4, (os.cpu_count() or 1) - 1))


class _StepBatches(torch.utils.data.Sampler):
    """The index lists of every micro-batch from ``start`` on, in training order (a pure function of seed,
    epoch, rank): DataLoader workers load them ahead, and a resumed run sees the same batches."""

    def __init__(self, trainer: Trainer, start: int) -> None:
        self.trainer, self.start = trainer, start

    def __iter__(self):
        t = self.trainer
        for step in range(self.start, t.cfg.max_steps):
            for micro in range(t.cfg.grad_accum):
                yield StepIndices(t.batch_indices(step, micro), t.cfg.seed, step)

    def __len__(self) -> int:
        return (self.trainer.cfg.max_steps - self.start) * self.trainer.cfg.grad_accum


class StepIndices(list):
    """A micro-batch's sample indices with the (seed, step) they are drawn for: a dataset with random per-sample
    augmentation (``augmented_item``) seeds each item from (seed, step, index), so augmentations are as exact under
    resume, and as independent of the number of DataLoader workers, as the data order."""

    def __init__(self, indices: list[int], seed: int, step: int) -> None:
        super().__init__(indices)
        self.seed, self.step = seed, step


class _Fetch(torch.utils.data.Dataset):
    def __init__(self, dataset: Sequence[dict[str, Any]], collate: Callable[[list[Any]], Any]) -> None:
        self.dataset, self.collate = dataset, collate

    def __getitem__(self, indices: list[int]) -> Any:
        if isinstance(indices, StepIndices) and hasattr(self.dataset, "augmented_item"):
            return self.collate([self.dataset.augmented_item(i, (indices.seed, indices.step, i)) for i in indices])
        return self.collate([self.dataset[i] for i in indices])

    def __len__(self) -> int:
        return len(self.dataset)


def make_optimizer(model: nn.Module, ocfg: OptimConfig, device: torch.device, sharded: bool = False
                   ) -> torch.optim.AdamW:
    """AdamW, no weight decay on biases and norms; torch's fused kernel where it has one for the device (one
    kernel for all parameters instead of a loop over them; the same update up to rounding)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": ocfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if not sharded and device.type in ("cuda", "cpu"):
        try:
            return torch.optim.AdamW(groups, lr=ocfg.lr, fused=True)
        except RuntimeError:  # a dtype or device the fused kernel does not take
            pass
    return torch.optim.AdamW(groups, lr=ocfg.lr)


def freeze_frozen_norms(model: nn.Module) -> list[str]:
    """Put BatchNorm layers whose own weights are frozen into eval mode: a frozen encoder (linear probe,
    LiteMedSAM's image encoder while its decoder trains, the base under LoRA adapters) keeps the statistics it was
    trained with instead of drifting to the statistics of small training batches. Returns their names."""
    frozen = []
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine and not m.weight.requires_grad:
            m.eval()
            frozen.append(name)
    return frozen


def to_device(batch: Any, device: torch.device) -> Any:
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


class Trainer:
    """Train ``model`` on ``dataset`` (indexable; items are dicts of tensors) into ``run_dir``."""

    def __init__(self, model: nn.Module, dataset: Sequence[dict[str, Any]], train: TrainConfig,
                 optim: OptimConfig, run_dir: str | Path,
                 collate: Callable[[list[Any]], Any] = collate_samples, run_info: dict[str, Any] | None = None,
                 handlers: Sequence[Handler] = ()):
        self.model, self.dataset, self.cfg, self.ocfg = model, dataset, train, optim
        self.run_dir, self.collate, self.run_info = Path(run_dir), collate, run_info or {}
        self.ckpt_dir = self.run_dir / "checkpoints" / "last"
        check_train_config(train)
        self.rank, self.world = init_distributed()
        self.device = _device()
        # the parts this configuration asks for (mmfm.engine.handlers), then the caller's own
        self.handlers: list[Handler] = [*feature_handlers(self), *handlers]

    # -- data order -------------------------------------------------------------------------------------------
    def steps_per_epoch(self) -> int:
        per_step = self.cfg.batch_size * self.world * self.cfg.grad_accum
        n = len(self.dataset) // per_step
        if n == 0:
            raise ConfigError(f"the dataset has {len(self.dataset)} samples, fewer than one optimiser step needs "
                              f"({per_step} = batch_size x processes x grad_accum)", "lower train.batch_size")
        return n

    def batch_indices(self, step: int, micro: int) -> list[int]:
        if self.cfg.dp.epsilon:  # DP-SGD: Poisson sampling, as the privacy accountant assumes
            return poisson_indices(len(self.dataset), self.cfg.batch_size, self.cfg.seed, step)
        epoch, k = divmod(step, self.steps_per_epoch())
        g = torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch)
        order = torch.randperm(len(self.dataset), generator=g)
        b = self.cfg.batch_size
        start = ((k * self.cfg.grad_accum + micro) * self.world + self.rank) * b
        return order[start:start + b].tolist()

    def _stream(self, start: int) -> Any:
        """Batches of a streaming dataset (shards), pass after pass; each rank reads its own shards, so ranks
        never wait on each other for data. A resumed run replays the passes up to its step (same order)."""
        cfg, epoch = self.cfg, 0
        skip = start * cfg.grad_accum
        while True:
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(epoch)
            got = 0
            loader = torch.utils.data.DataLoader(self.dataset, batch_size=cfg.batch_size, drop_last=True,
                                                 collate_fn=self.collate, num_workers=num_workers(cfg, self.dataset),
                                                 pin_memory=self.device.type == "cuda")
            for batch in loader:
                got += 1
                if skip:
                    skip -= 1
                    continue
                yield batch
            if got == 0:
                raise ConfigError(f"the stream gave this process no full batch of {cfg.batch_size}",
                                  "lower train.batch_size or train.workers, or write more, smaller shards")
            epoch += 1

    # -- loop -------------------------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        cfg = self.cfg
        seed_everything(cfg.seed)
        self.precision = announce_precision(cfg, self.device)
        self.run_info["precision"] = self.precision.as_dict()
        fit = FitState(self, self.precision, self.world > 1 and cfg.strategy == "fsdp", clip=self.ocfg.grad_clip)
        fit.accumulate = lambda micro_batches, used: self._accumulate(fit, micro_batches, used)
        self._call("on_fit_start", fit)
        self._place(fit)
        self._resume_if_saved(fit)
        # an encoder's interface holds parameters that some objectives never use (a ViT's mask token outside
        # MAE/SimMIM): DDP must not wait for their gradients
        fit.ddp = fit.run = (torch.nn.parallel.DistributedDataParallel(fit.model, find_unused_parameters=True)
                             if self.world > 1 and not fit.sharded else fit.model)
        self._call("on_loop_start", fit)
        metrics_path = self._open_metrics(fit.start)
        bar = tqdm(total=cfg.max_steps, initial=fit.start, disable=not (cfg.progress and is_main()), desc="train",
                   dynamic_ncols=True)
        fit.model.train()
        freeze_frozen_norms(fit.model)
        t0, last, batches = time.time(), {}, self._batches(fit.start)
        for step in range(fit.start, cfg.max_steps):
            fit.step, factor = step, lr_factor(step, self.ocfg, cfg.max_steps)
            for group in fit.opt.param_groups:
                group["lr"] = self.ocfg.lr * factor
            micro_batches = [to_device(next(batches), self.device) for _ in range(cfg.grad_accum)]
            fit.losses = fit.accumulate(micro_batches, fit.precision.used)
            del micro_batches
            self._optimizer_step(fit)
            done = step + 1
            last = {"step": done, "lr": self.ocfg.lr * factor, **fit.losses}
            self._call("on_record", fit, last)
            if is_main() and fit.logs(done):
                rec = {**last, "epoch": step // self.steps_per_epoch(), "seconds": round(time.time() - t0, 3)}
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(rec) + "\n")
            bar.update(1)
            bar.set_postfix(loss=f"{fit.losses['loss']:.4f}")
            if done % cfg.ckpt_every == 0 or done == cfg.max_steps:
                state = {"step": done, "run_info": self.run_info}
                self._call("on_checkpoint", fit, state)
                self._save(fit.model, fit.opt, fit.sharded, state)
            self._call("on_step_end", fit)
        del batches  # stop the loader's workers
        bar.close()
        self._call("on_fit_end", fit)
        return last

    def _call(self, point: str, fit: FitState, *args: Any) -> None:
        for h in self.handlers:
            getattr(h, point)(fit, *args)

    def _place(self, fit: FitState) -> None:
        """The model on the device with its speed options (FSDP shards a copy: the caller's module stays whole
        and gets the weights at the end), and its optimiser."""
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.model.parameters())
        self.run_info["parameters"] = {"trainable": trainable, "total": total, "fraction": trainable / max(total, 1)}
        model = (copy.deepcopy(self.model) if fit.sharded else self.model).to(self.device)
        if self.cfg.grad_checkpointing and not enable_grad_checkpointing(model):
            raise ConfigError("train.grad_checkpointing=true, but no encoder in this model supports it",
                              "the ViT, Swin, open_clip and transformers text encoders do; drop the option")
        if self.cfg.channels_last:
            to_channels_last(model)
        if self.world > 1:  # batch statistics over the global batch, as a single process would compute them
            model = convert_batchnorm(model)
        if fit.sharded:
            from mmfm.engine.fsdp import shard
            shard(model)
        fit.model = model
        fit.opt = make_optimizer(model, self.ocfg, self.device, fit.sharded or not fit.fused_optimizer)

    def _resume_if_saved(self, fit: FitState) -> None:
        recover_interrupted_save(self.ckpt_dir)
        if not self.ckpt_dir.exists():
            return
        state = read_state(self.ckpt_dir)
        if state.get("run_info", {}).get("config") != self.run_info.get("config"):
            raise CheckpointError(f"{self.run_dir} holds a run with another configuration",
                                  "write to a new output folder (mmfm train / pretrain: out=DIR; quickstart: "
                                  "--out DIR) or delete the old run")
        fit.resumed = self._resume(fit.model, fit.opt, fit.sharded)
        fit.start = int(fit.resumed["step"])
        if is_main():
            logger.info(f"resuming {self.run_dir} from step {fit.start}")

    def _open_metrics(self, start: int) -> Path:
        path = self.run_dir / "metrics.jsonl"
        if is_main():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._truncate_metrics(path, start)
        return path

    def _batches(self, start: int) -> Any:
        if isinstance(self.dataset, torch.utils.data.IterableDataset):
            return self._stream(start)
        return iter(torch.utils.data.DataLoader(
            _Fetch(self.dataset, self.collate), sampler=_StepBatches(self, start), batch_size=None,
            num_workers=num_workers(self.cfg, self.dataset), pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(self.cfg.seed)))  # leaves the global RNG (dropout, masks) alone

    def _optimizer_step(self, fit: FitState) -> None:
        fit.scaling.unscale(fit.opt)
        if fit.clip:
            torch.nn.utils.clip_grad_norm_(fit.model.parameters(), fit.clip)
        fit.scaling.step(fit.opt)   # a gradient scaler skips the step if fp16 gradients overflowed
        fit.opt.zero_grad(set_to_none=True)

    def _accumulate(self, c: FitState, micro_batches: list[Any], used: str) -> dict[str, float]:
        """Forward and backward of one optimiser step's micro-batches (gradients accumulate; DDP syncs on the
        last); returns the mean of each loss term over micro-batches and processes."""
        cfg, sums = self.cfg, {}
        for micro, batch in enumerate(micro_batches):
            last_micro = micro == len(micro_batches) - 1
            if c.sharded:
                c.model.set_requires_gradient_sync(last_micro)
            sync = nullcontext() if (c.ddp is c.model or last_micro) else c.ddp.no_sync()
            with sync:
                with autocast(used, self.device):
                    out = c.run(batch)
                terms = {k: v for k, v in out.items() if k == "loss" or k.endswith("_loss")}
                values = all_reduce_mean(torch.stack([v.detach().float() for v in terms.values()]))
                if not bool(torch.isfinite(values).all()):  # every rank sees it: none is left waiting
                    raise TrainingDiverged(
                        f"the loss became {values[0].item()} at step {c.step + 1}"
                        + (" on at least one process" if self.world > 1 else "") + f" (precision {used}"
                        + (f"; the run's is {self.precision.used}" if getattr(self, "precision", None)
                           and self.precision.used != used else "") + ")", self._diverged_hint(used))
                loss = out["loss"] / cfg.grad_accum
                c.scaling.scale(loss).backward()
            for k, v in zip(terms, values.tolist()):
                sums[k] = sums.get(k, 0.0) + v / cfg.grad_accum  # mean over processes: the global batch
        return sums

    def _diverged_hint(self, used: str) -> str:
        """What to try after a non-finite loss: full precision first when the run was not in it, then the
        learning rate; and the checkpoint to resume from, only when one was written."""
        run = getattr(getattr(self, "precision", None), "used", used)
        tries = [f"set train.precision=fp32 (this run used {run})"] if run != "fp32" else []
        tries.append("lower optim.lr or set optim.grad_clip=1.0, and check the inputs for extreme values")
        ckpt = self.ckpt_dir
        if ckpt.exists():
            try:
                step = int(read_state(ckpt).get("step", 0))
            except Exception:   # a checkpoint that cannot be read is not promised
                step = 0
            if step:
                tries.append(f"the checkpoint of step {step} ({ckpt}) is kept: re-run to resume from it")
        else:
            tries.append(f"no checkpoint was written yet (every train.ckpt_every={self.cfg.ckpt_every} steps)")
        return "; ".join(tries)

    def _gradients_finite(self, model: nn.Module) -> bool:
        """Whether every gradient is finite on every process (all processes get the same answer)."""
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        finite = bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()) if grads else True
        return all_reduce_mean(torch.tensor([float(finite)], device=self.device)).item() == 1.0

    def _resume(self, model: nn.Module, opt: torch.optim.Optimizer, sharded: bool) -> dict[str, Any]:
        if not sharded:
            return load_checkpoint(self.ckpt_dir, model, opt)
        from mmfm.engine.fsdp import load_full_state
        state, sd, osd, rng = read_checkpoint(self.ckpt_dir, model)
        load_full_state(model, opt, sd, osd)
        restore_rng(rng)
        return state

    def _save(self, model: nn.Module, opt: torch.optim.Optimizer, sharded: bool, state: dict[str, Any]) -> None:
        full: tuple[Any, Any] = (None, None)
        if sharded:  # every rank takes part in gathering the full state; rank 0 writes it
            from mmfm.engine.fsdp import full_state
            full = full_state(model, opt)
        if is_main():
            save_checkpoint(self.ckpt_dir, model, opt, state, model_state=full[0], optim_state=full[1])
        barrier()

    @staticmethod
    def _truncate_metrics(path: Path, step: int) -> None:
        """Drop metric lines logged after the checkpoint we resume from (they will be logged again)."""
        if not path.exists():
            return
        keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
        path.write_text("".join(ln + "\n" for ln in keep))


def train_config_dict(train: TrainConfig, optim: OptimConfig) -> dict[str, Any]:
    return {"train": asdict(train), "optim": asdict(optim)}
