"""What every benchmark shares: FLOP counting of the fused CPU attention kernels, the machine's measured matmul
peaks (fp32 and bf16: an MFU figure means nothing without the peak it is a fraction of), precision contexts, and
the closing ``ratio:`` line."""

from __future__ import annotations

import time

import torch


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


def peaks(device: torch.device) -> dict[str, float]:
    return {"fp32": matmul_peak(device, torch.float32), "bf16": matmul_peak(device, torch.bfloat16)}


def best_precision(device: torch.device) -> str:
    """bf16 where it is native (mmfm's ``train.precision=auto`` rule), else fp32."""
    from mmfm.engine.precision import resolve_precision

    return resolve_precision("auto", device).used.replace("fp16", "fp32")


def print_ratio(ratio: float, ours: str, theirs: str) -> None:
    """The last lines of every benchmark: both sides' settings, then ``ratio: X.XX`` (ours / theirs speed)."""
    print(f"ours:   {ours}")
    print(f"theirs: {theirs}")
    print(f"ratio: {ratio:.2f}")
