"""The adaptation evidence of docs/adaptation.md (issue "Adaptation"), 3 seeds each, written to docs/results/:

    python scripts/reproduce_adaptation.py peft          # LoRA vs full fine-tuning vs linear probe, mini tissue
    python scripts/reproduce_adaptation.py peft_sam      # the same on LiTS with LiteMedSAM (box prompts)
    python scripts/reproduce_adaptation.py federated     # federated vs centralised vs single site, IID/non-IID
    python scripts/reproduce_adaptation.py federated_kill  # server + 2 client processes, one killed mid-round
    python scripts/reproduce_adaptation.py continual     # forgetting: moe vs sequential vs replay
    python scripts/reproduce_adaptation.py missing       # each modality removed, with/without modality dropout
    python scripts/reproduce_adaptation.py all           # everything (about an hour on 2 CPU cores)

Runs go under runs/adaptation/<part>/ (a run whose results exist is not repeated); each part ends by writing its
records (with the trainable-parameter fraction where it matters) and regenerating the doc tables. A run that fails
(or, under COLLECT_ONLY, has not finished) is recorded as failed and listed as FAILED under its table; the others go
on, and the script exits 1 at the end.
Environment: SEEDS="0 1 2", MMFM=.venv/bin/mmfm, COLLECT_ONLY=1 (write the tables from the runs that finished,
train nothing), PEFT_LRS="0.0003 0.001 0.003" (the learning-rate sweep of `peft`, the same for every arm),
PEFT_STEPS=200 (its optimiser steps per run), PEFT_ARMS="full lora linear_probe", PEFT_SWEEP_SEEDS (the seeds
that run every rate; default SEEDS; the other SEEDS run each arm at its rate chosen on val).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import reproduce_runs  # noqa: E402
from reproduce_runs import attempt  # noqa: E402

RUNS = ROOT / "runs" / "adaptation"
RESULTS = ROOT / "docs" / "results"
SEEDS = [int(s) for s in os.environ.get("SEEDS", "0 1 2").split()]
MMFM = os.environ.get("MMFM", str(ROOT / ".venv" / "bin" / "mmfm"))


COLLECT_ONLY = os.environ.get("COLLECT_ONLY") == "1"


def run(out: Path, *args: str) -> Path:
    """``mmfm ARGS out=OUT`` unless OUT already holds a finished run; RunFailed if it fails."""
    return reproduce_runs.run(MMFM, out, *args, collect_only=COLLECT_ONLY)


def records(out: Path, splits: tuple[str, ...] = ("test",), extra: dict | None = None) -> list[dict]:
    recs = [r for r in json.loads((out / "results.json").read_text()) if r["split"].split("-")[0] in splits
            or r["split"].startswith("after:")]
    state = out / "checkpoints" / "last" / "state.json"
    if state.exists():
        params = json.loads(state.read_text())["run_info"].get("parameters")
        if params:
            recs.append({**recs[0], "split": "train", "metric": "trainable_fraction", "value": params["fraction"]})
    return [{**r, **(extra or {})} for r in recs]


def save(name: str, recs: list[dict]) -> None:
    """docs/results/NAME.json, every record with its provenance (records made here: this machine, now)."""
    from mmfm.workflows.provenance import provenance

    here = provenance()
    reproduce_runs.save(RESULTS, name, [r if r.get("provenance") else {**r, "provenance": here} for r in recs])


def pretrained_vit() -> Path:
    enc = ROOT / "runs" / "vfm" / "pretrain" / "mae_2d"
    if not (enc / "encoder" / "encoder.json").exists():
        subprocess.run([MMFM, "pretrain", "configs/pretrain/mae_2d.yaml", f"out={enc}", "train.progress=false"],
                       check=True, cwd=ROOT)
    return enc


PEFT_LRS = [float(x) for x in os.environ.get("PEFT_LRS", "0.0003 0.001 0.003").split()]
PEFT_STEPS = int(os.environ.get("PEFT_STEPS", "200"))
PEFT_ARMS = os.environ.get("PEFT_ARMS", "full lora linear_probe").split()
PEFT_SWEEP_SEEDS = [int(x) for x in os.environ.get("PEFT_SWEEP_SEEDS", " ".join(map(str, SEEDS))).split()]


def peft() -> None:
    """Tissue classification on mini's patches (5 classes), vit_mini pretrained by MAE on mini's unlabelled
    patches: the whole encoder fine-tuned, LoRA (rank 8) on every linear layer of the encoder, the encoder
    frozen (linear probe). Same steps, data and seeds; every arm at every learning rate of one sweep (PEFT_LRS)
    with the sweep seeds (PEFT_SWEEP_SEEDS, default all SEEDS), scored on val and test; each arm's rate is the
    one of best mean validation balanced accuracy over the sweep seeds, and the other SEEDS run at that rate
    only. The doc table makes the same choice from the records (scripts/doc_tables.py adapt_peft)."""
    from doc_tables import best_on_val

    enc = pretrained_vit()
    base = ["train", "configs/quickstart_classification.yaml", "encoder.name=vit_mini", "encoder.patch_size=4",
            f"encoder.weights={enc}", f"train.max_steps={PEFT_STEPS}", "train.batch_size=64",
            "data.eval_splits=[val,test]"]
    methods = {"full": [], "lora": ["train.peft=lora", "train.peft_rank=8"],
               "linear_probe": ["task.freeze_encoder=true"]}
    methods = {m: extra for m, extra in methods.items() if m in PEFT_ARMS}
    recs: list[dict] = []

    def one(m: str, lr: float, seed: int) -> None:
        method = f"vit_mini-mae-{m}[lr={lr:g}]"
        with attempt(recs, "classification", "mini/patches2d", method, seed):
            out = RUNS / "peft" / f"{m}-lr{lr:g}-{PEFT_STEPS}steps-s{seed}"
            recs.extend(records(run(out, *base, *methods[m], f"optim.lr={lr:g}", f"train.seed={seed}",
                                    f"method={method}"), ("val", "test")))

    for seed in PEFT_SWEEP_SEEDS:
        for lr in PEFT_LRS:
            for m in methods:
                one(m, lr, seed)
        save("adapt_peft", recs)   # after every seed: a stopped sweep keeps its finished seeds in the table
    for m in methods:
        val = [r for r in recs if r["split"] == "val" and r["metric"] == "balanced_accuracy"
               and r["method"].startswith(f"vit_mini-mae-{m}[")]
        chosen = best_on_val(val, sorted({r["method"] for r in val}))
        if chosen is None:
            continue   # every sweep run of this arm failed: recorded as such
        lr = float(chosen[0].split("[lr=")[1].rstrip("]"))
        for seed in SEEDS:
            if seed not in PEFT_SWEEP_SEEDS:
                one(m, lr, seed)
    save("adapt_peft", recs)


def peft_sam() -> None:
    """LiteMedSAM on mini's LiTS slices with box prompts: as shipped (no update), mask decoder only (MedSAM's
    recipe; the image encoder frozen), LoRA on the image encoder and mask decoder, everything fine-tuned."""
    base = ["train", "configs/promptable_segmentation.yaml", "train.max_steps=12", "train.batch_size=2",
            "data.eval_splits=[test]", "train.ckpt_every=12", "optim.warmup_steps=2"]
    methods = {"as_shipped": ["optim.lr=0", "train.max_steps=1"],
               "decoder_only": ["optim.lr=0.0001"],
               "lora": ["train.peft=lora", "train.peft_rank=8", "optim.lr=0.0003"],
               "full": ["task.train_image_encoder=true", "optim.lr=0.0001"]}
    recs = []
    for seed in SEEDS:
        for m, extra in methods.items():
            if m == "as_shipped" and seed != SEEDS[0]:
                continue   # deterministic: one run
            with attempt(recs, "promptable_segmentation", "mini/slices2d", f"litemedsam-{m}", seed):
                recs += records(run(RUNS / "peft_sam" / f"{m}-s{seed}", *base, *extra, f"train.seed={seed}",
                                    f"method=litemedsam-{m}"))
    save("adapt_peft_sam", recs)


def federated() -> None:
    """Tissue classification on mini, sites by modality (CT site: LiTS; MR site: brain; non-IID: different
    classes) or split IID; federated (FedAvg, FedProx) vs centralised vs each site alone, the same number of
    optimiser steps per site (6 rounds x 20 local steps = 120; centralised: 240 = both sites' total); the
    centralised and single-site models are evaluated on every site's test data too."""
    cfg = "configs/federated_classification.yaml"
    common = ["encoder.name=resnet_tiny", "train.batch_size=32", "data.eval_splits=[test]", "federate.rounds=6"]
    recs = []
    for seed in SEEDS:
        s = f"train.seed={seed}"
        for sites, strat in (("modality", "fedavg"), ("modality", "fedprox"), ("iid", "fedavg")):
            with attempt(recs, "classification", "mini/patches2d", f"federated-{sites}-{strat}", seed):
                out = run(RUNS / "federated" / f"{strat}-{sites}-s{seed}", "federate", "simulate", cfg, *common, s,
                          f"federate.sites={sites}", f"federate.strategy={strat}", f"method=federated-{sites}")
                # the global model scored like the others (balanced accuracy on the union of the test sets, not
                # the example-weighted mean of the sites' own numbers that results.json reports)
                recs += sites_of(out, seed, f"federated-{sites}-{strat}")
        with attempt(recs, "classification", "mini/patches2d", "centralised", seed):
            recs += sites_of(run(RUNS / "federated" / f"central-s{seed}", "train", cfg, *common, s,
                                 "train.max_steps=240", "method=centralised"), seed)
        for site in ("CT", "MR"):
            with attempt(recs, "classification", "mini/patches2d", f"single-site-{site}", seed):
                recs += sites_of(run(RUNS / "federated" / f"single-{site}-s{seed}", "train", cfg, *common, s,
                                     "train.max_steps=120", f"data.options={{modality: {site}}}",
                                     f"method=single-site-{site}"), seed)
    save("adapt_federated", recs)


def federated_kill() -> None:
    """`mmfm federate server` and two `client` processes over loopback; the MR client is killed (SIGKILL) while
    it trains in round 3 of 6. The federation must finish with CT alone; federation.json says who trained when."""
    import signal
    import socket
    import time

    out = RUNS / "federated" / "killed-client"
    if not (out / "status.json").exists():
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        args = ["configs/federated_classification.yaml", "encoder.name=resnet_tiny", "train.batch_size=32",
                "data.eval_splits=[test]", "federate.rounds=6", f"federate.address=127.0.0.1:{port}", f"out={out}"]
        server = subprocess.Popen([MMFM, "federate", "server", *args], cwd=ROOT)
        time.sleep(2)
        ct = subprocess.Popen([MMFM, "federate", "client", "--site", "CT", *args], cwd=ROOT)
        mr = subprocess.Popen([MMFM, "federate", "client", "--site", "MR", *args], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        trains = 0
        for line in mr.stdout:   # Flower logs every message the client receives
            if "Received: train message" in line:
                trains += 1
                if trains == 3:
                    time.sleep(0.5)
                    mr.send_signal(signal.SIGKILL)
                    break
        mr.wait()
        codes = server.wait(timeout=1800), ct.wait(timeout=300)
        if any(codes):
            recs = [reproduce_runs.failed_record("federation", "mini/patches2d", "killed-client", 0,
                                                 f"server exit {codes[0]}, CT client exit {codes[1]}")]
            reproduce_runs.FAILURES.extend(recs)
            save("adapt_federated_kill", recs)
            return
    fed = json.loads((out / "federation.json").read_text())
    recs = []
    for p in fed["participation"]:
        recs.append({"task": "federation", "dataset": "mini/patches2d", "split": f"round {p['round']}",
                     "method": "killed-client", "metric": "sites_trained", "value": len(p["trained"]), "seed": 0,
                     "label_fraction": 1.0})
    recs += [{**r, "method": "killed-client"} for r in json.loads((out / "results.json").read_text())]
    save("adapt_federated_kill", recs)


def sites_of(out: Path, seed: int, method: str = "") -> list[dict]:
    """A centrally trained run evaluated on all of mini's test patches and on each modality site's share, as the
    federated runs report themselves."""
    from dataclasses import replace

    from mmfm.evaluation.evaluate import evaluate
    from mmfm.workflows.config import load_config
    from mmfm.workflows.provenance import provenance
    from mmfm.workflows.supervised import build_split, load_trained

    cfg = load_config(out / "config.yaml")
    model, _ = load_trained(out)
    prov = provenance(out)   # evaluated here, now, from the model the run trained
    recs = []
    for where, opts in (("", {}), ("@CT", {"modality": "CT"}), ("@MR", {"modality": "MR"})):
        ds = build_split(replace(cfg.data, options=opts), "test", "classification")[0]
        for metric, value in evaluate(model, ds, "classification").items():
            if metric != "classes_evaluated":
                recs.append({"task": "classification", "dataset": f"mini/patches2d{where}", "split": "test",
                             "method": method or cfg.method, "metric": metric, "value": float(value), "seed": seed,
                             "label_fraction": 1.0, "provenance": prov})
    return recs


def continual() -> None:
    recs = []
    for seed in SEEDS:
        for method in ("sequential", "replay", "moe"):
            out, done = RUNS / "continual" / f"{method}-s{seed}", False
            with attempt(recs, "continual", "mini", f"continual-{method}", seed, split="final"):
                done = bool(run(out, "continual", "configs/continual_mini.yaml", f"continual.method={method}",
                                f"train.seed={seed}", "continual.steps_per_task=60"))
            if not done:
                continue   # recorded as failed
            summary = json.loads((out / "continual.json").read_text())
            for r in json.loads((out / "results.json").read_text()):
                recs.append(r)
            base = {"task": "continual", "dataset": "mini", "seed": seed, "label_fraction": 1.0,
                    "method": f"continual-{method}", "split": "final",
                    "provenance": (json.loads((out / "results.json").read_text()) or [{}])[0].get("provenance")}
            recs.append({**base, "metric": "mean_forgetting", "value": summary["mean_forgetting"]})
            recs.append({**base, "metric": "final_mean", "value": summary["final_mean"]})
            if method == "moe":
                recs.append({**base, "method": "continual-moe-oracle", "metric": "mean_forgetting",
                             "value": summary["oracle_mean_forgetting"]})
                final = summary["routing_accuracy"][-1]
                recs.append({**base, "metric": "routing_accuracy", "value": sum(final) / len(final)})
    save("adapt_continual", recs)


def missing() -> None:
    """Synthetic paired PET/CT lesions (no registry package ships paired multi-modal scans; mmfm.data.synthetic),
    early fusion (one encoder, 2 channels) vs late fusion (one encoder per modality), each with and without
    modality dropout (p = 0.5), evaluated with both modalities and with each removed."""
    from mmfm.data.synthetic import write_petct_phantoms

    data = RUNS / "missing" / "petct"
    if not (data / "labels.csv").exists():
        write_petct_phantoms(data, n=600, size=32, seed=0)
    recs = []
    for seed in SEEDS:
        for fusion in ("early", "late"):
            enc = ["encoder={name: resnet_tiny}"] if fusion == "early" else []
            for p in (0.0, 0.5):
                with attempt(recs, "classification", "petct-phantoms", f"{fusion}-dropout{p}", seed):
                    recs += records(run(RUNS / "missing" / f"{fusion}-p{p}-s{seed}", "train",
                                        "configs/missing_modalities.yaml", f"data.root={data}", *enc,
                                        f"data.modality_dropout={p}", f"train.seed={seed}", "train.max_steps=150",
                                        f"method={fusion}-dropout{p}"))
    save("adapt_missing", recs)


PARTS = {"peft": peft, "peft_sam": peft_sam, "federated": federated, "federated_kill": federated_kill,
         "continual": continual, "missing": missing}

if __name__ == "__main__":
    from mmfm.cli.logs import setup as show_progress

    show_progress()   # the library's log lines (progress, decisions), as the mmfm command shows them
    if len(sys.argv) != 2 or sys.argv[1] not in (*PARTS, "all"):
        raise SystemExit(__doc__)
    for name, fn in PARTS.items():
        if sys.argv[1] in (name, "all"):
            fn()
    sys.exit(reproduce_runs.exit_status())
