"""The config options that take one of a fixed set of values, as enums: one owner for each set.

A config file or a ``key=value`` override is coerced to these when it loads (:func:`choose`), so a typo fails
before any data is read, naming the key, the bad value and the valid ones. Each is a :class:`Choice`, a ``str``
enum: a member equals its string (``Schedule.COSINE == "cosine"``) and serialises to it in JSON, so code that
compares with strings and the files a run writes are unchanged (YAML takes :func:`plain`). Torch-free, shared by
every layer (like :mod:`mmfm.errors`).
"""

from __future__ import annotations

import difflib
import enum
from typing import Any, TypeVar

from mmfm.errors import ConfigError


class Choice(str, enum.Enum):
    """A string option's value: equal to its string, printed and formatted as it (``enum.StrEnum`` is 3.11+)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class Schedule(Choice):
    """``optim.schedule``: the learning rate after the warm-up."""

    COSINE = "cosine"
    CONSTANT = "constant"


class Precision(Choice):
    """``train.precision``: auto is bf16 where the device computes it natively, fp16 on older GPUs, else fp32."""

    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


class Parallelism(Choice):
    """``train.strategy``: how several torchrun processes share the model (replicas or sharded parameters)."""

    DDP = "ddp"
    FSDP = "fsdp"


class Peft(Choice):
    """``train.peft``: parameter-efficient tuning of the pretrained parts; "" trains every parameter."""

    NONE = ""
    LORA = "lora"
    DORA = "dora"
    LOHA = "loha"
    LOKR = "lokr"


class Aggregation(Choice):
    """``federate.strategy``: how the server combines the sites' updates."""

    FEDAVG = "fedavg"
    FEDPROX = "fedprox"


class ContinualMethod(Choice):
    """``continual.method``: experts + gate, plain fine-tuning in sequence, or replay of earlier tasks."""

    MOE = "moe"
    SEQUENTIAL = "sequential"
    REPLAY = "replay"


class MissingModalities(Choice):
    """``data.missing_modalities``: a sample lacking one of data.modalities is an error, or zeros."""

    ERROR = "error"
    ZERO = "zero"


class Prompt(Choice):
    """``task.prompt`` of promptable segmentation: what the model is prompted with in training."""

    BOX = "box"
    POINTS = "points"
    MIXED = "mixed"
    TEXT = "text"
    TEXT_BOX = "text+box"


E = TypeVar("E", bound=enum.Enum)


def choose(kind: type[E], value: Any, key: str) -> E:
    """``value`` as a member of ``kind``, or a ConfigError naming ``key``, the value and the valid values."""
    if isinstance(value, kind):
        return value
    valid = [m.value for m in kind]
    if isinstance(value, str) and value in valid:
        return kind(value)
    close = difflib.get_close_matches(str(value), [v for v in valid if v], n=1)
    shown = ", ".join(repr(v) if v == "" else str(v) for v in valid)
    raise ConfigError(f"{key}={value!r} is not one of the values it takes",
                      (f"did you mean {key}={close[0]}? " if close else "") + f"valid: {shown}")


def plain(value: Any) -> Any:
    """``value`` with every enum member replaced by its value, through dicts and lists (for YAML)."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
