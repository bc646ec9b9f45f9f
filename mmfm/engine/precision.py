"""Which arithmetic a training step uses: ``train.precision=auto|fp32|bf16|fp16``, decided per device.

``auto`` takes bf16 autocast only where the hardware computes it natively, because bf16 without matrix units is
*emulated* and far slower than fp32 (measured on an AVX2-only CPU: bf16 matmul 1.25 GFLOP/s against 68 for fp32
at n=512; ``benchmarks/mae_step.py`` prints both peaks of the machine it runs on):

* a CUDA GPU with bf16 (Ampere and newer): bf16 autocast;
* a CUDA GPU without bf16: fp16 autocast with a gradient scaler;
* a CPU whose flags include ``avx512_bf16`` or ``amx_bf16`` (Cooper Lake, Sapphire Rapids, Zen 4 and newer):
  bf16 autocast;
* any other CPU: fp32.

``MMFM_NATIVE_BF16=1`` (or ``0``) overrides the CPU detection: CI uses it to run the bf16 path of ``auto`` on
machines without bf16 units (emulated, slow but exact in what it exercises), and a container whose /proc/cpuinfo
hides the flags can say what the CPU has.

Autocast keeps matrix products in the low precision and the reductions that need range (softmax, norms, losses)
in fp32; mmfm's losses cast their logits and similarities to fp32 themselves (contrastive temperatures, masked
reconstruction), so a bf16 step's loss is an fp32 number. The decision and its reason go into the run's
``run_info["precision"]``.
"""

from __future__ import annotations

import functools
import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# the flags that decide which precision is fast (bf16/AMX dot products, VNNI, the AVX2/AVX-512 baseline):
# printed by benchmarks and recorded in results provenance
REPORTED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_tile",
                  "amx_int8", "avx512_fp16")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS: fp32 is then chosen)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_native_bf16() -> bool:
    forced = os.environ.get("MMFM_NATIVE_BF16", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return any(f in cpu_flags() for f in _NATIVE_BF16_FLAGS)


def cpu_summary() -> dict[str, object]:
    """The CPU flags that decide precision and speed (for results records and benchmark headers)."""
    flags = cpu_flags()
    return {"flags": sorted(f for f in REPORTED_FLAGS if f in flags), "native_bf16": cpu_has_native_bf16(),
            "native_bf16_forced": os.environ.get("MMFM_NATIVE_BF16", "").strip() in ("0", "1")}


@dataclass(frozen=True)
class Precision:
    requested: str
    used: str          # fp32 | bf16 | fp16
    why: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def resolve_precision(requested: str, device: torch.device) -> Precision:
    """What ``train.precision=requested`` means on ``device`` (``auto`` decides by the hardware, see above)."""
    if requested != "auto":
        return Precision(requested, requested, "asked for")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision("auto", "bf16", f"{torch.cuda.get_device_name(device)} computes bf16 natively")
        return Precision("auto", "fp16", f"{torch.cuda.get_device_name(device)} has no bf16: fp16 with a "
                                         "gradient scaler")
    if device.type == "cpu" and cpu_has_native_bf16():
        have = sorted(f for f in _NATIVE_BF16_FLAGS if f in cpu_flags())
        return Precision("auto", "bf16", f"the CPU has {', '.join(have)}" if have else "MMFM_NATIVE_BF16=1")
    return Precision("auto", "fp32", f"no native bf16 on this {device.type} (bf16 would be emulated, slower)")


def autocast(used: str, device: torch.device) -> AbstractContextManager:
    """The autocast context of a resolved precision (``Precision.used``: fp32 | bf16 | fp16)."""
    if used == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if used == "fp16":
        return torch.autocast(device.type, dtype=torch.float16)
    return nullcontext()


def grad_scaler(precision: Precision, device: torch.device) -> torch.amp.GradScaler | None:
    """fp16 needs loss scaling (its range underflows small gradients); bf16 has fp32's range and does not."""
    return torch.amp.GradScaler(device.type) if precision.used == "fp16" else None
