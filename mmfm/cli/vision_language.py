"""`mmfm zeroshot | retrieve | report-gen | vqa | chat | summarize`: image-text models and language models."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from mmfm import api
from mmfm.cli.arguments import config_args, evaluation_args, out_folder
from mmfm.cli.runs import print_records, run_config
from mmfm.errors import MMFMError


def add_zeroshot(sub: Any) -> None:
    zs = sub.add_parser("zeroshot", help="zero-shot classification with an image-text model and prompt ensembles",
                        description="Classify the images of a mini set (or of any labelled dataset or folder: "
                                    "--dataset/--data-root) without using its labels: each class name of "
                                    "--label is put into prompt templates, the prompts' text embeddings are "
                                    "averaged per class, and each image goes to the most similar class. Writes "
                                    "results.json (accuracy, balanced accuracy, AUROC, chance levels), prompts.json "
                                    "and report.md under --out.")
    zs.add_argument("--model", required=True, help="a vision-language pretraining run (clip, medclip, gloria)")
    zs.add_argument("--set", default="patches2d", help="mini set (patches2d, slices2d, crops3d)")
    zs.add_argument("--label", default="tissue", help="label whose class names become prompts")
    zs.add_argument("--templates", nargs="+", help="prompt templates with {name}, e.g. 'a CT patch of {name}.'")
    evaluation_args(zs, "runs/zeroshot", "config overrides, e.g. task.synonyms={liver:[hepar]}")
    zs.set_defaults(func=_cmd_zeroshot)



def add_retrieve(sub: Any) -> None:
    rt = sub.add_parser("retrieve", help="image<->text retrieval, or report section matching, Recall@1/5/10",
                        description="With --model: rank the captions or reports of a dataset (default: a mini set; "
                                    "--dataset/--data-root for image-text pairs such as MIMIC-CXR or IU-Xray) for "
                                    "each image and the images for each text (i2t_/t2i_ R@1, R@5, R@10, median "
                                    "rank, chance). With --text-encoder (minilm, hf:<folder> or a report "
                                    "pretraining run): rank the impressions of the reports (IU X-ray in mini, or "
                                    "yours) for each report's findings. Writes results.json and report.md.")
    rt.add_argument("--model", help="a vision-language pretraining run")
    rt.add_argument("--text-encoder", help="a text tower for section matching on the reports")
    rt.add_argument("--set", default="patches2d", help="mini set for image-text retrieval")
    evaluation_args(rt, "runs/retrieve", "config overrides, e.g. task.max_length=64")
    rt.set_defaults(func=_cmd_retrieve)



def add_report_gen(sub: Any) -> None:
    rg = sub.add_parser("report-gen", help="train and evaluate report generation (image encoder + text decoder)",
                        description="Train an image encoder with a transformer text decoder on image-text pairs, "
                                    "generate for the eval splits (greedy) and score BLEU-1..4, ROUGE-L, CIDEr-D "
                                    "and clinical efficacy (labeller findings). Writes generated_<split>.jsonl, "
                                    "results.json, report.md, checkpoints; resumes like `mmfm train`.")
    config_args(rg, "configs/report_generation_{2d,3d}.yaml")
    rg.set_defaults(func=_cmd_report_gen)



def add_vqa(sub: Any) -> None:
    vq = sub.add_parser("vqa", help="train and evaluate visual question answering (closed and free-text)",
                        description="Train a generative VQA model (image tokens + question tokens -> answer). "
                                    "Closed questions are answered by the most likely candidate answer, open ones "
                                    "by greedy generation. Data: mini slices2d or crops3d (3D; questions "
                                    "generated from labels) or a "
                                    "SLAKE / VQA-RAD style JSON dataset (data.dataset + data.root). Writes "
                                    "answers_<split>.jsonl, results.json, report.md.")
    config_args(vq, "configs/vqa_{2d,3d}.yaml")
    vq.set_defaults(func=_cmd_vqa)



def add_chat(sub: Any) -> None:
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


def add_summarize(sub: Any) -> None:
    sm = sub.add_parser(
        "summarize", help="findings -> impression on radiology reports: a language model against baselines",
        description="Write each report's impression from its findings alone and score it against the report's own "
                    "impression (BLEU-1..4, ROUGE-L, CIDEr-D, and the labeller's clinical efficacy). Methods: "
                    "most_frequent (the training split's most frequent impression, no model), last_sentence (the "
                    "findings' last sentence copied, no model), nearest_neighbour (the impression of the training "
                    "report with the nearest findings in --text-encoder's space), prompted (--model asked for the "
                    "impression, no training; greedy). Data: the IU X-ray reports in mini (default), or your "
                    "reports with FINDINGS and IMPRESSION sections (--dataset IU-Xray --data-root DIR "
                    "data.options.require_images=false for report XMLs; --dataset MIMIC-III --data-root DIR "
                    "data.options.file=notes.csv for a CSV with the report in TEXT). "
                    "Writes results.json, report.md and impressions_<split>_<method>.jsonl under --out. A "
                    "generated impression is research output, not a diagnosis.",
        epilog="examples:\n  mmfm summarize --max-reports 50\n"
               "  mmfm summarize --methods last_sentence nearest_neighbour --splits val test",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sm.add_argument("--methods", nargs="+",
                    default=["most_frequent", "last_sentence", "nearest_neighbour", "prompted"],
                    help="methods to run (default: all four)")
    sm.add_argument("--model", default="smollm2", help="the language model prompted (default smollm2)")
    sm.add_argument("--text-encoder", default="minilm", help="the nearest neighbour's text tower (default minilm)")
    sm.add_argument("--max-tokens", type=int, default=48, help="most tokens of a generated impression (default 48)")
    sm.add_argument("--max-reports", type=int, help="score the first N reports of each split only (default: all)")
    evaluation_args(sm, "runs/summarize", "config overrides, e.g. train.precision=fp32")
    sm.set_defaults(func=_cmd_summarize)


def _cmd_summarize(a: argparse.Namespace) -> int:
    records = api.summarize(a.root, methods=a.methods, model=a.model, text_encoder=a.text_encoder,
                            max_new_tokens=a.max_tokens, max_reports=a.max_reports, dataset=a.dataset,
                            splits=a.splits, out=a.out, overrides=a.overrides)
    print_records(records, out_folder(a))
    return 0


def _cmd_zeroshot(a: argparse.Namespace) -> int:
    records = api.zeroshot(a.model, a.root, dataset=a.dataset, set=a.set, label=a.label, templates=a.templates,
                           splits=a.splits, out=a.out, overrides=a.overrides)
    print_records(records, out_folder(a))
    return 0


def _cmd_retrieve(a: argparse.Namespace) -> int:
    if bool(a.model) == bool(a.text_encoder):
        raise MMFMError("give either --model (image-text retrieval) or --text-encoder (report section matching)")
    records = api.retrieve(a.model, a.root, text_encoder=a.text_encoder, dataset=a.dataset, set=a.set,
                           splits=a.splits, out=a.out, overrides=a.overrides)
    print_records(records, out_folder(a))
    return 0


def _cmd_report_gen(a: argparse.Namespace) -> int:
    run_config(a, api.report_gen)
    return 0


def _cmd_vqa(a: argparse.Namespace) -> int:
    run_config(a, api.vqa)
    return 0


def _cmd_chat(a: argparse.Namespace) -> int:
    from mmfm.tasks.assistant import GenerationOptions
    from mmfm.workflows.chat import LABEL, check_image, interactive, read_run_image

    options = GenerationOptions(max_new_tokens=a.max_tokens, temperature=a.temperature, top_p=a.top_p,
                                stop=tuple(a.stop), seed=a.seed)   # bad options: reported before the model loads
    check_image(a.model, a.image)
    assistant = api.load_assistant(a.model, precision=a.precision, system=a.system)
    if a.question is not None:
        rec = api.chat(a.question, assistant, image=a.image, modality=a.modality, max_new_tokens=a.max_tokens,
                       temperature=a.temperature, top_p=a.top_p, stop=a.stop, seed=a.seed)
        print(json.dumps(rec) if a.json else f"{rec['answer']}\n\n[{LABEL}]")
        return 0
    interactive(assistant, options, sys.stdin, sys.stdout, as_json=a.json,
                image=read_run_image(assistant, a.image, a.modality))
    return 0


COMMANDS = {"zeroshot": add_zeroshot, "retrieve": add_retrieve, "report-gen": add_report_gen,
            "vqa": add_vqa, "chat": add_chat, "summarize": add_summarize}

# `mmfm COMMAND` -> the public function of `mmfm` its handler calls for the work
API = {"zeroshot": "zeroshot", "retrieve": "retrieve", "report-gen": "report_gen", "vqa": "vqa", "chat": "chat",
       "summarize": "summarize"}
