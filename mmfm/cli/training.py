"""`mmfm quickstart | train | pretrain | federate | continual | evaluate`: training and evaluation runs."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mmfm import api
from mmfm.cli.arguments import data_args, data_base, named_data
from mmfm.cli.runs import next_step, print_run, run_config
from mmfm.errors import MMFMError


def add_quickstart(sub: Any) -> None:
    q = sub.add_parser("quickstart", help="the main job: prepare mini, train baselines, pretrain, compare, report",
                       description="Prepare the built-in 'mini' corpus if needed, train a tissue classifier on 2D "
                                   "patches and a liver/tumour segmenter on LiTS slices, pretrain an encoder on the "
                                   "unlabelled patches (3 seeds; the recipe in configs/quickstart_pretrain.yaml, "
                                   "chosen on validation), compare three starting points (random initialisation, "
                                   "that pretraining, LiteMedSAM's packaged encoder) by linear probe at 1%, 10% and "
                                   "100% of the labels (3 seeds), and write results.json, report.md, report.html "
                                   "and plots under --out; the report opens with the comparison in one sentence.")
    q.add_argument("--out", default="runs/quickstart", help="run directory (default: runs/quickstart)")
    q.add_argument("--max-per-split", type=int, default=None, metavar="N",
                   help="compare the starting points on a stratified subset of at most N patches per split "
                        "(default: all; for a quick look, e.g. 200)")
    q.add_argument("overrides", nargs="*", help="config overrides for both runs, e.g. train.max_steps=20")
    q.set_defaults(func=_cmd_quickstart)



def add_train(sub: Any) -> None:
    t = sub.add_parser("train", help="train and evaluate a supervised task from a YAML config",
                       description="Train the task of CONFIG, evaluate it on the eval splits and write the run "
                                   "directory (config.yaml, metrics.jsonl, checkpoints/last, results.json, "
                                   "report.md). Re-running into the same directory resumes an interrupted run.")
    t.add_argument("config", help="YAML config (see configs/)")
    t.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.max_steps=10 out=runs/x")
    t.set_defaults(func=_cmd_train)



def add_pretrain(sub: Any) -> None:
    pt = sub.add_parser("pretrain", help="pretrain with a proxy task (MAE, SimCLR, ..., CLIP, GLoRIA, MedCLIP, RSM)",
                        description="Pretrain with cfg.objective: on unlabelled images (mae, simmim, simclr, moco, "
                                    "micle, pcl, voco, dae, combined), on image-text pairs (clip, medclip, gloria, "
                                    "mrem; cfg.text_encoder is the text tower) or on reports alone (rsm, mlm; "
                                    "data.set=reports). Writes the run directory with encoder/, text_encoder/ "
                                    "and dual/ (safetensors + JSON) as the objective has them. Resumes like "
                                    "`mmfm train`.")
    pt.add_argument("config", help="YAML recipe (configs/pretrain/)")
    pt.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.max_steps=100 out=runs/mae")
    pt.set_defaults(func=_cmd_pretrain)



def add_federate(sub: Any) -> None:
    fe = sub.add_parser(
        "federate", help="train a task across sites with Flower (FedAvg/FedProx): simulate, server, client",
        description="Federated training of CONFIG's task. federate.sites splits the data into sites (iid, "
                    "modality, patient, or a field/labels.csv column); each round every site trains "
                    "federate.local_steps steps on its own samples and the server aggregates (federate.strategy "
                    "fedavg|fedprox). 'simulate' runs every site in this process; 'server' and 'client --site S' "
                    "run them as separate processes over gRPC (federate.address, loopback by default). A site that "
                    "fails or disconnects mid-round is dropped from that round; the federation goes on while "
                    "federate.min_sites remain. Writes config.yaml, checkpoints/last (the global model), "
                    "results.json (each site's metrics and the overall example-weighted mean), federation.json "
                    "(who trained in each round, per-site metrics per round) and report.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  mmfm federate simulate configs/federated_classification.yaml\n"
               "  mmfm federate server configs/federated_classification.yaml &\n"
               "  mmfm federate client configs/federated_classification.yaml --site CT &\n"
               "  mmfm federate client configs/federated_classification.yaml --site MR")
    fe.add_argument("mode", choices=["simulate", "server", "client"], help="where this process stands")
    fe.add_argument("config", help="YAML config with a federate: section (see configs/)")
    fe.add_argument("--site", help="client: the site this process is")
    fe.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. federate.rounds=3")
    fe.set_defaults(func=_cmd_federate)



def add_continual(sub: Any) -> None:
    co = sub.add_parser(
        "continual", help="learn tasks one after another (MoE experts + gate, sequential, replay); forgetting",
        description="Learn continual.tasks in order on one encoder with continual.method: moe (the first task "
                    "trains the encoder, then frozen; a LoRA expert and a head per later task; a prototype gate "
                    "routes each input to an expert), sequential (fine-tune on) or replay (a buffer of earlier "
                    "tasks' samples replayed each step). After each task every earlier task is evaluated. Writes "
                    "continual.json (metric matrix, forgetting, routing accuracy), results.json, report.md with "
                    "the forgetting curves, and one resumable training folder per task.")
    co.add_argument("config", help="YAML config with a continual: section (configs/continual_mini.yaml)")
    co.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. continual.method=replay")
    co.set_defaults(func=_cmd_continual)



def add_evaluate(sub: Any) -> None:
    ev = sub.add_parser("evaluate", help="linear probe, k-NN and fine-tuning of encoders at several label fractions",
                        description="Evaluate one or more encoders (a pretrain run directory, random:<encoder>[:3D] "
                                    "or litemedsam) with the chosen protocols at each label fraction and seed. "
                                    "Writes results.json, summary.json (mean and sd over seeds), report.md and "
                                    "plots/label_efficiency.png under --out.")
    ev.add_argument("--encoder", nargs="+", required=True, help="encoder sources")
    ev.add_argument("--protocol", nargs="+", default=["linear", "knn"], help="linear, knn, finetune")
    ev.add_argument("--set", default="patches2d", help="mini set (patches2d, slices2d, crops3d)")
    ev.add_argument("--label", default="tissue", help="label key (mini: tissue, region, ...; labels.csv: label)")
    data_args(ev)
    ev.add_argument("--fractions", nargs="+", type=float, default=[0.01, 0.1, 1.0], help="label fractions")
    ev.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds")
    ev.add_argument("--finetune-steps", type=int, default=100, help="optimiser steps per fine-tuning run")
    ev.add_argument("--max-per-split", type=int, default=None,
                    help="evaluate on a stratified subset of at most N samples per split (slow encoders)")
    ev.add_argument("--record-val", action="store_true",
                    help="also record every linear/k-NN score on the validation split (beside test in results.json), "
                         "so a best method can be chosen on validation")
    ev.add_argument("--out", default="runs/evaluate", help="output folder")
    ev.add_argument("overrides", nargs="*", help="data options, e.g. data.size=[32,32] data.channels=1")
    ev.set_defaults(func=_cmd_evaluate)


def _cmd_quickstart(a: argparse.Namespace) -> int:
    records = api.quickstart(a.out, a.overrides, a.max_per_split)
    print(f"\nresults ({a.out}/results.json):")
    for r in records:
        if r.task in ("classification", "segmentation"):
            print(f"  {r.task:15s} {r.split:5s} {r.metric:18s} {r.value:.4f}")
    print((Path(a.out) / "label_efficiency" / "report.md").read_text().split("![")[0])
    print(f"report: {a.out}/report.md")
    print(f"report (one page, opens offline): {(Path(a.out) / 'report.html').resolve()}")
    print(f"try the models in a browser:  mmfm serve --model {Path(a.out) / 'classification'}")
    return 0


def _cmd_train(a: argparse.Namespace) -> int:
    run_config(a, api.train)
    return 0


def _cmd_pretrain(a: argparse.Namespace) -> int:
    out = run_config(a, api.pretrain)
    from mmfm.engine.distributed import is_main

    if is_main():
        print(next_step(out))
    return 0


def _cmd_federate(a: argparse.Namespace) -> int:
    cfg = api.config(a.config, a.overrides)
    if a.mode == "client":
        if not a.site:
            raise MMFMError("mmfm federate client needs --site NAME", "the sites are listed when the server starts")
        api.federate_client(cfg, a.site)
        print(f"site {a.site}: federation finished")
        return 0
    if a.site:
        raise MMFMError(f"--site is for `mmfm federate client`, not '{a.mode}'")
    print_run((api.federate if a.mode == "simulate" else api.federate_server)(cfg), cfg.out)
    return 0


def _cmd_continual(a: argparse.Namespace) -> int:
    import json

    cfg = api.config(a.config, a.overrides)
    api.continual(cfg)
    summary = json.loads((Path(cfg.out) / "continual.json").read_text())
    print(f"mean forgetting {summary['mean_forgetting']:.4f}, final mean metric {summary['final_mean']:.4f}")
    print(f"run directory: {cfg.out}   continual.json, results.json, report.md")
    return 0


def _cmd_evaluate(a: argparse.Namespace) -> int:
    bad = [o for o in a.overrides if not o.startswith("data.")]
    if bad:
        raise MMFMError(f"mmfm evaluate takes data options only, not '{bad[0]}'",
                        "write data.<key>=value (e.g. data.size=[32,32]); the protocols have their own flags")
    data = named_data(a, api.config(None, a.overrides, data={**data_base(a), "set": a.set, "label": a.label}).data)
    api.evaluate(a.encoder, a.out, data=asdict(data), protocols=a.protocol,
                 fractions=a.fractions, seeds=a.seeds, finetune_steps=a.finetune_steps,
                 max_per_split=a.max_per_split, record_val=a.record_val)
    print((Path(a.out) / "report.md").read_text())
    return 0


COMMANDS = {"quickstart": add_quickstart, "train": add_train, "pretrain": add_pretrain,
            "federate": add_federate, "continual": add_continual, "evaluate": add_evaluate}

# `mmfm COMMAND` -> the public function of `mmfm` its handler calls for the work
API = {"quickstart": "quickstart", "train": "train", "pretrain": "pretrain", "federate": "federate",
       "continual": "continual", "evaluate": "evaluate"}
