"""`mmfm evaluate`: evaluation protocols on any encoder (pretrained run, random init, LiteMedSAM), with label
fractions and seeds; writes results.json, summary.json (mean and spread) and report.md with a plot."""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from mmfm.data import spec as dataspec
from mmfm.data.datasets import ArrayDataset
from mmfm.engine.trainer import OptimConfig, TrainConfig, Trainer, seed_everything
from mmfm.errors import ConfigError
from mmfm.evaluation.evaluate import evaluate
from mmfm.evaluation.metrics import classification_metrics
from mmfm.evaluation.protocols import extract_features, knn_predict, linear_probe, refit_batchnorm
from mmfm.evaluation.results import ResultRecord, write_json_atomic, write_results
from mmfm.naming import slug
from mmfm.tasks.classification import ClassificationTask
from mmfm.workflows.config import DataConfig
from mmfm.workflows.pretrain import load_encoder
from mmfm.workflows.provenance import provenance
from mmfm.workflows.supervised import build_split, label_subset

log = logging.getLogger(__name__)

PROTOCOLS = ("linear", "knn", "finetune")
METRICS = ("accuracy", "balanced_accuracy", "auroc", "ece", "brier")


def _finetune(source: str, train: ArrayDataset, test: ArrayDataset, num_classes: int, seed: int, steps: int,
              out: Path) -> dict[str, float]:
    seed_everything(seed)
    encoder, _ = load_encoder(source)
    model = ClassificationTask(encoder, num_classes)
    tcfg = TrainConfig(max_steps=steps, batch_size=min(32, len(train)), seed=seed, ckpt_every=steps, progress=False)
    Trainer(model, train, tcfg, OptimConfig(lr=3e-4, warmup_steps=steps // 10), out,
            run_info={"config": {"source": source, "seed": seed, "n": len(train)}}).fit()
    m = evaluate(model, test, "classification")
    m.pop("classes_evaluated", None)
    return m


def _cap(ds: ArrayDataset, n: int | None, seed: int = 0) -> ArrayDataset:
    """A stratified subset of at most ``n`` samples (for encoders too slow to run on a whole split)."""
    if n is None or len(ds) <= n:
        return ds
    return ds.subset(label_subset(ds.labels, n / len(ds), seed))


def evaluate_encoders(sources: list[str], protocols: list[str], data: DataConfig, fractions: list[float],
                      seeds: list[int], out: str | Path, finetune_steps: int = 100,
                      max_per_split: int | None = None, score_split: str = "test",
                      seeded_init: bool = False, record_val: bool = False) -> list[ResultRecord]:
    """Evaluate each encoder at each label fraction and seed; records, summary.json and report.md in ``out``.

    Seeds: seed ``s`` draws the labelled subset (and the probe's initialisation). A source holding ``{seed}``
    (``runs/pretrain/seed{seed}``) is a different pretraining run per seed, and with ``seeded_init`` a
    ``random:`` encoder is initialised with ``s`` too, so the spread covers pretraining, initialisation and label
    sampling together; otherwise one encoder serves every seed (a random baseline is then the same network).
    ``score_split="val"`` scores on the validation split (for choosing a method or budget) and never reads the
    test split: the linear head is chosen on a label-budget subset of val and scored on the rest of val.
    ``record_val`` (with ``score_split="test"``): every linear and k-NN score is recorded on validation too (split
    ``val``, the same numbers ``score_split="val"`` gives: the same head scored on the rest of val), beside test, so
    a table can pick its best method on validation and report that method's test score. summary.json and
    report.md stay on ``score_split``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    bad = [p for p in protocols if p not in PROTOCOLS]
    if bad:
        raise ConfigError(f"unknown protocol(s) {bad}", f"choose from {PROTOCOLS}")
    if score_split not in ("test", "val"):
        raise ConfigError(f"score_split '{score_split}' is not a split to score on", "use test or val")
    if score_split == "val" and "finetune" in protocols:
        raise ConfigError("fine-tuning is scored on test only", "use linear or knn to choose on validation")
    src = dataspec.source(data)
    if src.streamed and "finetune" in protocols:
        raise ConfigError("fine-tuning at a label budget needs random access to the training samples",
                          "run --protocol finetune on the source folder or dataset; linear and knn stream shards")
    if not src.preprocessed:   # bring the data to what the encoder takes
        _, first = load_encoder(sources[0].replace("{seed}", str(seeds[0])))
        grid = data.patch or dataspec.grid_size(data)
        if len(grid) != first["spatial_dims"]:
            raise ConfigError(f"{sources[0]} is a {first['spatial_dims']}D encoder but data.size {grid} is "
                              f"{len(grid)}D", f"set data.size to {first['spatial_dims']} numbers")
        data.channels = data.channels or int(first["in_channels"])
    used = ("train", "val", "test") if score_split == "test" else ("train", "val")   # val scoring never reads test
    splits = {s: build_split(data, s, "classification") for s in used}
    splits = {s: (_cap(ds, max_per_split), names) for s, (ds, names) in splits.items()}
    names = splits["train"][1]
    k = len(names)
    records: list[ResultRecord] = []
    dataset = dataspec.name(data)
    if max_per_split:
        dataset += f" (<= {max_per_split} per split)"
    for source in sources:
        per_seed = "{seed}" in source or (seeded_init and source.startswith("random:"))
        loaded: dict[int, tuple[str, str, dict]] = {}     # the encoder of the current seed (one in memory)
        for seed in seeds:
            key = seed if per_seed else 0
            if key not in loaded:
                src = source.replace("{seed}", str(seed))
                seed_everything(key)  # without seeded_init a random-init baseline is one network for every seed
                encoder, spec = load_encoder(src)
                method = spec.get("method", src)
                log.info(f"evaluating {method}" + (f" (seed {seed})" if per_seed else ""))
                if src.startswith("random:") and refit_batchnorm(encoder, splits["train"][0]):
                    log.info("random init: BatchNorm statistics recomputed on the training images (as a "
                             "pretrained encoder's were fitted)")
                feats = {}
                if {"linear", "knn"} & set(protocols):
                    feats = {s: extract_features(encoder, ds, progress=True) for s, (ds, _) in splits.items()}
                loaded = {key: (src, method, feats)}
            src, method, feats = loaded[key]
            for fraction in fractions:
                train_labels = feats["train"][1].numpy() if feats else splits["train"][0].labels
                idx = label_subset(train_labels, fraction, seed)
                results: dict[str, dict[str, float]] = {}
                scored = feats.get(score_split)
                if "linear" in protocols:
                    # the head is chosen on validation labels at the same budget: at 1% of the training labels,
                    # 1% of the validation labels (stratified, at least one per class), never the full split
                    vidx = label_subset(feats["val"][1].numpy(), fraction, seed + 7919)
                    tr = (feats["train"][0][idx], feats["train"][1][idx])
                    va = (feats["val"][0][vidx], feats["val"][1][vidx])
                    rest = np.setdiff1d(np.arange(len(feats["val"][1])), vidx)
                    val_rest = (feats["val"][0][rest], feats["val"][1][rest])   # the samples the head was not
                    if score_split == "val":                                     # chosen on
                        if not len(rest):
                            raise ConfigError(f"at {fraction:g} of the labels the linear head is chosen on every "
                                              "validation sample, so none is left to score on",
                                              "score on validation at label fractions below 1 (e.g. 0.01 0.1)")
                        scored = val_rest
                    # at 100% of the labels the head is chosen on all of val: nothing of val is left to record
                    also = ({"also": {"val": val_rest}} if record_val and score_split == "test" and len(rest)
                            else {})
                    results["linear"] = linear_probe(tr, va, scored, k, seed=seed, **also)
                if "knn" in protocols:
                    tr = (feats["train"][0][idx], feats["train"][1][idx])
                    m = classification_metrics(knn_predict(tr, feats[score_split][0], k), feats[score_split][1])
                    if record_val and score_split == "test":
                        v = classification_metrics(knn_predict(tr, feats["val"][0], k), feats["val"][1])
                        m.update({f"val/{metric}": value for metric, value in v.items()})
                    m.pop("classes_evaluated", None)
                    results["knn"] = m
                if "finetune" in protocols:
                    run = out / "finetune" / slug(f"{method}-{fraction}-{seed}")  # never outside --out
                    results["finetune"] = _finetune(src, splits["train"][0].subset(idx), splits["test"][0], k, seed,
                                                    finetune_steps, run)
                for protocol, m in results.items():
                    # a fine-tune trained (at the trainer's precision); the probes' features are fp32 inference
                    prov = provenance(run) if protocol == "finetune" else None
                    for split, prefix in ((score_split, ""), ("val", "val/")):
                        for metric in METRICS:
                            if prefix + metric in m:
                                records.append(ResultRecord(f"classification/{protocol}", dataset, split, method,
                                                            metric, float(m[prefix + metric]), seed, fraction, prov))
        # after every encoder: a killed sweep keeps what it has
        write_results(out / "results.json", records, provenance(out))
    summary = summarise([r for r in records if r.split == score_split])
    write_json_atomic(out / "summary.json", summary)
    write_label_efficiency_report(out, summary, dataset, score_split)
    write_json_atomic(out / "status.json", {"status": "complete"})
    return records


def summarise(records: list[ResultRecord]) -> list[dict[str, Any]]:
    """Mean and sample standard deviation over seeds for each (task, method, metric, label fraction)."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in records:
        groups[(r.task, r.method, r.metric, r.label_fraction)].append(r.value)
    return [{"task": t, "method": m, "metric": me, "label_fraction": f, "mean": float(np.mean(v)),
             "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, "n_seeds": len(v)}
            for (t, m, me, f), v in sorted(groups.items())]


def write_label_efficiency_report(out: Path, summary: list[dict[str, Any]], dataset: str,
                                  split: str = "test") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [s for s in summary if s["metric"] == "balanced_accuracy"]
    lines = [f"# Label efficiency on {dataset}", "", f"Balanced accuracy on the {split} split, mean ± sd over seeds.",
             ""]
    fractions = sorted({r["label_fraction"] for r in rows})
    lines += ["| protocol | method | " + " | ".join(f"{f:g} labels" for f in fractions) + " |",
              "|---|---|" + "---|" * len(fractions)]
    fig, ax = plt.subplots(figsize=(6, 4))
    for task, method in sorted({(r["task"], r["method"]) for r in rows}):
        cells, ys, es = [], [], []
        for f in fractions:
            hit = [r for r in rows if r["task"] == task and r["method"] == method and r["label_fraction"] == f]
            cells.append(f"{hit[0]['mean']:.3f} ± {hit[0]['std']:.3f}" if hit else "-")
            ys.append(hit[0]["mean"] if hit else np.nan)
            es.append(hit[0]["std"] if hit else np.nan)
        lines.append(f"| {task.split('/')[-1]} | {method} | " + " | ".join(cells) + " |")
        ax.errorbar(fractions, ys, yerr=es, marker="o", capsize=3, label=f"{method} ({task.split('/')[-1]})")
    ax.set_xscale("log")
    ax.set_xlabel("fraction of training labels")
    ax.set_ylabel(f"balanced accuracy ({split})")
    ax.legend(fontsize=6)
    fig.tight_layout()
    (out / "plots").mkdir(exist_ok=True)
    fig.savefig(out / "plots" / "label_efficiency.png", dpi=100)
    plt.close(fig)
    lines += ["", "![label efficiency](plots/label_efficiency.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
    from mmfm.evaluation.html_report import write_html_report

    write_html_report(out, f"label efficiency on {dataset}")


def load_summary(path: str | Path) -> list[dict[str, Any]]:
    return json.loads(Path(path).read_text())

