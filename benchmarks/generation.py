"""Generation speed of mmfm's assistant (SmolLM2-135M-Instruct): tokens per second with and without the KV cache.

Greedy decoding of one chat prompt through :class:`mmfm.tasks.assistant.Assistant` (transformers ``generate``),
``--new-tokens`` tokens exactly (no stop), median of ``--rounds`` (>= 3) alternating runs of each. Without the
cache every new token re-runs the whole sequence, so the gap grows with the answer's length. Before timing, both
must produce the same tokens. ``--precision best`` runs bf16 autocast where the device computes it natively
(mmfm's ``auto`` rule), fp32 elsewhere.

    .venv/bin/python benchmarks/generation.py [--new-tokens 32] [--rounds 3] [--precision best|fp32|bf16]
                                              [--json docs/results/bench_generation.json]

The ratio line is tokens/s with the cache over tokens/s without it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import check_rounds, cpu_header, print_ratio, provenance, write_records  # noqa: E402

from mmfm.evaluation.results import ResultRecord  # noqa: E402
from mmfm.tasks.assistant import GenerationOptions  # noqa: E402
from mmfm.workflows.chat import load_assistant  # noqa: E402

PROMPT = "Explain in a few sentences what a chest X-ray can show and what it cannot."


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--precision", default="best", choices=["best", "fp32", "bf16"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", help="write result records here")
    args = p.parse_args()
    check_rounds(args.rounds)
    device = torch.device(args.device)
    print(cpu_header(device))
    bot = load_assistant("smollm2", device=str(device), precision="auto" if args.precision == "best" else
                         args.precision)
    used = bot.precision["used"]
    print(f"precision asked: {args.precision} ({used} here): {bot.precision['why']}")
    opts = {c: GenerationOptions(max_new_tokens=args.new_tokens, use_cache=c) for c in (True, False)}
    first = {c: bot.reply(PROMPT, o) for c, o in opts.items()}              # warm-up and equality check
    if first[True].text != first[False].text or first[True].new_tokens != args.new_tokens:
        raise SystemExit(f"with and without the KV cache differ: {first[True].text!r} vs {first[False].text!r}")
    speed: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.rounds):
        for c, o in opts.items():
            r = bot.reply(PROMPT, o)
            speed[c].append(r.tokens_per_s)
    med = {c: statistics.median(v) for c, v in speed.items()}
    prompt_tokens = first[True].prompt_tokens
    for c in (True, False):
        print(f"{'with' if c else 'without'} KV cache: {med[c]:.2f} tokens/s (median of {args.rounds}; "
              f"{args.new_tokens} new tokens after a {prompt_tokens}-token prompt; runs {speed[c]})")
    if args.json:
        records = [ResultRecord("generation", "smollm2", "bench", f"{'kv-cache' if c else 'no-cache'}-{used}",
                                "tokens_per_s", med[c], 0) for c in (True, False)]
        write_records(args.json, records, provenance(device, {"asked": f"{args.precision} ({used} here)",
                                                              "smollm2": used},
                                                     [f"{args.new_tokens} new tokens, {prompt_tokens}-token prompt, "
                                                      f"greedy"]))
    print_ratio(med[True] / med[False], f"KV cache, greedy, {used}", f"no cache, greedy, {used}")


if __name__ == "__main__":
    main()
