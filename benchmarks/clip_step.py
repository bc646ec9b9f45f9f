"""One CLIP training step: mmfm (DualEncoder + ClipLoss) vs open_clip (CustomTextCLIP + open_clip.loss.ClipLoss),
with the same towers, weights and batch, side by side in one process.

Towers (both): mmfm's vit_mini image encoder (2D, 1 channel) and the packaged MiniLM text encoder (6 layers,
384-d, masked mean pooling), linear projections to 128-d, learnable temperature initialised at 0.07. In open_clip
the text tower is its own HFTextEncoder built on the same MiniLM folder (``hf_pooler_type=mean_pooler``,
``hf_proj_type=linear``); its vision tower is replaced by mmfm's encoder (open_clip has no 1-channel 2D ViT of
the same shape), so the comparison is of everything around the towers: projections, normalisation, logits,
loss and the optimiser step. Both receive the same token ids (real IU X-ray impressions, padded to the longest
in the batch) and the same images. The first step's losses must agree: a check that the two compute the same.

    .venv/bin/python benchmarks/clip_step.py [--batch 32] [--img 64] [--steps 10]

Prints samples/s for each, the throughput ratio (mmfm / open_clip; target >= 1.0) and the two first losses; then
the two losses alone (forward + backward) on a large batch of random embeddings.
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
from torch import nn

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
    ap.add_argument("--loss-batch", type=int, default=2048, help="batch of the loss-only comparison")
    args = ap.parse_args()
    from open_clip.loss import ClipLoss as OpenClipLoss

    from mmfm.objectives.losses import ClipLoss

    dual, oc, images, tok = build(args.batch, args.img)
    mm_loss, oc_loss = ClipLoss(), OpenClipLoss()
    mm_opt = torch.optim.AdamW(dual.parameters(), lr=1e-5)
    oc_opt = torch.optim.AdamW(oc.parameters(), lr=1e-5)
    dual.train(), oc.train()
    for m in (dual.text.model, oc.text.transformer):
        m.eval()  # dropout off in both text towers, so the two first losses can be compared exactly

    def mmfm_step() -> float:
        v = dual.image_features(images)["global"]
        t = dual.text_features(tok)["global"]
        loss = mm_loss(v, t, dual.logit_scale)
        mm_opt.zero_grad(set_to_none=True)
        loss.backward()
        mm_opt.step()
        return float(loss.detach())

    def open_clip_step() -> float:
        img_f, txt_f, scale = oc(images, tok["input_ids"])
        loss = oc_loss(img_f, txt_f, scale)
        oc_opt.zero_grad(set_to_none=True)
        loss.backward()
        oc_opt.step()
        return float(loss.detach())

    first = (mmfm_step(), open_clip_step())
    times: dict[str, list[float]] = {"mmfm": [], "open_clip": []}
    for i in range(args.steps + 1):
        for name, fn in (("mmfm", mmfm_step), ("open_clip", open_clip_step))[:: 1 if i % 2 else -1]:
            t0 = time.perf_counter()
            fn()
            if i:  # round 0 is warm-up
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"batch {args.batch}, image {args.img}x{args.img}, text {tuple(tok['input_ids'].shape)}, "
          f"{args.steps} timed steps each, torch threads {torch.get_num_threads()}")
    for k in med:
        print(f"  {k:10s} {args.batch / med[k]:8.2f} samples/s  (median step {med[k] * 1000:.0f} ms)")
    print(f"throughput ratio mmfm / open_clip: {med['open_clip'] / med['mmfm']:.3f}")
    print(f"first-step loss: mmfm {first[0]:.6f}, open_clip {first[1]:.6f} (difference {abs(first[0] - first[1]):.2e})")
    assert F.mse_loss(torch.tensor(first[0]), torch.tensor(first[1])) < 1e-8, "the two do not compute the same loss"
    loss_only(args.loss_batch)


def loss_only(n: int, dim: int = 512, rounds: int = 20) -> None:
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
    times: dict[str, list[float]] = {"mmfm": [], "open_clip": []}
    for i in range(rounds):
        for name, fn in (("mmfm", run_mm), ("open_clip", run_oc))[:: 1 if i % 2 else -1]:
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"loss only (batch {n}, {dim}-d, normalisation included): mmfm {med['mmfm'] * 1000:.1f} ms, "
          f"open_clip {med['open_clip'] * 1000:.1f} ms, ratio mmfm / open_clip {med['open_clip'] / med['mmfm']:.3f}")


if __name__ == "__main__":
    main()
