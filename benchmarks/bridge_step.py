"""One training step of the LLaVA bridge on SmolLM2: stage 1 (the projector and a from-scratch encoder, the language
model frozen) and stage 2 (+ LoRA on the language model's attention and MLP projections), each in fp32 and in bf16
autocast.

The step is what `mmfm report-gen task.decoder=smollm2` runs: a batch of images and captions, image tokens
projected before the chat-templated caption, causal-LM cross-entropy on the caption, backward, mmfm's AdamW. The
same batch and weights for every setting; one warm-up step, then the median of ``--steps`` (>= 3) timed steps.
bf16 runs where it works (else fp32, and the record says why); on a CPU without native bf16 it is emulated, and
the header says so.

    .venv/bin/python benchmarks/bridge_step.py [--model smollm2] [--batch 4] [--img 32] [--steps 3]
                                               [--device cpu] [--json FILE]

The ratio line is the stage-2 step's speed in bf16 over its speed in fp32 (above 1: bf16 is faster).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import check_rounds, cpu_header, print_ratio, provenance, sync, working_precision, write_records  # noqa: E402,I001

from mmfm.encoders import build_encoder  # noqa: E402
from mmfm.encoders.adapters import PeftSpec, add_adapters  # noqa: E402
from mmfm.encoders.text.llm import load_language_model  # noqa: E402
from mmfm.engine.precision import autocast  # noqa: E402
from mmfm.engine.settings import OptimConfig  # noqa: E402
from mmfm.engine.trainer import make_optimizer  # noqa: E402
from mmfm.evaluation.results import ResultRecord  # noqa: E402
from mmfm.tasks.llava_bridge import LlavaBridge  # noqa: E402
from mmfm.workflows.bridge import LM_TARGETS  # noqa: E402

CAPTION = "Abdominal CT section in the last third of the liver showing a small liver tumour (about 590 pixels)."


def build(model: str, stage: int, device: torch.device) -> LlavaBridge:
    lm = load_language_model(model)
    torch.manual_seed(0)
    encoder = build_encoder("resnet_tiny", spatial_dims=2, in_channels=1)
    bridge = LlavaBridge(encoder, copy.deepcopy(lm.model), lm.tokenizer, freeze_encoder=False)
    if stage == 2:
        add_adapters(bridge, PeftSpec("lora", rank=8, alpha=16.0, targets=tuple(LM_TARGETS), modules=("lm",)))
    return bridge.to(device).train()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2", help="smollm2, or llama_tiny (the tests' stand-in)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--img", type=int, default=32)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="write result records here")
    args = p.parse_args()
    check_rounds(args.steps, "--steps")
    device = torch.device(args.device)
    print(cpu_header(device))
    batch = {"image": torch.rand(args.batch, 1, args.img, args.img, device=device), "text": [CAPTION] * args.batch}
    seconds: dict[tuple[int, str], float] = {}
    used: dict[str, str] = {}
    notes: list[str] = []
    for stage in (1, 2):
        bridge = build(args.model, stage, device)
        opt = make_optimizer(bridge, OptimConfig(lr=1e-4), device)

        def step(precision: str, bridge: LlavaBridge = bridge, opt: torch.optim.Optimizer = opt) -> None:
            with autocast(precision, device):
                loss = bridge(batch)["loss"]
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        bf16, why = working_precision("bf16", step, device, compare_fp32=False)
        used[f"stage{stage}"] = bf16
        notes.append(f"stage{stage}: {why}" if why else "")
        trainable = sum(q.numel() for q in bridge.parameters() if q.requires_grad)
        for precision in dict.fromkeys(("fp32", bf16)):
            step(precision)                                       # warm-up
            times = []
            for _ in range(args.steps):
                sync(device)
                t = time.perf_counter()
                step(precision)
                sync(device)
                times.append(time.perf_counter() - t)
            seconds[(stage, precision)] = statistics.median(times)
            print(f"stage {stage} ({trainable:,} trainable parameters), {precision}: "
                  f"{seconds[(stage, precision)]:.3f} s a step (median of {args.steps}; batch {args.batch}, "
                  f"{args.img}x{args.img} images)")
    if args.json:
        records = [ResultRecord("bridge_step", args.model, "bench", f"stage{s}-{p}", "seconds_per_step", v, 0)
                   for (s, p), v in seconds.items()]
        write_records(args.json, records, provenance(device, {"asked": "fp32 and bf16", **used}, notes))
    low = used["stage2"]
    print_ratio(seconds[(2, "fp32")] / seconds[(2, low)], f"stage 2 (LoRA), {low}", "stage 2 (LoRA), fp32")


if __name__ == "__main__":
    main()
