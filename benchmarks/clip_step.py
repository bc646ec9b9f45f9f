"""What differs between mmfm's CLIP and open_clip's, timed side by side in one process.

A whole CLIP step with the same towers in both libraries mostly times those towers against themselves (they take
over 99% of the step), so this benchmark times the parts that differ, each with an equality check first:

1. ``loss``: mmfm's ``ClipLoss`` (one logit matrix and its transpose) vs ``open_clip.loss.ClipLoss`` (both logit
   matrices), forward + backward, at batch 256 and 2048 (512-d); the two loss values must agree.
2. ``projection``: what mmfm's CLIP objective runs around the towers (global projections only) vs what it ran
   before this version (global plus per-token "local" projections that only GLoRIA needs, computed and thrown
   away): the cost CLIP no longer pays, on real tower outputs (ViT tokens, MiniLM tokens).
3. ``step``: for reference, one whole training step of each with the same towers and weights and the same
   optimiser (mmfm's engine optimiser, fused AdamW where torch has it, on both), each side at its best *working*
   precision (``--precision best``: bf16 autocast where the device computes it natively, mmfm's
   ``train.precision=auto`` rule, ``MMFM_NATIVE_BF16=0|1`` overriding the CPU detection; a side whose step fails
   at it runs fp32, and says so); the median of ``--steps`` alternating steps (>= 3). Before timing, one fp32 step
   of each on copies of the same weights must give the same loss and the same updated image tower (tolerances
   below); the step's FLOP/s is given as a fraction of the matmul peak of the precision it ran in (n/a where that
   precision is emulated).

    .venv/bin/python benchmarks/clip_step.py [--batch 32] [--img 64] [--steps 10] [--precision best|fp32|bf16]
                                             [--json docs/results/bench_clip.json]

In the open_clip model the text tower is its own HFTextEncoder on the same MiniLM folder and the vision tower is
mmfm's encoder (open_clip has no 1-channel 2D ViT of that shape).
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import time

import torch
import torch.nn.functional as F
from _common import (
    best_precision,
    check_rounds,
    cpu_header,
    matmul_peak,
    peak_fraction,
    print_ratio,
    provenance,
    register_fused_attention_flops,
    sync,
    working_precision,
    write_records,
)
from torch import nn

from mmfm.engine.precision import autocast

os.environ.setdefault("HF_HUB_OFFLINE", "1")
LOSS_TOL = 1e-5     # one fp32 step, the same towers and weights: the losses differ only by summation order
UPDATE_TOL = 1e-4   # relative, per image-tower tensor: the same gradients through the same optimiser


class VisualTower(nn.Module):
    """open_clip's ``visual`` slot: image -> projected pooled features (what mmfm's DualEncoder computes)."""

    def __init__(self, encoder: nn.Module, proj: nn.Linear) -> None:
        super().__init__()
        self.encoder, self.proj = encoder, proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.encoder(x)["pooled"])


def build(batch: int, img: int):
    import open_clip
    from open_clip.model import CustomTextCLIP

    from mmfm.data.sources.mini_reader import report_rows
    from mmfm.encoders import build_encoder
    from mmfm.encoders.dual import DualEncoder
    from mmfm.encoders.text import build_text_encoder
    from mmfm.encoders.text.hf import minilm_path

    torch.manual_seed(0)
    dual = DualEncoder(build_encoder("vit_mini", spatial_dims=2, in_channels=1), build_text_encoder("minilm"),
                       embed_dim=128, temperature=0.07, max_length=64)
    path = str(minilm_path())
    oc = CustomTextCLIP(128, vision_cfg=open_clip.model.CLIPVisionCfg(layers=1, width=64, patch_size=16,
                                                                      image_size=32),
                        text_cfg=open_clip.model.CLIPTextCfg(hf_model_name=path, hf_tokenizer_name=path,
                                                             hf_model_pretrained=True, hf_proj_type="linear",
                                                             hf_pooler_type="mean_pooler", context_length=64),
                        init_logit_scale=math.log(1 / 0.07))
    oc.visual = VisualTower(copy.deepcopy(dual.image), copy.deepcopy(dual.image_proj))
    missing, _ = oc.text.transformer.load_state_dict(dual.text.model.state_dict(), strict=False)
    assert not missing, missing  # open_clip builds BERT without the (unused) pooler; everything else must load
    with torch.no_grad():
        oc.text.proj.weight.copy_(dual.text_proj.weight)
    texts = [r["impression"] for r in report_rows(None, "train", ("impression",))[:batch]]
    tok = dual.text.tokenize(texts, 64)
    images = torch.rand(batch, 1, img, img)
    return dual, oc, images, tok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--img", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10, help="timed steps of each (>= 3; the median is reported)")
    ap.add_argument("--loss-rounds", type=int, default=20, help="rounds of the loss-only and projection timings")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", choices=["best", "fp32", "bf16"], default="best",
                    help="asked of both sides (best: bf16 autocast where native, else fp32); a side whose step "
                         "fails at it runs fp32")
    ap.add_argument("--json", help="also write the numbers as result records (for scripts/doc_tables.py)")
    args = ap.parse_args()
    check_rounds(args.steps, "--steps")
    check_rounds(args.loss_rounds, "--loss-rounds")
    device = torch.device(args.device)
    asked = best_precision(device) if args.precision == "best" else args.precision
    print(cpu_header(device))
    records: list = []
    from open_clip.loss import ClipLoss as OpenClipLoss

    from mmfm.engine.trainer import OptimConfig, make_optimizer
    from mmfm.objectives.losses import ClipLoss

    optim = OptimConfig(lr=1e-5, weight_decay=0.0)
    dual, oc, images, tok = build(args.batch, args.img)
    dual, oc, images = dual.to(device), oc.to(device), images.to(device)
    tok = {k: v.to(device) for k, v in tok.items()}
    mm_loss, oc_loss = ClipLoss(), OpenClipLoss()

    def steps_of(dual, oc):
        """Both training steps, with the same optimiser (mmfm's engine: fused AdamW where torch has it)."""
        mm_opt = make_optimizer(dual, optim, device)
        oc_opt = make_optimizer(oc, optim, device)
        dual.train(), oc.train()
        for m in (dual.text.model, oc.text.transformer):
            m.eval()  # dropout off in both text towers, so the two steps can be compared exactly

        def mmfm_step(precision: str) -> float:
            with autocast(precision, device):
                v = dual.image_features(images)["global"]
                t = dual.text_features(tok)["global"]
                loss = mm_loss(v, t, dual.logit_scale)
            mm_opt.zero_grad(set_to_none=True)
            loss.backward()
            mm_opt.step()
            return float(loss.detach())

        def open_clip_step(precision: str) -> float:
            with autocast(precision, device):
                img_f, txt_f, scale = oc(images, tok["input_ids"])
                loss = oc_loss(img_f.float(), txt_f.float(), scale.float())
            oc_opt.zero_grad(set_to_none=True)
            loss.backward()
            oc_opt.step()
            return float(loss.detach())
        return {"mmfm": mmfm_step, "open_clip": open_clip_step}

    # equality: one fp32 step of each on copies of the same weights: the same loss and the same updated image tower
    d2, o2 = copy.deepcopy(dual), copy.deepcopy(oc)
    check_steps = steps_of(d2, o2)
    first = {k: fn("fp32") for k, fn in check_steps.items()}
    loss_gap = abs(first["mmfm"] - first["open_clip"])
    with torch.no_grad():
        upd = max(float((a - b).norm() / b.norm().clamp_min(1e-30)) for a, b in
                  zip(d2.image.parameters(), o2.visual.encoder.parameters()))
    print(f"one fp32 step on the same weights: loss mmfm {first['mmfm']:.6f}, open_clip {first['open_clip']:.6f} "
          f"(difference {loss_gap:.1e}, tol {LOSS_TOL:g}); updated image tower, largest relative difference "
          f"{upd:.1e} (tol {UPDATE_TOL:g})")
    if loss_gap > LOSS_TOL or upd > UPDATE_TOL:
        raise SystemExit("the two steps differ beyond the tolerances: the comparison would not be like with like")
    del d2, o2, check_steps

    fns = steps_of(dual, oc)
    chosen, notes = {}, []
    for k, fn in fns.items():   # the try is also the first warm-up step
        chosen[k], why = working_precision(asked, fn, device, args.precision == "best")
        if why:
            notes.append(f"{k}: {why}")
    print(f"precision asked: {args.precision} ({asked} here); used: mmfm {chosen['mmfm']}, open_clip "
          f"{chosen['open_clip']}" + "".join(f"\n  {n}" for n in notes))
    times: dict[str, list[float]] = {"mmfm": [], "open_clip": []}
    for i in range(args.steps + 1):
        for name in (("mmfm", "open_clip") if i % 2 else ("open_clip", "mmfm")):
            sync(device)
            t0 = time.perf_counter()
            fns[name](chosen[name])
            sync(device)
            if i:  # round 0 is warm-up
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"batch {args.batch}, image {args.img}x{args.img}, text {tuple(tok['input_ids'].shape)}, "
          f"{args.steps} timed steps each (median), {device.type}")
    from torch.utils.flop_counter import FlopCounterMode

    register_fused_attention_flops()
    peak_of = {p: matmul_peak(device, torch.bfloat16 if p == "bf16" else torch.float32)
               for p in sorted(set(chosen.values()))}
    for k in med:
        with FlopCounterMode(display=False) as fc:
            fns[k](chosen[k])
        flops = fc.get_total_flops()
        frac, why = peak_fraction(flops / med[k], chosen[k], device, peak_of)
        print(f"  {k:10s} {chosen[k]:4s} {args.batch / med[k]:8.2f} samples/s  (median step {med[k] * 1000:.0f} ms, "
              f"{flops / med[k] / 1e9:.1f} GFLOP/s = MFU "
              f"{f'{frac:.1%}' if frac is not None else f'n/a ({why})'} of the {chosen[k]} matmul peak "
              f"{peak_of[chosen[k]] / 1e9:.0f} GFLOP/s)")
        if frac is not None:
            records.append(ResultRecordFor(f"step (same towers, {device.type})", k, frac))
    print(f"throughput ratio mmfm / open_clip: {med['open_clip'] / med['mmfm']:.3f}")
    records += _records(f"step (same towers, {device.type})", med, args.batch)
    records += [ResultRecordFor("one fp32 step on copies of the same weights", "mmfm vs open_clip", loss_gap,
                                "loss difference", "one-step check"),
                ResultRecordFor("one fp32 step on copies of the same weights", "mmfm vs open_clip", upd,
                                "image tower update (largest relative difference)", "one-step check")]
    for n in (256, 2048):
        records += loss_only(n, rounds=args.loss_rounds, device=device)
    records += projections(dual, images, tok, args.loss_rounds)
    setting = f"vit_mini + MiniLM, batch {args.batch}, {args.img}x{args.img}, {device.type}"
    if args.json:
        notes.append("loss-only and projection parts: fp32 on both sides")
        write_records(args.json, records, provenance(device, {"asked": f"{args.precision} ({asked} here)",
                                                              **chosen}, notes))
    print_ratio(med["open_clip"] / med["mmfm"], f"mmfm CLIP objective + DualEncoder, fused AdamW, "
                f"{chosen['mmfm']}, {setting}",
                f"open_clip CustomTextCLIP + ClipLoss with the same towers and weights, the same fused AdamW, "
                f"{chosen['open_clip']}, {setting}")


def ResultRecordFor(part: str, name: str, value: float,  # noqa: N802 - a record constructor
                    metric: str = "fraction of the matmul peak of its precision", split: str = "bench"):
    from mmfm.evaluation.results import ResultRecord

    return ResultRecord(part, "clip", split, name, metric, value, 0)


def _records(part: str, med: dict[str, float], n: int) -> list:
    from mmfm.evaluation.results import ResultRecord

    base = min(med.values())
    out = []
    for name, t in med.items():
        out.append(ResultRecord(part, "clip", "bench", name, "ms", t * 1000, 0))
        out.append(ResultRecord(part, "clip", "bench", name, "samples/s", n / t, 0))
        out.append(ResultRecord(part, "clip", "bench", name, "time / fastest", t / base, 0))
    return out


def _time(fns: dict, rounds: int = 20, device: torch.device | None = None) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(rounds + 1):
        for name, fn in list(fns.items())[:: 1 if i % 2 else -1]:
            t = time.perf_counter()
            fn()
            if device is not None:
                sync(device)
            if i:
                times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def projections(dual, images, tok, rounds: int = 30) -> list:
    """Global-only projections (mmfm's CLIP now) vs global + local ones (what it computed before), forward and
    backward, on the towers' real outputs (the towers themselves run once, outside the timing)."""
    with torch.no_grad():
        fi, ft = dual.image(images), dual.text(**tok)

    def run(local: bool):
        def f():
            vi = fi["tokens"].detach().requires_grad_()
            vt = ft["tokens"].detach().requires_grad_()
            out = dual.image_proj(vi.mean(1)).sum() + dual.text_proj(vt.mean(1)).sum()
            if local:
                out = out + dual.image_proj(vi).sum() + dual.text_proj(vt).sum()
            out.backward()
        return f

    med = _time({"mmfm CLIP (global only)": run(False), "before: global + local": run(True)}, rounds)
    print(f"projections: global only {med['mmfm CLIP (global only)'] * 1e3:.2f} ms, with local "
          f"{med['before: global + local'] * 1e3:.2f} ms per step")
    return _records(f"projections (batch {len(images)})", med, len(images))


def loss_only(n: int, dim: int = 512, rounds: int = 20, device: torch.device | None = None) -> list:
    """The losses alone (forward + backward) on a large batch of random embeddings, where the towers do not
    hide their cost."""
    from open_clip.loss import ClipLoss as OpenClipLoss

    from mmfm.objectives.losses import ClipLoss

    g = torch.Generator().manual_seed(0)
    device = device or torch.device("cpu")
    v0, t0 = torch.randn(n, dim, generator=g).to(device), torch.randn(n, dim, generator=g).to(device)
    scale = torch.tensor(math.log(1 / 0.07), device=device)
    mm, oc = ClipLoss(), OpenClipLoss()

    def run_mm() -> float:
        v, t, s = v0.clone().requires_grad_(), t0.clone().requires_grad_(), scale.clone().requires_grad_()
        loss = mm(v, t, s)
        loss.backward()
        return float(loss.detach())

    def run_oc() -> float:
        v, t, s = v0.clone().requires_grad_(), t0.clone().requires_grad_(), scale.clone().requires_grad_()
        loss = oc(F.normalize(v, dim=-1), F.normalize(t, dim=-1), s.exp())   # open_clip expects normalised input
        loss.backward()
        return float(loss.detach())

    assert abs(run_mm() - run_oc()) < 1e-4
    med = _time({"mmfm": run_mm, "open_clip": run_oc}, rounds, device)
    print(f"loss only (batch {n}, {dim}-d, normalisation included): mmfm {med['mmfm'] * 1000:.1f} ms, "
          f"open_clip {med['open_clip'] * 1000:.1f} ms, ratio mmfm / open_clip {med['open_clip'] / med['mmfm']:.3f}")
    return _records(f"loss (batch {n}, {dim}-d)", med, n)


if __name__ == "__main__":
    main()
