"""MAE training step: mmfm vs MONAI's MaskedAutoEncoderViT, same ViT configuration, side by side in one process.

Prints the throughput ratio (mmfm / MONAI), the peak memory of each step, and the step's achieved FLOP/s as a
fraction of the measured matrix-multiply peak *of the precision that step ran in* (n/a, with why, where that
precision is emulated). Throughput: alternating rounds in one process, the median round reported (>= 3 rounds).
On CPU, peak memory is measured for each implementation in a fresh child process (peak RSS during training steps
minus RSS before the first step), because a shared allocator hides it in one process; on a GPU it is each step's
``torch.cuda.max_memory_allocated`` above what was allocated before that step, in the same process.

    .venv/bin/python benchmarks/mae_step.py [--batch 32] [--img 128] [--patch 8] [--steps 10] [--rounds 3]
                                            [--device cpu] [--size mini|vit_b] [--precision best|fp32|bf16]
                                            [--json docs/results/bench_mae.json]

Precision: each side runs at its best *working* precision. ``--precision best`` (default) asks for bf16 autocast
where the device computes it natively (mmfm's ``train.precision=auto`` rule; ``MMFM_NATIVE_BF16=0|1`` overrides
the CPU detection) and fp32 elsewhere; each side first tries one step at that precision and falls back to fp32 if
the step fails (MONAI's MaskedAutoEncoderViT cannot run under bf16 autocast: "Index put requires the source and
destination dtypes match"), and says so. ``--size vit_b``: ViT-B/16 (768 wide, 12 deep, 12 heads, MLP 3072;
decoder 512 x 8, 16 heads) on 224 x 224, MAE's own configuration.

Optimiser: the same on every side, mmfm's engine optimiser (``make_optimizer``: AdamW, fused where torch has the
kernel for the device, no weight decay on biases and norms).

Implementations: ``mmfm`` (timm blocks, fused scaled-dot-product attention), ``monai`` (MaskedAutoEncoderViT as
shipped: attention by einsum) and ``monai+flash`` (the same network with MONAI's ``use_flash_attention`` switched
on in every attention block, i.e. torch's fused SDPA). FLOPs: torch's FLOP counter, with the fused CPU attention
kernels registered (the counter has no formula for them and would count 0; the standard formula is torch's own
``sdpa_flop_count``), so every implementation is counted alike.

Equality check, before timing (fp32): ONE TRAINING STEP of both implementations on the same weights and the same
mask. MONAI's weights are copied into mmfm's layout (its fixed sin-cos position tables become mmfm's factored
tables exactly, and are frozen in mmfm's copy as they are in MONAI); MONAI's forward is replayed from its own
modules without its class token (mmfm's MAE has none; the timed MONAI step keeps it: one extra token, counted in
its FLOPs). Loss, every gradient and every updated parameter after one AdamW step must agree within the stated
tolerances; the benchmark stops otherwise.

Configuration (both, ``--size mini``): 2D, 1 channel, ViT dim 192, depth 6, 3 heads, MLP 768, qkv bias; decoder
dim 128, depth 2, 4 heads, MLP 512; mask ratio 0.75; MSE on masked patches; AdamW (lr 1e-4, weight decay 0.05).
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from _common import (
    best_precision,
    check_rounds,
    cpu_header,
    peak_fraction,
    peaks,
    print_ratio,
    provenance,
    register_fused_attention_flops,
    sync,
    working_precision,
    write_records,
)
from monai.networks.nets import MaskedAutoEncoderViT
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mmfm.encoders.vit import ViTEncoder
from mmfm.engine.precision import autocast
from mmfm.engine.trainer import OptimConfig, make_optimizer
from mmfm.evaluation.results import ResultRecord
from mmfm.objectives.masked import MAE
from mmfm.objectives.masking import patchify

register_fused_attention_flops()
OPTIM = OptimConfig(lr=1e-4, weight_decay=0.05)
# One fp32 step of two implementations that differ only in kernels (einsum vs fused attention, summation order):
LOSS_TOL = 1e-5    # relative difference of the losses
GRAD_TOL = 1e-3    # per tensor: |g_mmfm - g_monai| / |g_monai| (norms)
UPDATE_TOL = 5e-2  # per tensor: |p'_mmfm - p'_monai| / |p'_monai - p|. AdamW's first step moves each element by
#                    about lr * g / (|g| + eps), i.e. lr * sign(g): an element whose gradient is within rounding of
#                    0 (|g| near eps = 1e-8) may move by a different amount or way (measured: up to 0.015 on one
#                    bias at 32 x 32); a wrong mapping or a different computation gives about 1.

SIZES = {  # encoder (dim, depth, heads, mlp), decoder (dim, depth, heads, mlp)
    "mini": ((192, 6, 3, 768), (128, 2, 4, 512)),
    "vit_b": ((768, 12, 12, 3072), (512, 8, 16, 2048)),
}


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child_peak_memory(name: str, precision: str, args) -> float:
    """Run ``--only name`` in a fresh process; it prints its step-time peak RSS above its pre-step RSS."""
    cmd = [sys.executable, __file__, "--only", name, "--batch", str(args.batch), "--img", str(args.img),
           "--patch", str(args.patch), "--device", "cpu", "--size", args.size, "--precision", precision]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def only(name: str, args) -> None:
    device = torch.device("cpu")
    x = torch.rand(args.batch, 1, args.img, args.img)
    step = make_step(name, args, device, args.precision)
    gc.collect()
    base = rss_mb()
    for _ in range(3):
        step(x)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(max(0.0, peak - base))


def mmfm_model(args, device) -> MAE:
    (dim, depth, heads, _), (ddim, ddepth, dheads, _) = SIZES[args.size]
    enc = ViTEncoder(2, 1, args.patch, dim=dim, depth=depth, heads=heads, max_grid=args.img // args.patch)
    return MAE(enc, mask_ratio=0.75, decoder_dim=ddim, decoder_depth=ddepth, decoder_heads=dheads,
               norm_pix=False).to(device)


def monai_model(args, device, flash: bool = False) -> MaskedAutoEncoderViT:
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


def monai_loss(pred: torch.Tensor, x: torch.Tensor, mask: torch.Tensor, patch: int) -> torch.Tensor:
    """The masked MSE of MONAI's MAE tutorial: per-patch mean squared error, averaged over masked patches."""
    target = patchify(x, patch)                                          # (B, N, p*p)
    return (F.mse_loss(pred, target, reduction="none").mean(-1) * mask).sum() / mask.sum()


def make_step(name: str, args, device, precision: str):
    """One training step of ``name`` at ``precision`` with mmfm's engine optimiser (the same on every side)."""
    if name == "mmfm":
        model: nn.Module = mmfm_model(args, device)

        def loss_of(x):
            return model({"image": x})["loss"]
    else:
        model = monai_model(args, device, flash=name == "monai+flash")

        def loss_of(x):
            pred, mask = model(x)                                        # (B, N, p*p), (B, N) 1 = masked
            return monai_loss(pred.float(), x, mask, args.patch)
    opt = make_optimizer(model, OPTIM, device)

    def step(x):
        with autocast(precision, device):
            loss = loss_of(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


NAMES = ("mmfm", "monai", "monai+flash")


# -- the one-step equality check ---------------------------------------------------------------------------------
def monai_to_mmfm(monai: MaskedAutoEncoderViT, mmfm: MAE, depth: int, ddepth: int, grid: int) -> dict[str, str]:
    """Copy MONAI's weights into mmfm's MAE; returns mmfm name -> MONAI name of every trainable tensor pair.

    Layouts: MONAI's qkv is (qkv, heads, head_dim)-major like timm's, so blocks copy as they are; MONAI's 2D patch
    kernel (D, C, p, p) becomes mmfm's depth-stacked kernel (D, C, p, p, p) / p (a 2D input sums it over depth);
    MONAI's fixed sin-cos tables (N, D) are additive over the axes, so mmfm's factored (y, x) tables reproduce them
    (checked here to 1e-6)."""
    src = monai.state_dict()
    pairs: dict[str, str] = {"mask_token": "mask_tokens", "embed.weight": "decoder_embed.weight",
                             "embed.bias": "decoder_embed.bias", "pred.weight": "decoder_pred.weight",
                             "pred.bias": "decoder_pred.bias", "encoder.patch_embed.bias":
                             "patch_embedding.patch_embeddings.bias", "encoder.patch_embed.weight":
                             "patch_embedding.patch_embeddings.weight",
                             "encoder.norm.weight": f"blocks.{depth}.weight",
                             "encoder.norm.bias": f"blocks.{depth}.bias",
                             "norm.weight": f"decoder_blocks.{ddepth}.weight",
                             "norm.bias": f"decoder_blocks.{ddepth}.bias"}
    block = {"norm1": "norm1", "attn.qkv": "attn.qkv", "attn.proj": "attn.out_proj", "norm2": "norm2",
             "mlp.fc1": "mlp.linear1", "mlp.fc2": "mlp.linear2"}
    for ours, theirs, n in (("encoder.blocks", "blocks", depth), ("blocks", "decoder_blocks", ddepth)):
        for i in range(n):
            for a, b in block.items():
                for w in ("weight", "bias"):
                    pairs[f"{ours}.{i}.{a}.{w}"] = f"{theirs}.{i}.{b}.{w}"
    dst = mmfm.state_dict()
    for a, b in pairs.items():
        t = src[b]
        if a == "encoder.patch_embed.weight":
            p = t.shape[-1]
            t = t[:, :, None].repeat(1, 1, p, 1, 1) / p                  # (D, C, p, p, p)
        dst[a] = t.reshape(dst[a].shape).clone()
    for ours, theirs in (("encoder.pos", "patch_embedding.position_embeddings"), ("pos", "decoder_pos_embedding")):
        table = src[theirs][0].reshape(grid, grid, -1)                   # (gy, gx, D)
        mean = table.mean(dim=(0, 1))
        y, x = table.mean(dim=1) - mean / 2, table.mean(dim=0) - mean / 2
        gap = float((y[:, None] + x[None] - table).abs().max())
        if gap > 1e-6:
            raise SystemExit(f"MONAI's position table is not additive over the axes (gap {gap:.1e})")
        dst[f"{ours}.0"] = torch.zeros_like(dst[f"{ours}.0"])
        dst[f"{ours}.1"][:grid], dst[f"{ours}.2"][:grid] = y, x
    mmfm.load_state_dict(dst)
    for name, p in mmfm.named_parameters():   # MONAI's position tables are fixed; so are mmfm's copies here
        if name.startswith(("pos.", "encoder.pos.")):
            p.requires_grad_(False)
    return pairs


def monai_forward_without_cls(model: MaskedAutoEncoderViT, x: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """MaskedAutoEncoderViT.forward, line by line from its own modules, with mmfm's mask instead of its random one
    and without the class token. Shape: (B, N, p*p*C)."""
    b = x.shape[0]
    rows = torch.arange(b, device=x.device)[:, None]
    t = model.patch_embedding(x)                                         # (B, N, D), position added
    t = model.blocks(t[rows, visible])                                   # (B, N_vis, D), final norm included
    t = model.decoder_embed(t)                                           # (B, N_vis, Dd)
    full = model.mask_tokens.repeat(b, model.patch_embedding.n_patches, 1)
    full[rows, visible] = t                                              # (B, N, Dd)
    return model.decoder_pred(model.decoder_blocks(full + model.decoder_pos_embedding))


def _rel(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> float:
    return float((a - b).norm() / scale.norm().clamp_min(1e-30))


def one_step_check(args, device) -> dict[str, float]:
    """Loss, gradients and updated parameters of one fp32 training step of both on the same weights and mask."""
    (_, depth, _, _), (_, ddepth, _, _) = SIZES[args.size]
    grid = args.img // args.patch
    torch.manual_seed(0)
    theirs = monai_model(args, device)
    ours = mmfm_model(args, device)
    pairs = monai_to_mmfm(theirs, ours, depth, ddepth, grid)
    x = torch.rand(4, 1, args.img, args.img, device=device)
    n = grid * grid
    keep = n - int(0.75 * n)
    visible = torch.rand(4, n, device=device).argsort(dim=1)[:, :keep].sort(dim=1).values   # (B, N_vis)
    mask = torch.ones(4, n, dtype=torch.bool, device=device)
    mask[torch.arange(4, device=device)[:, None], visible] = False                        # True = masked
    before = {k: v.detach().clone() for k, v in theirs.state_dict().items()}
    opt_ours, opt_theirs = make_optimizer(ours, OPTIM, device), make_optimizer(theirs, OPTIM, device)
    loss_ours, _ = ours.reconstruct(x, mask)
    loss_theirs = monai_loss(monai_forward_without_cls(theirs, x, visible), x, mask.float(), args.patch)
    loss_ours.backward()
    loss_theirs.backward()
    p_ours, p_theirs = dict(ours.named_parameters()), dict(theirs.named_parameters())

    def grad_of(a: str) -> torch.Tensor:
        g = p_ours[a].grad
        return g[:, :, 0] if a == "encoder.patch_embed.weight" else g.reshape(p_theirs[pairs[a]].shape)

    grad = max(_rel(grad_of(a), p_theirs[b].grad, p_theirs[b].grad) for a, b in pairs.items())
    kernel_before = p_ours["encoder.patch_embed.weight"].detach()[:, :, 0].clone()
    opt_ours.step()
    opt_theirs.step()
    update = 0.0
    for a, b in pairs.items():
        new_ours, new_theirs = p_ours[a].detach(), p_theirs[b].detach()
        if a == "encoder.patch_embed.weight":
            # mmfm's 2D kernel is the sum of p depth slices (each W / p), and each slice takes its own AdamW step:
            # compare one slice's step with MONAI's, each without the decoupled weight decay of its own weight
            # (lr * wd * W / p against lr * wd * W). The effective 2D step is p times MONAI's (reported below).
            shrink = 1 - OPTIM.lr * OPTIM.weight_decay
            step_ours = new_ours[:, :, 0] - shrink * kernel_before
            step_theirs = new_theirs - shrink * before[b]
            update = max(update, _rel(step_ours, step_theirs, step_theirs))
            continue
        update = max(update, _rel(new_ours.reshape(new_theirs.shape), new_theirs, new_theirs - before[b]))
    lo, lt = float(loss_ours.detach()), float(loss_theirs.detach())
    return {"loss": abs(lo - lt) / abs(lt), "grad": grad,
            "update": update, "loss_value": lt}


# -- timing ------------------------------------------------------------------------------------------------------
def precisions(args, device, x: torch.Tensor, compare_fp32: bool) -> tuple[dict[str, str], list[str]]:
    """Each side's best working precision (``_common.working_precision``), tried on the timed batch."""
    chosen, notes = {}, []
    for name in NAMES:
        built: dict[str, object] = {}

        def trial(p: str, name: str = name, built: dict = built) -> None:
            if p not in built:
                built[p] = make_step(name, args, device, p)
            built[p](x)
        chosen[name], why = working_precision(args.precision, trial, device, compare_fp32)
        if why:
            notes.append(f"{name}: {why}")
    return chosen, notes


def timed_rounds(steps: dict, x: torch.Tensor, args, device) -> dict[str, list[float]]:
    """Seconds per step of each implementation, one value per round; rounds alternate the order."""
    for step in steps.values():                # warm-up: allocator, kernels, optimiser state
        step(x)
    times: dict[str, list[float]] = {k: [] for k in steps}
    for r in range(args.rounds):
        for name in (list(steps) if r % 2 == 0 else list(steps)[::-1]):
            sync(device)
            t = time.perf_counter()
            for _ in range(args.steps):
                steps[name](x)
            sync(device)
            times[name].append((time.perf_counter() - t) / args.steps)
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--img", type=int, default=128)
    ap.add_argument("--patch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (>= 3); the median is reported")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", choices=list(SIZES), default="mini")
    ap.add_argument("--precision", choices=["best", "fp32", "bf16"], default="best",
                    help="asked of every side (best: bf16 where native, else fp32); a side that fails runs fp32")
    ap.add_argument("--only", choices=NAMES, help=argparse.SUPPRESS)
    ap.add_argument("--json", help="also write the numbers as result records (for scripts/doc_tables.py)")
    args = ap.parse_args()
    device = torch.device(args.device)
    asked = args.precision
    if args.precision == "best":
        args.precision = best_precision(device)
    if args.only:
        return only(args.only, args)
    check_rounds(args.rounds)
    print(cpu_header(device))
    check = one_step_check(args, device)
    print(f"one fp32 training step, same weights and mask (MONAI replayed without its class token): relative "
          f"differences loss {check['loss']:.1e} (tol {LOSS_TOL:g}), gradients {check['grad']:.1e} (max over tensors, "
          f"tol {GRAD_TOL:g}), updated parameters {check['update']:.1e} (tol {UPDATE_TOL:g})")
    if check["loss"] > LOSS_TOL or check["grad"] > GRAD_TOL or check["update"] > UPDATE_TOL:
        raise SystemExit("mmfm's and MONAI's steps differ beyond the tolerances: the comparison would not be like "
                         "with like")
    torch.manual_seed(0)
    x = torch.rand(args.batch, 1, args.img, args.img, device=device)
    chosen, notes = precisions(args, device, x, compare_fp32=asked == "best")
    print(f"precision asked: {asked} ({args.precision} here); used: "
          + ", ".join(f"{k} {v}" for k, v in chosen.items()))
    for n in notes:
        print(f"  {n}")
    steps = {name: make_step(name, args, device, chosen[name]) for name in NAMES}
    times = timed_rounds(steps, x, args, device)
    dt = {k: statistics.median(v) for k, v in times.items()}
    flops = {}
    for name, step in steps.items():
        with FlopCounterMode(display=False) as fc:
            step(x)
        flops[name] = fc.get_total_flops()
    if device.type == "cpu":
        mem = {k: child_peak_memory(k, chosen[k], args) for k in NAMES}
    else:  # one process: each step's allocator peak above what is resident before it (all three models)
        mem = {}
        for name, step in steps.items():
            sync(device)
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            step(x)
            sync(device)
            mem[name] = (torch.cuda.max_memory_allocated() - base) / 2**20
    peak_of = peaks(device)
    setting = f"{args.size} 2D {args.img}^2 b{args.batch} p{args.patch} {device.type}"
    print(f"{setting}; {args.steps} steps x {args.rounds} rounds, median round")
    print(f"matmul peak: fp32 {peak_of['fp32'] / 1e9:.1f} GFLOP/s, bf16 {peak_of['bf16'] / 1e9:.1f} GFLOP/s"
          f"{'' if peak_fraction(1.0, 'bf16', device, peak_of)[0] is not None else ' (emulated)'}")
    records = []
    for name in NAMES:
        frac, why = peak_fraction(flops[name] / dt[name], chosen[name], device, peak_of)
        ratio = dt[name] / dt["mmfm"]
        print(f"{name:11s} {chosen[name]:4s} {args.batch / dt[name]:8.1f} img/s  step {dt[name] * 1e3:7.1f} ms  "
              f"peak mem {mem[name]:7.1f} MiB  {flops[name] / 1e9:6.2f} GFLOP/step  "
              f"{flops[name] / dt[name] / 1e9:6.1f} GFLOP/s = "
              f"{f'{frac:.1%}' if frac is not None else f'n/a ({why})'} of the {chosen[name]} peak  "
              f"mmfm speed-up over it: {ratio:.2f}")
        values = {"img/s": args.batch / dt[name], "GFLOP per step": flops[name] / 1e9, "peak MiB": mem[name],
                  "mmfm speed-up over it": ratio}
        if frac is not None:
            values["fraction of the matmul peak of its precision"] = frac
        records += [ResultRecord("mae_step", setting, "bench", name, k, float(v), 0) for k, v in values.items()]
    for p, v in peak_of.items():
        records.append(ResultRecord("mae_step", setting, "bench", "machine", f"{p} matmul GFLOP/s", v / 1e9, 0))
    for k in ("loss", "grad", "update"):
        records.append(ResultRecord("one fp32 training step, same weights and mask", setting, "one-step check",
                                    "mmfm vs monai",
                                    {"loss": "loss", "grad": "gradients", "update": "updated parameters"}[k]
                                    + " (relative difference)", check[k], 0))
    if args.json:
        notes.append(f"one-step check in fp32: tolerances loss {LOSS_TOL:g}, gradients {GRAD_TOL:g}, updated "
                     f"parameters {UPDATE_TOL:g}")
        used = {"asked": f"{asked} ({args.precision} here)", **chosen}
        write_records(args.json, records, provenance(device, used, notes))
    print_ratio(dt["monai"] / dt["mmfm"],
                f"mmfm MAE (timm blocks, SDPA, fused AdamW), {chosen['mmfm']}, {setting}",
                f"MONAI MaskedAutoEncoderViT as shipped (einsum attention, the same fused AdamW), {chosen['monai']}, "
                f"{setting}")


if __name__ == "__main__":
    main()
