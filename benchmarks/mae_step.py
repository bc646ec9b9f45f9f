"""MAE training step: mmfm vs MONAI's MaskedAutoEncoderViT, same ViT configuration, side by side in one process.

Prints the throughput ratio (mmfm / MONAI), the peak memory of each step, and the step's achieved FLOP/s as a
fraction of a measured matrix-multiply peak on the same machine. Throughput is measured side by side in one
process (alternating rounds). On CPU, peak memory is measured for each implementation in a fresh child process
(peak RSS during training steps minus RSS before the first step), because a shared allocator hides it in one
process; on a GPU it is ``torch.cuda.max_memory_allocated`` in the same process.

    .venv/bin/python benchmarks/mae_step.py [--batch 32] [--img 128] [--patch 8] [--steps 10] [--device cpu]
                                            [--size mini|vit_b] [--precision best|fp32|bf16]
                                            [--json docs/results/bench_mae.json]

``--precision best`` (default) runs both sides in the best precision of the device (bf16 autocast where it is
native, else fp32; mmfm's ``train.precision=auto`` rule); the ratio line is mmfm over MONAI at that precision. The
peak is the measured matmul peak *of that precision*, and both peaks are printed. ``--size vit_b``: ViT-B/16
(768 wide, 12 deep, 12 heads, MLP 3072; decoder 512 x 8, 16 heads) on 224 x 224, MAE's own configuration.
mmfm's step uses its engine's optimiser (fused AdamW where torch has one), MONAI's a plain ``torch.optim.AdamW``
as its tutorials do.

Implementations: ``mmfm`` (timm blocks, fused scaled-dot-product attention), ``monai`` (MaskedAutoEncoderViT as
shipped: attention by einsum) and ``monai+flash`` (the same network with MONAI's ``use_flash_attention`` switched
on in every attention block, i.e. torch's fused SDPA). FLOPs: torch's FLOP counter, with the fused CPU attention
kernels registered here (the counter has no formula for them and would count 0; the standard formula, 4*B*h*N*N*d
forward and twice that backward, is torch's own ``sdpa_flop_count``), so every implementation is counted alike.
Before timing, the loss check runs both libraries' losses on the same MONAI predictions and masks: mmfm's
``masked_reconstruction_loss`` must equal the masked MSE the MONAI step uses (``loss_gap``, exact up to fp).

Configuration (both, ``--size mini``): 2D, 1 channel, ViT dim 192, depth 6, 3 heads, MLP 768, qkv bias; decoder
dim 128, depth 2, 4 heads, MLP 512; mask ratio 0.75; MSE on masked patches; AdamW.
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
from _common import best_precision, peaks, print_ratio, register_fused_attention_flops, sync
from monai.networks.nets import MaskedAutoEncoderViT
from torch.utils.flop_counter import FlopCounterMode

from mmfm.encoders.vit import ViTEncoder
from mmfm.engine.precision import autocast
from mmfm.engine.trainer import OptimConfig, make_optimizer
from mmfm.evaluation.results import ResultRecord, write_results
from mmfm.objectives.losses import masked_reconstruction_loss
from mmfm.objectives.masked import MAE
from mmfm.objectives.masking import patchify

register_fused_attention_flops()


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child_peak_memory(name: str, args) -> float:
    """Run ``--only name`` in a fresh process; it prints its step-time peak RSS above its pre-step RSS."""
    cmd = [sys.executable, __file__, "--only", name, "--batch", str(args.batch), "--img", str(args.img),
           "--patch", str(args.patch), "--device", "cpu", "--size", args.size, "--precision", args.precision]
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


SIZES = {  # encoder (dim, depth, heads, mlp), decoder (dim, depth, heads, mlp)
    "mini": ((192, 6, 3, 768), (128, 2, 4, 512)),
    "vit_b": ((768, 12, 12, 3072), (512, 8, 16, 2048)),
}


def mmfm_step_fn(args, device):
    (dim, depth, heads, _), (ddim, ddepth, dheads, _) = SIZES[args.size]
    enc = ViTEncoder(2, 1, args.patch, dim=dim, depth=depth, heads=heads, max_grid=args.img // args.patch)
    model = MAE(enc, mask_ratio=0.75, decoder_dim=ddim, decoder_depth=ddepth, decoder_heads=dheads,
                norm_pix=False).to(device)
    opt = make_optimizer(model, OptimConfig(lr=1e-4, weight_decay=0.05), device)

    def step(x):
        with autocast(args.precision, device):
            loss = model({"image": x})["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def monai_model(args, device, flash: bool = False):
    from monai.networks.blocks.selfattention import SABlock

    (dim, depth, heads, mlp), (ddim, ddepth, dheads, dmlp) = SIZES[args.size]
    model = MaskedAutoEncoderViT(1, args.img, args.patch, hidden_size=dim, mlp_dim=mlp, num_layers=depth,
                                 num_heads=heads, masking_ratio=0.75, decoder_hidden_size=ddim, decoder_mlp_dim=dmlp,
                                 decoder_num_layers=ddepth, decoder_num_heads=dheads, spatial_dims=2,
                                 qkv_bias=True).to(device)
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
        with autocast(args.precision, device):
            pred, mask = model(x)                               # (B, N, p*p), (B, N) 1 = masked
            loss = monai_loss(pred.float(), x, mask, args.patch)
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--img", type=int, default=128)
    ap.add_argument("--patch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is reported")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", choices=list(SIZES), default="mini")
    ap.add_argument("--precision", choices=["best", "fp32", "bf16"], default="best")
    ap.add_argument("--only", choices=list(STEPS), help=argparse.SUPPRESS)
    ap.add_argument("--json", help="also write the numbers as result records (for scripts/doc_tables.py)")
    args = ap.parse_args()
    if args.precision == "best":
        args.precision = best_precision(torch.device(args.device))
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
    peak_of = peaks(device)
    peak = peak_of[args.precision]
    setting = f"{args.size} 2D {args.img}^2 b{args.batch} p{args.patch} {args.precision} {device.type}"
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, {setting}; "
          f"loss check: |mmfm - MONAI| = {gap:.2e}")
    print(f"matmul peak: fp32 {peak_of['fp32'] / 1e9:.1f} GFLOP/s, bf16 {peak_of['bf16'] / 1e9:.1f} GFLOP/s "
          f"(fractions below are of the {args.precision} peak)")
    records = []
    for name, (dt, mem, flops) in med.items():
        ratio = med[name][0] / med["mmfm"][0]
        print(f"{name:11s} {args.batch / dt:8.1f} img/s  step {dt * 1e3:7.1f} ms  peak mem {mem:7.1f} MiB  "
              f"{flops / 1e9:6.2f} GFLOP/step  {flops / dt / 1e9:6.1f} GFLOP/s = {flops / dt / peak:.1%} of peak  "
              f"mmfm speed-up over it: {ratio:.2f}")
        for metric, v in (("img/s", args.batch / dt), ("GFLOP per step", flops / 1e9),
                          ("fraction of matmul peak", flops / dt / peak), ("peak MiB", mem),
                          ("mmfm speed-up over it", ratio)):
            records.append(ResultRecord("mae_step", setting, "bench", name, metric, float(v), 0))
    for name, v in peak_of.items():
        records.append(ResultRecord("mae_step", setting, "bench", "machine", f"{name} matmul GFLOP/s", v / 1e9, 0))
    if args.json:
        write_results(args.json, records)
        print(f"wrote {args.json}")
    print_ratio(med["monai"][0] / med["mmfm"][0],
                f"mmfm MAE (timm blocks, SDPA, fused AdamW), {args.precision}, {setting}",
                f"MONAI MaskedAutoEncoderViT as shipped (einsum attention, AdamW), {args.precision}, {setting}")


if __name__ == "__main__":
    main()
