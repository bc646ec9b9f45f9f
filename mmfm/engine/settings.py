"""The training settings of a run (``train.*``, ``optim.*``, ``train.dp.*``) as plain dataclasses.

Kept apart from the training loop and from Opacus so that reading and checking a config file imports no torch:
`mmfm train bad.yaml` reports its error at once. ``mmfm.engine.trainer`` and ``mmfm.engine.privacy`` re-export
these classes, so existing imports keep working.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mmfm.options import Parallelism, Peft, Precision, Schedule  # str enums: a typo fails when the config loads


@dataclass
class DPConfig:
    epsilon: float = 0.0           # privacy budget of the whole run; 0 = no differential privacy
    delta: float = 1e-5            # should be below 1 / training samples
    max_grad_norm: float = 1.0     # per-sample gradient clipping norm
    fix_norms: bool = False        # replace layers Opacus cannot handle (BatchNorm -> GroupNorm) instead of failing


@dataclass
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 0
    schedule: Schedule = Schedule.COSINE  # cosine | constant
    min_lr_ratio: float = 0.0
    grad_clip: float = 0.0         # 0 = off


@dataclass
class TrainConfig:
    max_steps: int = 100
    batch_size: int = 32
    grad_accum: int = 1
    seed: int = 0
    precision: Precision = Precision.AUTO  # auto (bf16 where the device computes it natively, fp16 on older
                                   # GPUs, else fp32; see mmfm.engine.precision) | fp32 | bf16 | fp16
    workers: int = -1              # DataLoader worker processes per rank; -1 auto: up to 4 for datasets that read
                                   # files, 0 for in-memory arrays (workers would only add copying)
    ckpt_every: int = 50
    log_every: int = 10
    progress: bool = True
    tensorboard: bool = False
    compile: bool = False          # torch.compile the model (the first steps wait for the compiler)
    channels_last: bool = False    # channels-last memory for 2D/3D convolution weights (faster CNNs on CPU/GPU)
    grad_checkpointing: bool = False  # recompute encoder blocks in backward: less memory, ~1 more forward
    strategy: Parallelism = Parallelism.DDP  # with several torchrun processes: ddp (replicas) | fsdp (sharded
                                   # parameters, gradients and optimiser state, for models that do not fit one device)
    peft: Peft = Peft.NONE         # parameter-efficient tuning of the pretrained parts (mmfm.encoders.adapters):
                                   # lora | dora | loha | lokr; "" trains every parameter
    peft_rank: int = 8
    peft_alpha: float = 16.0
    peft_dropout: float = 0.0
    peft_targets: list[str] = field(default_factory=list)  # layer names (qkv, fc1, re:<regex>); []: all linear
    peft_modules: list[str] = field(default_factory=list)  # modules to adapt; []: every encoder (+ model.adaptable)
    dp: DPConfig = field(default_factory=DPConfig)  # differential privacy (DP-SGD, Opacus): train.dp.epsilon=8
