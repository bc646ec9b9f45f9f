"""MAE training step: mmfm vs MONAI's MaskedAutoEncoderViT, same ViT configuration, side by side in one process.

Prints the throughput ratio (mmfm / MONAI), the peak memory of each step, and the step's achieved FLOP/s as a
fraction of a measured matrix-multiply peak on the same machine. Throughput is measured side by side in one
process (alternating rounds). On CPU, peak memory is measured for each implementation in a fresh child process
(peak RSS during training steps minus RSS before the first step), because a shared allocator hides it in one
process; on a GPU it is ``torch.cuda.max_memory_allocated`` in the same process.

    .venv/bin/python benchmarks/mae_step.py [--batch 32] [--img 128] [--patch 8] [--steps 10] [--device cpu]
                                            [--json docs/results/bench_mae.json]

Implementations: ``mmfm`` (timm blocks, fused scaled-dot-product attention), ``monai`` (MaskedAutoEncoderViT as
shipped: attention by einsum) and ``monai+flash`` (the same network with MONAI's ``use_flash_attention`` switched
on in every attention block, i.e. torch's fused SDPA). FLOPs: torch's FLOP counter, with the fused CPU attention
kernels registered here (the counter has no formula for them and would count 0; the standard formula, 4*B*h*N*N*d
forward and twice that backward, is torch's own ``sdpa_flop_count``), so every implementation is counted alike.
Before timing, the loss check runs both libraries' losses on the same MONAI predictions and masks: mmfm's
``masked_reconstruction_loss`` must equal the masked MSE the MONAI step uses (``loss_gap``, exact up to fp).

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
from mmfm.evaluation.results import ResultRecord, write_results
from mmfm.objectives.losses import masked_reconstruction_loss
from mmfm.objectives.masked import MAE
from mmfm.objectives.masking import patchify


def _register_fused_attention_flops() -> None:
    """Count the fused CPU attention kernels (FlopCounterMode gives them 0 otherwise)."""
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


_register_fused_attention_flops()


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
    step = STEPS[name](args, device)
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


def monai_model(args, device, flash: bool = False):
    from monai.networks.blocks.selfattention import SABlock

    model = MaskedAutoEncoderViT(1, args.img, args.patch, hidden_size=192, mlp_dim=768, num_layers=6, num_heads=3,
                                 masking_ratio=0.75, decoder_hidden_size=128, decoder_mlp_dim=512,
                                 decoder_num_layers=2, decoder_num_heads=4, spatial_dims=2, qkv_bias=True).to(device)
    if flash:  # MaskedAutoEncoderViT does not pass the option through; its attention blocks have it
        for m in model.modules():
            if isinstance(m, SABlock):
                m.use_flash_attention = True
    return model


def monai_loss(pred, x, mask, patch):
    target = patchify(x, patch)
    return (F.mse_loss(pred, target, reduction="none").mean(-1) * mask).sum() / mask.sum()


def monai_step_fn(args, device, flash: bool = False):
    model = monai_model(args, device, flash)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(x):
        pred, mask = model(x)                                   # (B, N, p*p), (B, N) 1 = masked
        loss = monai_loss(pred, x, mask, args.patch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


STEPS = {"mmfm": mmfm_step_fn, "monai": monai_step_fn, "monai+flash": lambda a, d: monai_step_fn(a, d, True)}


def loss_gap(args, device) -> float:
    """mmfm's masked-reconstruction loss vs the MONAI step's loss on the same predictions, targets and masks."""
    torch.manual_seed(0)
    x = torch.rand(4, 1, args.img, args.img, device=device)
    with torch.no_grad():
        pred, mask = monai_model(args, device)(x)
        ours, _ = masked_reconstruction_loss(pred, patchify(x, args.patch), mask.bool(), "mse")
        return abs(float(ours) - float(monai_loss(pred, x, mask, args.patch)))


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
    ap.add_argument("--only", choices=list(STEPS), help=argparse.SUPPRESS)
    ap.add_argument("--json", help="also write the numbers as result records (for scripts/doc_tables.py)")
    args = ap.parse_args()
    if args.only:
        return only(args.only, args)
    device = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.rand(args.batch, 1, args.img, args.img, device=device)
    gap = loss_gap(args, device)
    if gap > 1e-5:
        raise SystemExit(f"the two losses differ by {gap}: the comparison would not be like with like")
    fns = {name: fn(args, device) for name, fn in STEPS.items()}
    res = {k: [] for k in fns}
    for _ in range(args.rounds):  # alternate, so that machine noise hits both alike
        for name, fn in fns.items():
            res[name].append(measure(fn, x, args.steps, device))
    med = {k: sorted(v, key=lambda r: r[0])[len(v) // 2] for k, v in res.items()}
    if device.type == "cpu":
        med = {k: (dt, child_peak_memory(k, args), fl) for k, (dt, _, fl) in med.items()}
    peak = matmul_peak(device)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}, "
          f"image {args.img}^2, patch {args.patch}; loss check: |mmfm - MONAI| = {gap:.2e}")
    print(f"matmul peak: {peak / 1e9:.1f} GFLOP/s")
    records = []
    for name, (dt, mem, flops) in med.items():
        ratio = med[name][0] / med["mmfm"][0]
        print(f"{name:11s} {args.batch / dt:8.1f} img/s  step {dt * 1e3:7.1f} ms  peak mem {mem:7.1f} MiB  "
              f"{flops / 1e9:6.2f} GFLOP/step  {flops / dt / 1e9:6.1f} GFLOP/s = {flops / dt / peak:.1%} of peak  "
              f"mmfm speed-up over it: {ratio:.2f}")
        for metric, v in (("img/s", args.batch / dt), ("GFLOP per step", flops / 1e9),
                          ("fraction of matmul peak", flops / dt / peak), ("peak MiB", mem),
                          ("mmfm speed-up over it", ratio)):
            records.append(ResultRecord("mae_step", f"2D {args.img}^2 b{args.batch} p{args.patch} {device.type}",
                                        "bench", name, metric, float(v), 0))
    if args.json:
        write_results(args.json, records)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
