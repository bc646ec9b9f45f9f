"""MAE training step: mmfm vs MONAI's MaskedAutoEncoderViT, same ViT configuration, side by side in one process.

Prints the throughput ratio (mmfm / MONAI), the peak memory of each step, and the step's achieved FLOP/s as a
fraction of a measured matrix-multiply peak on the same machine. Throughput is measured side by side in one
process (alternating rounds). On CPU, peak memory is measured for each implementation in a fresh child process
(peak RSS during training steps minus RSS before the first step), because a shared allocator hides it in one
process; on a GPU it is ``torch.cuda.max_memory_allocated`` in the same process.

    .venv/bin/python benchmarks/mae_step.py [--batch 32] [--img 128] [--patch 8] [--steps 10] [--device cpu]

Configuration (both): 2D, 1 channel, ViT dim 192, depth 6, 3 heads, MLP 768, qkv bias; decoder dim 128, depth 2,
4 heads, MLP 512; mask ratio 0.75; MSE on masked patches; AdamW.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from monai.networks.nets import MaskedAutoEncoderViT
from torch.utils.flop_counter import FlopCounterMode

from mmfm.encoders.vit import ViTEncoder
from mmfm.objectives.masked import MAE
from mmfm.objectives.masking import patchify


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child_peak_memory(name: str, args) -> float:
    """Run ``--only name`` in a fresh process; it prints its step-time peak RSS above its pre-step RSS."""
    cmd = [sys.executable, __file__, "--only", name, "--batch", str(args.batch), "--img", str(args.img),
           "--patch", str(args.patch), "--device", "cpu"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def only(name: str, args) -> None:
    device = torch.device("cpu")
    x = torch.rand(args.batch, 1, args.img, args.img)
    step = {"mmfm": mmfm_step_fn, "monai": monai_step_fn}[name](args, device)
    gc.collect()
    base = rss_mb()
    for _ in range(3):
        step(x)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(max(0.0, peak - base))


def mmfm_step_fn(args, device):
    enc = ViTEncoder(2, 1, args.patch, dim=192, depth=6, heads=3, max_grid=args.img // args.patch)
    model = MAE(enc, mask_ratio=0.75, decoder_dim=128, decoder_depth=2, decoder_heads=4, norm_pix=False).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(x):
        loss = model({"image": x})["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def monai_step_fn(args, device):
    model = MaskedAutoEncoderViT(1, args.img, args.patch, hidden_size=192, mlp_dim=768, num_layers=6, num_heads=3,
                                 masking_ratio=0.75, decoder_hidden_size=128, decoder_mlp_dim=512,
                                 decoder_num_layers=2, decoder_num_heads=4, spatial_dims=2, qkv_bias=True).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(x):
        pred, mask = model(x)                                   # (B, N, p*p), (B, N) 1 = masked
        target = patchify(x, args.patch)
        loss = (F.mse_loss(pred, target, reduction="none").mean(-1) * mask).sum() / mask.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(step, x, steps, device):
    for _ in range(3):
        step(x)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for _ in range(steps):
        step(x)
    sync(device)
    dt = (time.perf_counter() - t) / steps
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else float("nan")
    with FlopCounterMode(display=False) as fc:
        step(x)
    return dt, peak, fc.get_total_flops()


def matmul_peak(device, n=2048, reps=10):
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n ** 3 * reps / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--img", type=int, default=128)
    ap.add_argument("--patch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is reported")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--only", choices=["mmfm", "monai"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.only:
        return only(args.only, args)
    device = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.rand(args.batch, 1, args.img, args.img, device=device)
    fns = {"mmfm": mmfm_step_fn(args, device), "monai": monai_step_fn(args, device)}
    res = {k: [] for k in fns}
    for _ in range(args.rounds):  # alternate, so that machine noise hits both alike
        for name, fn in fns.items():
            res[name].append(measure(fn, x, args.steps, device))
    med = {k: sorted(v, key=lambda r: r[0])[len(v) // 2] for k, v in res.items()}
    if device.type == "cpu":
        med = {k: (dt, child_peak_memory(k, args), fl) for k, (dt, _, fl) in med.items()}
    peak = matmul_peak(device)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}, "
          f"image {args.img}^2, patch {args.patch}")
    print(f"matmul peak: {peak / 1e9:.1f} GFLOP/s")
    for name, (dt, mem, flops) in med.items():
        print(f"{name:6s} {args.batch / dt:8.1f} img/s  step {dt * 1e3:7.1f} ms  peak mem {mem:7.1f} MiB  "
              f"{flops / 1e9:6.2f} GFLOP/step  {flops / dt / 1e9:6.1f} GFLOP/s = {flops / dt / peak:.1%} of peak")
    print(f"throughput ratio mmfm / MONAI: {med['monai'][0] / med['mmfm'][0]:.2f}")


if __name__ == "__main__":
    main()
