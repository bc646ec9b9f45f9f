"""MAE training step: mmfm vs MONAI's MaskedAutoEncoderViT, same ViT configuration, side by side in one process.

Prints the throughput ratio (mmfm / MONAI), the peak memory of each step, and the step's achieved FLOP/s as a
fraction of a measured matrix-multiply peak on the same machine.

    .venv/bin/python benchmarks/mae_step.py [--batch 32] [--img 128] [--patch 8] [--steps 10] [--device cpu]

Configuration (both): 2D, 1 channel, ViT dim 192, depth 6, 3 heads, MLP 768, qkv bias; decoder dim 128, depth 2,
4 heads, MLP 512; mask ratio 0.75; MSE on masked patches; AdamW.
"""

from __future__ import annotations

import argparse
import gc
import os
import threading
import time

import torch
import torch.nn.functional as F
from monai.networks.nets import MaskedAutoEncoderViT
from torch.utils.flop_counter import FlopCounterMode

from mmfm.encoders.vit import ViTEncoder
from mmfm.objectives.masked import MAE
from mmfm.objectives.masking import patchify


class PeakRSS:
    """Peak resident memory above the level at entry (sampled every 2 ms), for CPU runs."""

    def __enter__(self):
        gc.collect()
        self.base = self.peak = self._rss()
        self.running = True
        self.t = threading.Thread(target=self._poll, daemon=True)
        self.t.start()
        return self

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _poll(self) -> None:
        while self.running:
            self.peak = max(self.peak, self._rss())
            time.sleep(0.002)

    def __exit__(self, *a):
        self.running = False
        self.t.join()
        self.mb = (self.peak - self.base) / 2**20


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
    with PeakRSS() as mem:
        t = time.perf_counter()
        for _ in range(steps):
            step(x)
        sync(device)
        dt = (time.perf_counter() - t) / steps
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else mem.mb
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
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.rand(args.batch, 1, args.img, args.img, device=device)
    fns = {"mmfm": mmfm_step_fn(args, device), "monai": monai_step_fn(args, device)}
    res = {k: [] for k in fns}
    for _ in range(args.rounds):  # alternate, so that machine noise hits both alike
        for name, fn in fns.items():
            res[name].append(measure(fn, x, args.steps, device))
    med = {k: sorted(v, key=lambda r: r[0])[len(v) // 2] for k, v in res.items()}
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
