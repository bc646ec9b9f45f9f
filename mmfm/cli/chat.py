"""`mmfm chat`: parse, then call :mod:`mmfm.workflows.chat`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    c = sub.add_parser(
        "chat", help="ask a small offline language model (SmolLM2-135M); research output, not a diagnosis",
        description="Ask a zoo language model a question (one answer), or chat with it line by line when no "
                    "question is given ('exit' or Ctrl-D ends; earlier turns are kept as context). The model runs "
                    "on this machine from the weights its registry package ships (SHA-256 checked, no network). "
                    "Decoding is greedy by default (the same question gives the same answer); --temperature > 0 "
                    "samples (with --top-p, --seed). Every answer is research output, not a diagnosis: a "
                    "135 M-parameter general-English model knows little medicine and can state wrong things "
                    "fluently. --model RUN loads a run of `mmfm report-gen` / `mmfm vqa` trained with "
                    "task.decoder=smollm2 (its image bridge and LoRA weights), which takes --image.",
        epilog="examples:\n  mmfm chat --model smollm2 \"What does a CT scan measure?\"\n"
               "  mmfm chat --model smollm2 --json --max-tokens 64 \"Explain MRI in one sentence.\"\n"
               "  mmfm chat --model smollm2                      (interactive)\n"
               "  mmfm chat --model runs/report_generation_smollm2 --image slice.png \"Describe the image.\"",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("question", nargs="?", help="the question (quote it); without it: an interactive chat")
    c.add_argument("--model", default="smollm2",
                   help="a zoo language model (default smollm2), or the folder of a run trained with "
                        "task.decoder=smollm2 (mmfm report-gen / mmfm vqa): its image bridge and LoRA weights")
    c.add_argument("--image", help="an image to ask about (with --model RUN): read, preprocessed and resized as "
                                   "the run's training images")
    c.add_argument("--modality", help="the image's modality where its format does not record it (CT, MR, XR, ...)")
    c.add_argument("--json", action="store_true",
                   help="print each answer as one JSON object (answer, label, tokens, speed, precision)")
    c.add_argument("--max-tokens", type=int, default=256, help="most tokens in an answer (default 256)")
    c.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); > 0 samples")
    c.add_argument("--top-p", type=float, default=1.0, help="sample from the smallest set of tokens holding this "
                                                             "probability (default 1.0: all); with --temperature")
    c.add_argument("--seed", type=int, default=0, help="seed of the sampling (default 0)")
    c.add_argument("--stop", action="append", default=[], help="end the answer at this string (repeatable)")
    c.add_argument("--system", help="replace the model's default system prompt")
    c.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="auto (default): bf16 where the device computes it natively, else fp32")
    c.set_defaults(func=_cmd_chat)


def _cmd_chat(a: argparse.Namespace) -> int:
    from mmfm.tasks.assistant import GenerationOptions
    from mmfm.workflows.chat import LABEL, ask, check_image, interactive, load_assistant, read_run_image

    options = GenerationOptions(max_new_tokens=a.max_tokens, temperature=a.temperature, top_p=a.top_p,
                                stop=tuple(a.stop), seed=a.seed)
    check_image(a.model, a.image)
    assistant = load_assistant(a.model, precision=a.precision, system=a.system)
    image = read_run_image(assistant, a.image, a.modality)
    if a.question is not None:
        rec = ask(assistant, a.question, options, image)
        print(json.dumps(rec) if a.json else f"{rec['answer']}\n\n[{LABEL}]")
        return 0
    interactive(assistant, options, sys.stdin, sys.stdout, as_json=a.json, image=image)
    return 0
