"""Losses compute in fp32 under autocast.

Autocast (``train.precision=bf16|fp16``) runs every matrix product in low precision, also those *inside* a loss:
casting the embeddings with ``.float()`` is not enough, since ``z @ z.T`` under autocast is bf16 again. A
contrastive loss divides similarities by a temperature of 0.07-0.2, so bf16's 8 significant bits would become
errors of several percent in the logits, and a loss or its gradient that is a bf16 number. ``full_precision`` turns
autocast off for the loss and casts its floating-point tensor arguments to fp32: losses stay "tensors in, a scalar
out", and are fp32 numbers whatever the step's precision.

torch has ``torch.amp.custom_fwd(cast_inputs=...)`` for the same job, but for one fixed device type per function;
mmfm's losses run on whichever device their tensors are on, hence this small decorator.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])


def _to_fp32(x: Any) -> Any:
    if torch.is_tensor(x) and x.is_floating_point() and x.dtype != torch.float32 and x.dtype != torch.float64:
        return x.float()
    if isinstance(x, (list, tuple)):
        return type(x)(_to_fp32(v) for v in x)
    return x


def _device_type(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    for v in (*args, *kwargs.values()):
        if torch.is_tensor(v):
            return v.device.type
    return "cpu"


def full_precision(fn: F) -> F:
    """Run ``fn`` with autocast off on its tensors' device and its floating-point tensor arguments in fp32."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        device = _device_type(args, kwargs)
        if not torch.is_autocast_enabled(device):
            return fn(*args, **kwargs)
        with torch.autocast(device, enabled=False):
            return fn(*_to_fp32(args), **{k: _to_fp32(v) for k, v in kwargs.items()})

    return wrapper  # type: ignore[return-value]
