"""Train one supervised task from a config and evaluate it: the engine of `mmfm train` and `mmfm quickstart`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mmfm.data.catalog import get_entry, load_dataset
from mmfm.data.datasets import ArrayDataset, SampleDataset
from mmfm.data.sources.mini_reader import load_mini_arrays, mini_root
from mmfm.data.splits import group_split
from mmfm.engine.trainer import Trainer, seed_everything
from mmfm.errors import ConfigError
from mmfm.evaluation.evaluate import evaluate
from mmfm.evaluation.report import plot_losses, write_report
from mmfm.evaluation.results import ResultRecord, write_json_atomic, write_results
from mmfm.tasks import TASKS
from mmfm.workflows.config import DataConfig, RunConfig, dump_config, load_config, resume_key


def _mini_split(cfg: DataConfig, split: str, task: str) -> tuple[ArrayDataset, list[str]]:
    root = Path(cfg.root) if cfg.root else mini_root()
    d = load_mini_arrays(root, cfg.set, split)
    keep = np.ones(len(d["split"]), bool)
    for key, value in cfg.options.items():
        if key not in d:
            raise ConfigError(f"data.options.{key}: mini/{cfg.set} has no field '{key}'", f"fields: {sorted(d)}")
        keep &= d[key] == value
    card = json.loads((root / "card.json").read_text())
    if task == "classification":
        if cfg.label not in d:
            raise ConfigError(f"data.label '{cfg.label}' is not a label of mini/{cfg.set}",
                              f"labels: {list(card['sets'][cfg.set]['labels'])}")
        names = card["sets"][cfg.set]["labels"][cfg.label]
        return ArrayDataset(d["image"][keep], d[cfg.label][keep]), names
    if "mask" not in d:
        raise ConfigError(f"mini/{cfg.set} has no masks", "use set slices2d or crops3d for segmentation")
    return ArrayDataset(d["image"][keep], mask=d["mask"][keep]), []


def _catalog_split(cfg: DataConfig, split: str, task: str) -> tuple[SampleDataset, list[str]]:
    entry = get_entry(cfg.dataset)
    if cfg.root is None:
        raise ConfigError(f"data.root is required for {cfg.dataset}", f"how to get it: {entry.obtain}")
    if entry.layout == "medmnist_npz":
        samples = load_dataset(cfg.dataset, cfg.root, split=split, **cfg.options)
    else:
        allsamples = load_dataset(cfg.dataset, cfg.root, **cfg.options)
        groups = [r.get("patient") or r.get("case") or str(i) for i, r in enumerate(allsamples.records)]
        assign = group_split(groups, {"train": 0.7, "val": 0.15, "test": 0.15}, seed=cfg.split_seed)
        from mmfm.data.catalog.loaders import SampleList

        samples = SampleList([r for r, s in zip(allsamples.records, assign) if s == split], allsamples._read,
                             allsamples.class_names)
    ds = SampleDataset(samples, cfg.modalities, cfg.size, cfg.label if task == "classification" else None)
    return ds, samples.class_names if task == "classification" else []


def build_split(cfg: DataConfig, split: str, task: str) -> tuple[Any, list[str]]:
    return _mini_split(cfg, split, task) if cfg.dataset == "mini" else _catalog_split(cfg, split, task)


def label_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of a stratified ``fraction`` of the samples (at least one per class present)."""
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n = max(1, int(round(fraction * len(idx))))
        keep.extend(rng.choice(idx, size=n, replace=False).tolist())
    return np.sort(np.asarray(keep))


def preprocessing(cfg: DataConfig, train_ds: Any) -> dict[str, Any]:
    """What a model trained on this data expects as input; stored in its checkpoint."""
    if cfg.dataset == "mini":
        root = Path(cfg.root) if cfg.root else mini_root()
        card = json.loads((root / "card.json").read_text())
        return {"presets": card.get("presets", {}), "applied": "when the mini corpus was built",
                "shape": card["sets"][cfg.set]["shape"]}
    return {"presets": {m: p.to_dict() for m, p in train_ds.presets.items()}, "modalities": train_ds.modalities,
            "size": cfg.size, "applied": "by mmfm.data.datasets.SampleDataset"}


def load_trained(run_dir: str | Path) -> tuple[Any, dict[str, Any]]:
    """Rebuild a trained task from its run directory (config + safetensors checkpoint); return (model, state).

    ``state["run_info"]["preprocessing"]`` holds the presets the model was trained with.
    """
    from mmfm.engine.checkpoint import load_checkpoint, read_state

    run_dir = Path(run_dir)
    ckpt = run_dir / "checkpoints" / "last"
    state = read_state(ckpt)
    info = state["run_info"]
    cfg = load_config(run_dir / "config.yaml")
    task_opts = {k: v for k, v in cfg.task.items() if k not in ("name", "class_names", "num_classes")}
    model = TASKS.build_with(info["task"], task_opts, {"encoder": cfg.encoder, "num_classes": info["num_classes"],
                                                       **info["input"]}, "task")
    load_checkpoint(ckpt, model, restore_rng=False)
    return model.eval(), state


def run_supervised(cfg: RunConfig) -> list[ResultRecord]:
    """Train ``cfg.task`` on ``cfg.data`` into ``cfg.out``; write config, metrics, checkpoint, results, report."""
    from mmfm.engine.distributed import is_main

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    task_name = cfg.task["name"]
    TASKS.get(task_name)
    if cfg.task.get("network") == "basicunet" and is_main():
        print("[mmfm] task.network=basicunet: a U-Net trained from scratch; the encoder section is not used",
              flush=True)
    train_ds, names = build_split(cfg.data, cfg.data.train_split, task_name)
    if cfg.data.label_fraction < 1.0:
        if not isinstance(train_ds, ArrayDataset) or train_ds.label is None:
            raise ConfigError("data.label_fraction < 1 needs a classification dataset held in memory")
        train_ds = train_ds.subset(label_subset(train_ds.label.numpy(), cfg.data.label_fraction, cfg.train.seed))
    sample = train_ds[0]["image"]
    spatial_dims, in_channels = sample.ndim - 1, sample.shape[0]
    num_classes = cfg.task.get("num_classes") or (len(names) if names else None)
    if num_classes is None:
        key = "label" if task_name == "classification" else "mask"
        if key not in train_ds[0]:
            raise ConfigError(f"the training samples have no {key}s, which task '{task_name}' needs",
                              "use a labelled dataset (labels.csv, masks) or set task.num_classes")
        num_classes = int(max(int(train_ds[i][key].max()) for i in range(len(train_ds)))) + 1
    task_opts = {k: v for k, v in cfg.task.items() if k not in ("name", "class_names", "num_classes")}
    seed_everything(cfg.train.seed)  # the initial weights are part of what the seed fixes
    model = TASKS.build_with(task_name, task_opts, {"encoder": cfg.encoder, "num_classes": num_classes,
                                                    "spatial_dims": spatial_dims, "in_channels": in_channels}, "task")
    if is_main():
        dump_config(cfg, out / "config.yaml")
    key = resume_key(cfg)
    run_info = {"config": key, "task": task_name, "num_classes": num_classes,
                "input": {"spatial_dims": spatial_dims, "in_channels": in_channels},
                "preprocessing": preprocessing(cfg.data, train_ds)}
    Trainer(model, train_ds, cfg.train, cfg.optim, out, run_info=run_info).fit()
    if not is_main():
        return []
    arch = "basicunet" if cfg.task.get("network") == "basicunet" else cfg.encoder.get("name", "encoder")
    method = cfg.method or f"{arch}-scratch"
    dataset = cfg.data.dataset + (f"/{cfg.data.set}" if cfg.data.dataset == "mini" else "")
    records = []
    for split in cfg.data.eval_splits:
        ds, _ = build_split(cfg.data, split, task_name)
        if len(ds) == 0:
            continue
        for metric, value in evaluate(model, ds, task_name, class_names=cfg.task.get("class_names")).items():
            if metric != "classes_evaluated":
                records.append(ResultRecord(task_name, dataset, split, method, metric, value, cfg.train.seed,
                                            cfg.data.label_fraction))
    write_results(out / "results.json", records)
    plot = plot_losses(out / "metrics.jsonl", out / "plots" / "loss.png", f"{task_name} training loss")
    write_report(out / "report.md", f"{task_name} on {dataset}", records, {"training loss": plot},
                 [f"{len(train_ds)} training samples, {num_classes} classes, {cfg.train.max_steps} steps"])
    write_json_atomic(out / "status.json", {"status": "complete", "results": "results.json"})
    return records
