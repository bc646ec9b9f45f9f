"""What differs between mmfm's CLIP and open_clip's, timed side by side in one process.

A whole CLIP step with the same towers in both libraries mostly times those towers against themselves (they take
over 99% of the step), so this benchmark times the parts that differ, each with an equality check first:

1. ``loss``: mmfm's ``ClipLoss`` (one logit matrix and its transpose) vs ``open_clip.loss.ClipLoss`` (both logit
   matrices), forward + backward, at batch 256 and 2048 (512-d); the two loss values must agree.
2. ``projection``: what mmfm's CLIP objective runs around the towers (global projections only) vs what it ran
   before this version (global plus per-token "local" projections that only GLoRIA needs, computed and thrown
   away): the cost CLIP no longer pays, on real tower outputs (ViT tokens, MiniLM tokens).
3. ``step``: for reference, one whole step of each with the same towers and weights (first-step losses equal).

    .venv/bin/python benchmarks/clip_step.py [--batch 32] [--img 64] [--steps 10] [--json docs/results/bench_clip.json]

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
    matmul_peak,
    print_ratio,
    register_fused_attention_flops,
    sync,
)
from torch import nn

from mmfm.engine.precision import autocast

os.environ.setdefault("HF_HUB_OFFLINE", "1")


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
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", choices=["best", "fp32", "bf16"], default="best",
                    help="both sides; best: bf16 autocast where native, else fp32")
    ap.add_argument("--json", help="also write the numbers as result records (for scripts/doc_tables.py)")
    args = ap.parse_args()
    device = torch.device(args.device)
    precision = best_precision(device) if args.precision == "best" else args.precision
    records: list = []
    from open_clip.loss import ClipLoss as OpenClipLoss

    from mmfm.engine.trainer import OptimConfig, make_optimizer
    from mmfm.objectives.losses import ClipLoss

    dual, oc, images, tok = build(args.batch, args.img)
    dual, oc, images = dual.to(device), oc.to(device), images.to(device)
    tok = {k: v.to(device) for k, v in tok.items()}
    mm_loss, oc_loss = ClipLoss(), OpenClipLoss()
    mm_opt = make_optimizer(dual, OptimConfig(lr=1e-5, weight_decay=0.0), device)   # mmfm's engine: fused AdamW
    oc_opt = torch.optim.AdamW(oc.parameters(), lr=1e-5, weight_decay=0.0)        # open_clip's main.py: AdamW
    dual.train(), oc.train()
    for m in (dual.text.model, oc.text.transformer):
        m.eval()  # dropout off in both text towers, so the two first losses can be compared exactly

    def mmfm_step() -> float:
        with autocast(precision, device):
            v = dual.image_features(images)["global"]
            t = dual.text_features(tok)["global"]
            loss = mm_loss(v, t, dual.logit_scale)
        mm_opt.zero_grad(set_to_none=True)
        loss.backward()
        mm_opt.step()
        return float(loss.detach())

    def open_clip_step() -> float:
        with autocast(precision, device):
            img_f, txt_f, scale = oc(images, tok["input_ids"])
            loss = oc_loss(img_f.float(), txt_f.float(), scale.float())
        oc_opt.zero_grad(set_to_none=True)
        loss.backward()
        oc_opt.step()
        return float(loss.detach())

    first = (mmfm_step(), open_clip_step())
    times: dict[str, list[float]] = {"mmfm": [], "open_clip": []}
    for i in range(args.steps + 1):
        for name, fn in (("mmfm", mmfm_step), ("open_clip", open_clip_step))[:: 1 if i % 2 else -1]:
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            if i:  # round 0 is warm-up
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"batch {args.batch}, image {args.img}x{args.img}, text {tuple(tok['input_ids'].shape)}, "
          f"{args.steps} timed steps each, torch threads {torch.get_num_threads()}, {device.type}, {precision}")
    from torch.utils.flop_counter import FlopCounterMode

    register_fused_attention_flops()
    with FlopCounterMode(display=False) as fc:
        mmfm_step()
    flops, peak = fc.get_total_flops(), matmul_peak(device, torch.bfloat16 if precision == "bf16" else torch.float32)
    for k in med:
        print(f"  {k:10s} {args.batch / med[k]:8.2f} samples/s  (median step {med[k] * 1000:.0f} ms, "
              f"{flops / med[k] / 1e9:.1f} GFLOP/s = MFU {flops / med[k] / peak:.1%} of the {precision} matmul peak "
              f"{peak / 1e9:.0f} GFLOP/s)")
        records.append(ResultRecordFor(f"step MFU ({device.type}, {precision})", k, flops / med[k] / peak))
    print(f"throughput ratio mmfm / open_clip: {med['open_clip'] / med['mmfm']:.3f}")
    print(f"first-step loss: mmfm {first[0]:.6f}, open_clip {first[1]:.6f} (difference {abs(first[0] - first[1]):.2e})")
    tol = 1e-8 if precision == "fp32" else 1e-3          # bf16: the same loss up to bf16 rounding
    assert F.mse_loss(torch.tensor(first[0]), torch.tensor(first[1])) < tol, "the two do not compute the same loss"
    records += _records(f"step (same towers, {device.type}, {precision})", med, args.batch)
    for n in (256, 2048):
        records += loss_only(n)
    records += projections(dual, images, tok)
    if args.json:
        from mmfm.evaluation.results import write_results

        write_results(args.json, records)
        print(f"wrote {args.json}")
    setting = f"vit_mini + MiniLM, batch {args.batch}, {args.img}x{args.img}, {device.type}, {precision}"
    print_ratio(med["open_clip"] / med["mmfm"], f"mmfm CLIP objective + DualEncoder, fused AdamW, {setting}",
                f"open_clip CustomTextCLIP + ClipLoss with the same towers and weights, AdamW, {setting}")


def ResultRecordFor(part: str, name: str, value: float):  # noqa: N802 - a record constructor
    from mmfm.evaluation.results import ResultRecord

    return ResultRecord(part, "clip", "bench", name, "MFU", value, 0)


def _records(part: str, med: dict[str, float], n: int) -> list:
    from mmfm.evaluation.results import ResultRecord

    base = min(med.values())
    out = []
    for name, t in med.items():
        out.append(ResultRecord(part, "clip", "bench", name, "ms", t * 1000, 0))
        out.append(ResultRecord(part, "clip", "bench", name, "samples/s", n / t, 0))
        out.append(ResultRecord(part, "clip", "bench", name, "time / fastest", t / base, 0))
    return out


def _time(fns: dict, rounds: int = 20) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(rounds + 1):
        for name, fn in list(fns.items())[:: 1 if i % 2 else -1]:
            t = time.perf_counter()
            fn()
            if i:
                times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def projections(dual, images, tok) -> list:
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

    med = _time({"mmfm CLIP (global only)": run(False), "before: global + local": run(True)}, rounds=30)
    print(f"projections: global only {med['mmfm CLIP (global only)'] * 1e3:.2f} ms, with local "
          f"{med['before: global + local'] * 1e3:.2f} ms per step")
    return _records(f"projections (batch {len(images)})", med, len(images))


def loss_only(n: int, dim: int = 512, rounds: int = 20) -> list:
    """The losses alone (forward + backward) on a large batch of random embeddings, where the towers do not
    hide their cost."""
    from open_clip.loss import ClipLoss as OpenClipLoss

    from mmfm.objectives.losses import ClipLoss

    g = torch.Generator().manual_seed(0)
    v0, t0 = torch.randn(n, dim, generator=g), torch.randn(n, dim, generator=g)
    scale = torch.tensor(math.log(1 / 0.07))
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
    med = _time({"mmfm": run_mm, "open_clip": run_oc}, rounds)
    print(f"loss only (batch {n}, {dim}-d, normalisation included): mmfm {med['mmfm'] * 1000:.1f} ms, "
          f"open_clip {med['open_clip'] * 1000:.1f} ms, ratio mmfm / open_clip {med['open_clip'] / med['mmfm']:.3f}")
    return _records(f"loss (batch {n}, {dim}-d)", med, n)


if __name__ == "__main__":
    main()
