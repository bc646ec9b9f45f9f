"""What every benchmark shares: FLOP counting of the fused CPU attention kernels, the machine's measured matmul
peaks (fp32 and bf16: an MFU figure means nothing without the peak it is a fraction of, and nothing at all against
an *emulated* bf16 peak), each side's best *working* precision (found by trying), the machine header every
benchmark prints, the provenance every results record carries, and the closing ``ratio:`` line."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path

import torch

from mmfm.engine.precision import REPORTED_FLAGS, cpu_flags, cpu_has_native_bf16, cpu_summary, resolve_precision

ROOT = Path(__file__).resolve().parents[1]
FLAGS = REPORTED_FLAGS   # the CPU flags that decide which precision is fast (one list, mmfm.engine.precision)


def register_fused_attention_flops() -> None:
    """Count the fused CPU attention kernels (FlopCounterMode gives them 0 otherwise) with torch's own standard
    formula (``sdpa_flop_count``: 4*B*h*N*N*d forward, twice that backward), so every implementation is counted
    alike."""
    from torch.utils import flop_counter as fcm

    aten = torch.ops.aten
    for op, fn in ((getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None), "fwd"),
                   (getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None), "bwd")):
        if op is None or op in fcm.flop_registry or op.default in fcm.flop_registry:
            continue
        if fn == "fwd":
            def formula(q, k, v, *args, out_shape=None, **kw):
                return fcm.sdpa_flop_count(q, k, v)
        else:
            def formula(grad_out, q, k, v, *args, out_shape=None, **kw):
                return fcm.sdpa_backward_flop_count(grad_out, q, k, v)
        fcm.register_flop_formula(op)(formula)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def check_rounds(n: int, what: str = "--rounds") -> int:
    """A median needs at least 3 values: fewer is an error, not a quieter number."""
    if n < 3:
        raise SystemExit(f"{what}={n}: a median over fewer than 3 rounds says nothing; use {what} 3 or more")
    return n


def matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 2048,
                seconds: float = 1.0) -> float:
    """FLOP/s of an n x n matmul in ``dtype`` (repeated for about ``seconds``; emulated bf16 is ~100x slower than
    fp32 on CPUs without bf16 units, so the size shrinks until one product takes under a second)."""
    while True:
        a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        if time.perf_counter() - t < seconds or n <= 256:
            break
        n //= 2
    reps, t = 0, time.perf_counter()
    while reps < 3 or time.perf_counter() - t < seconds:
        a @ b
        reps += 1
    sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - t)


def peaks(device: torch.device, seconds: float = 1.0) -> dict[str, float]:
    return {"fp32": matmul_peak(device, torch.float32, seconds=seconds),
            "bf16": matmul_peak(device, torch.bfloat16, seconds=seconds)}


def native(precision: str, device: torch.device) -> bool:
    """Does ``device`` compute ``precision`` in hardware? (fp32 always; bf16 by mmfm's rule: GPU support, or the
    CPU's avx512_bf16/amx_bf16 flags, or ``MMFM_NATIVE_BF16=1``.)"""
    if precision == "fp32":
        return True
    if device.type == "cuda":
        return precision == "fp16" or torch.cuda.is_bf16_supported()
    return precision == "bf16" and cpu_has_native_bf16()


def peak_fraction(flops_per_s: float, precision: str, device: torch.device,
                  peak_of: dict[str, float]) -> tuple[float | None, str]:
    """The fraction of the matmul peak *of the precision the step ran in*, or ``None`` and why it would mean
    nothing (an emulated bf16 peak is a software loop, not the machine's arithmetic rate)."""
    if precision not in peak_of:
        return None, f"no {precision} peak measured"
    if not native(precision, device):
        return None, f"{precision} is emulated on this {device.type}: a fraction of an emulated peak means nothing"
    return flops_per_s / peak_of[precision], ""


def best_precision(device: torch.device) -> str:
    """bf16 where it is native (mmfm's ``train.precision=auto`` rule, ``MMFM_NATIVE_BF16`` included), else fp32."""
    return resolve_precision("auto", device).used.replace("fp16", "fp32")


def working_precision(asked: str, try_step: Callable[[str], object], device: torch.device,
                      compare_fp32: bool = True) -> tuple[str, str]:
    """The precision one side runs in, and why where it is not ``asked``: found by trying, not by a list of known
    failures (MONAI's MaskedAutoEncoderViT cannot run under bf16 autocast today, "Index put requires the source
    and destination dtypes match"; a fixed MONAI is measured in bf16 the day it can).

    ``try_step(p)`` runs one step at precision ``p``. A failing ``asked`` falls back to fp32. With
    ``compare_fp32`` (``--precision best``), a working low precision is also timed against fp32 (one warm-up and
    one timed step each) and fp32 is taken where it is clearly faster (by more than 10%): native bf16 units speed
    up matrix products, but some kernels (e.g. LiteMedSAM's convolutions on a CPU) run slower in bf16."""
    if asked == "fp32":
        return "fp32", ""
    try:
        try_step(asked)                          # the test that it runs (and a warm-up)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return "fp32", f"{asked} failed ({first[:160]}), so fp32"
    if not compare_fp32:
        return asked, ""
    timings: dict[str, float] = {}
    for p in (asked, "fp32"):
        if p == "fp32":
            try_step(p)                          # warm-up
        sync(device)
        t = time.perf_counter()
        try_step(p)
        sync(device)
        timings[p] = time.perf_counter() - t
    if timings["fp32"] * 1.1 < timings[asked]:
        return "fp32", (f"{asked} runs but is slower here ({timings[asked] * 1e3:.0f} ms against "
                        f"{timings['fp32'] * 1e3:.0f} ms for fp32 in a trial step), so fp32")
    return asked, ""


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_header(device: torch.device) -> str:
    """One line every benchmark prints first: the device, the CPU flags that matter, and whether bf16 is native
    (and why: the flags, or ``MMFM_NATIVE_BF16``)."""
    have = cpu_flags()
    flags = ", ".join(f"{f} {'yes' if f in have else 'no'}" for f in FLAGS)
    why = f" (MMFM_NATIVE_BF16={os.environ['MMFM_NATIVE_BF16'].strip()})" if cpu_summary()["native_bf16_forced"] else ""
    return (f"device {device.type}: {device_name(device)}; torch {torch.__version__}, {torch.get_num_threads()} "
            f"threads; cpu flags: {flags}; native bf16 here: {'yes' if native('bf16', device) else 'no'}{why}")


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _load() -> float | None:
    """The 1-minute load average when the record is written: on a shared machine, how many others ran too."""
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def _portable(arg: str) -> str:
    """A command-line argument without this machine's absolute paths (relative to the repository, else the name)."""
    p = Path(arg)
    if not p.is_absolute():
        return arg
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else p.name


def provenance(device: torch.device, precision: dict[str, str], notes: Iterable[str] = ()) -> dict:
    """What a results record needs to be read later: the code (commit, and whether the benchmark or the package
    differed from it), when, torch, the device, the CPU flags, and each side's precision (with why it is not the
    best one where it is not)."""
    dirty = bool(_git("status", "--porcelain", "--", "benchmarks", "mmfm"))
    return {
        "commit": _git("rev-parse", "HEAD") or "unknown", "uncommitted_changes": dirty,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__, "device": f"{device.type}: {device_name(device)}",
        "threads": torch.get_num_threads(), "load_average_1min": _load(),
        "cpu_flags": sorted(f for f in FLAGS if f in cpu_flags()),
        "native_bf16": native("bf16", device), "precision": dict(precision), "notes": [n for n in notes if n],
        "command": " ".join(["python", *map(_portable, sys.argv)]),
    }


def write_records(path: str, records: Iterable, prov: dict) -> None:
    """Result records (``mmfm.evaluation.results.ResultRecord``), each with the run's provenance, written
    atomically (for scripts/doc_tables.py)."""
    from mmfm.evaluation.results import write_json_atomic

    write_json_atomic(path, [{**asdict(r), "provenance": prov} for r in records])
    print(f"wrote {path}")


def print_ratio(ratio: float, ours: str, theirs: str) -> None:
    """The last lines of every benchmark: both sides' settings, then ``ratio: X.XX`` (ours / theirs speed)."""
    print(f"ours:   {ours}")
    print(f"theirs: {theirs}")
    print(f"ratio: {ratio:.2f}")
