"""Train one supervised task from a config and evaluate it: the engine of `mmfm train` and `mmfm quickstart`."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmfm.data import spec as dataspec
from mmfm.data.batches import first_item, iter_items
from mmfm.engine.trainer import Trainer, seed_everything
from mmfm.errors import ConfigError, MMFMError
from mmfm.evaluation.evaluate import evaluate
from mmfm.evaluation.per_case import write_cases
from mmfm.evaluation.report import plot_losses, write_report
from mmfm.evaluation.results import ResultRecord, write_json_atomic, write_results
from mmfm.tasks import TASKS
from mmfm.workflows.config import DataConfig, RunConfig, dump_config, load_config, resume_key
from mmfm.workflows.provenance import provenance

log = logging.getLogger(__name__)


def build_split(cfg: DataConfig, split: str, task: str, train: bool = False) -> tuple[Any, list[str]]:
    """(dataset, class names) of one split for ``task``: the one data spec (:mod:`mmfm.data.spec`)."""
    return dataspec.labelled(cfg, split, task, train=train)


def label_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of a stratified ``fraction`` of the samples (at least one per class present)."""
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n = max(1, int(round(fraction * len(idx))))
        keep.extend(rng.choice(idx, size=n, replace=False).tolist())
    return np.sort(np.asarray(keep))


def labelled_subset(dataset: Any, task: str, fraction: float, seed: int) -> np.ndarray:
    """Indices of the training samples kept at ``data.label_fraction``: stratified by class for classification,
    a seeded random ``fraction`` of the images (at least one) for tasks labelled per voxel or per box."""
    if isinstance(dataset, torch.utils.data.IterableDataset):   # a stream (shards): no random access to subset
        raise ConfigError("data.label_fraction < 1 needs random access to the training samples, which streamed "
                          "shards do not give", "train at a label budget on the source folder, or set "
                          "data.label_fraction=1 (mmfm evaluate --fractions streams shards)")
    if task == "classification":
        if dataset.labels is None:
            raise ConfigError("data.label_fraction < 1 needs labels in the training set",
                              "use a labelled dataset (labels.csv) or data.label_fraction=1")
        return label_subset(dataset.labels, fraction, seed)
    n = len(dataset)
    keep = np.random.default_rng(seed).choice(n, size=max(1, int(round(fraction * n))), replace=False)
    return np.sort(keep)


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
    task_opts = info.get("task_options") or {k: v for k, v in cfg.task.items()
                                             if k not in ("name", "class_names", "num_classes")}
    encoder = info.get("encoder") or cfg.encoder       # the architecture; the checkpoint holds every weight
    model = TASKS.build_with(info["task"], task_opts, {"encoder": encoder, "num_classes": info["num_classes"],
                                                       "class_names": info.get("class_names") or
                                                       cfg.task.get("class_names") or [], **info["input"]}, "task")
    if info.get("dp_fixed_layers"):  # trained under DP with BatchNorm replaced: the same architecture
        from mmfm.engine.privacy import fix_layers

        fix_layers(model)
    if info.get("peft"):  # trained with adapters: the checkpoint holds them unmerged (for resuming)
        from mmfm.encoders.adapters import PeftSpec, add_adapters, merge_adapters

        add_adapters(model, PeftSpec.from_dict(info["peft"]))
        load_checkpoint(ckpt, model, restore_rng_state=False)
        merge_adapters(model)
    else:
        load_checkpoint(ckpt, model, restore_rng_state=False)
    calibration = run_dir / "calibration.json"
    if calibration.exists() and hasattr(model, "temperature"):
        model.temperature.fill_(float(json.loads(calibration.read_text())["temperature"]))
    return model.eval(), state


def calibrate(prep: Prepared, cfg: RunConfig, out: Path) -> dict[str, Any] | None:
    """Temperature scaling of a classifier, fitted on ``cfg.calibrate`` (the validation split) after training;
    sets ``model.temperature`` and writes ``calibration.json`` (read back by :func:`load_trained`). None when the
    task is not classification or the split is empty; a split the model trained on is a ConfigError."""
    from mmfm.evaluation.metrics.calibration import expected_calibration_error
    from mmfm.trust.temperature import check_held_out, collect_logits, fit_temperature

    split = cfg.calibrate
    if prep.task != "classification" or not split:
        return None
    check_held_out(split, cfg.data.train_split)     # also checked before training, in run_supervised
    ds = build_split(cfg.data, split, prep.task)[0]
    if len(ds) == 0:
        return None
    z, y = collect_logits(prep.model, ds)
    t = fit_temperature(z, y)
    prep.model.temperature.fill_(t)
    info = {"method": "temperature scaling (Guo et al. 2017)", "split": split, "samples": len(y),
            "temperature": t, "ece_before": expected_calibration_error(z.softmax(1), y),
            "ece_after": expected_calibration_error((z / t).softmax(1), y),
            "nll_before": float(torch.nn.functional.cross_entropy(z, y)),
            "nll_after": float(torch.nn.functional.cross_entropy(z / t, y)), "binning": "15 equal-width, top label"}
    write_json_atomic(out / "calibration.json", info)
    return info


def report_figures(prep: Prepared, cfg: RunConfig, out: Path,
                   cases: dict[str, list[dict[str, Any]]] | None = None) -> dict[str, Path | None]:
    """Figures drawn from the trained model on the last evaluated split for the report: a classifier's
    reliability diagram, embedding map and saliency examples, a segmenter's best/median/worst cases of that
    split's per-case rows (``cases``: split -> rows, from :func:`evaluate_splits`), whole volumes predicted by
    sliding window as they were evaluated. A figure that fails is left out with a message (the run's results
    stand)."""
    from mmfm.evaluation.figures import plot_case_overlays, plot_embeddings
    from mmfm.trust.explain import plot_saliency_examples

    if not cfg.data.eval_splits or prep.task not in ("classification", "segmentation"):
        return {}
    try:
        split = cfg.data.eval_splits[-1]
        ds = build_split(cfg.data, split, prep.task)[0]     # built once for every figure below
        if prep.task == "classification":
            names = prep.run_info.get("class_names") or None
            return {"reliability diagram": reliability_plot(prep.model, ds, split, out),
                    "embeddings": plot_embeddings(prep.model.encoder, ds, out / "plots" / "embeddings.png", names),
                    "saliency": plot_saliency_examples(prep.model, ds, out / "plots" / "saliency.png",
                                                       class_names=names)}
        rows = (cases or {}).get(split) or []
        return {"segmentation cases": plot_case_overlays(prep.model, ds, rows, out / "plots" / "cases.png",
                                                         tuple(cfg.data.patch))}
    except (RuntimeError, ValueError, MMFMError) as e:
        log.warning(f"report figures skipped: {e}")
        return {}


def reliability_plot(model: Any, ds: Any, split: str, out: Path) -> Path | None:
    """The reliability diagram of a classifier on ``ds`` (the last evaluated split), before and after temperature
    scaling (``plots/reliability.png``)."""
    from mmfm.evaluation.metrics.calibration import CalibrationBins, probs_at_temperature
    from mmfm.evaluation.report import plot_reliability
    from mmfm.trust.temperature import collect_logits

    if len(ds) == 0:
        return None
    z, y = collect_logits(model, ds)
    t = float(getattr(model, "temperature", 1.0))
    curves = {"unscaled": CalibrationBins(), f"temperature {t:.2f}": CalibrationBins()}
    for bins, temp in zip(curves.values(), (1.0, t)):
        bins.update(probs_at_temperature(z.softmax(1), temp), y)
    if t == 1.0:
        curves = {"model": curves["unscaled"]}
    return plot_reliability(curves, out / "plots" / "reliability.png", f"reliability on {split}")


def training_view(ds: Any, cfg: RunConfig) -> Any:
    """The training set as the trainer reads it: seeded augmentation, then modality dropout (both seeded per
    (seed, step, index): exact under resume, mmfm/data/augment.py)."""
    if cfg.data.augment:
        from mmfm.data.augment import Augmented

        ds = Augmented(ds, cfg.data.augment)
    if cfg.data.modality_dropout:
        from mmfm.data.augment import ModalityDropout

        ds = ModalityDropout(ds, cfg.data.modality_dropout)
    return ds


@dataclass
class Prepared:
    """A supervised run before training: the model, its training data and what a checkpoint records."""

    model: Any
    train_ds: Any
    run_info: dict[str, Any]
    task: str
    num_classes: int | None
    encoder_spec: dict[str, Any]


def prepare(cfg: RunConfig, train_ds: Any = None, names: list[str] | None = None, encoder: Any = None) -> Prepared:
    """Build the task model for ``cfg`` and its training set (``train_ds``/``names``: a given one, e.g. one
    federated site's share; default ``data.train_split`` with label fraction and augmentation applied).
    ``encoder``: an encoder module to use instead of building ``cfg.encoder`` (tasks sharing one encoder)."""
    from mmfm.engine.distributed import is_main

    task_name = cfg.task["name"]
    TASKS.get(task_name)
    if cfg.task.get("network") == "basicunet" and is_main():
        log.info("task.network=basicunet: a U-Net trained from scratch; the encoder section is not used")
    given = encoder
    encoder = cfg.encoder
    encoder_spec: dict[str, Any] = {"name": cfg.encoder.get("name"),
                                    "options": {k: v for k, v in cfg.encoder.items() if k != "name"}}
    if cfg.encoder.get("weights") and given is None:
        from mmfm.workflows.pretrain import start_from

        encoder, encoder_spec = start_from(cfg)   # may fill data.channels / spacing / presets from its contract
    if train_ds is None:
        train_ds, names = build_split(cfg.data, cfg.data.train_split, task_name, train=True)
        if cfg.data.label_fraction < 1.0:
            keep = labelled_subset(train_ds, task_name, cfg.data.label_fraction, cfg.train.seed)   # refuses streams
            train_ds = train_ds.subset(keep)
        train_ds = training_view(train_ds, cfg)
    names = names or []
    first = first_item(train_ds)
    sample = first["image"]
    spatial_dims, in_channels = sample.ndim - 1, sample.shape[0]
    num_classes = cfg.task.get("num_classes") or (len(names) if names else None)
    if num_classes is None and "num_classes" in TASKS.options(task_name):
        key = "label" if task_name == "classification" else "mask"
        if key not in first:
            raise ConfigError(f"the training samples have no {key}s, which task '{task_name}' needs",
                              "use a labelled dataset (labels.csv, masks) or set task.num_classes")
        num_classes = int(max(int(item[key].max()) for item in iter_items(train_ds))) + 1
    task_opts = {k: v for k, v in cfg.task.items() if k not in ("name", "class_names", "num_classes")}
    if task_name == "detection" and names:   # box annotations (COCO): every category is a class
        if "classes" in cfg.task and is_main():
            log.info(f"task.classes (mask values) is not used: the box annotations name {len(names) - 1} "
                     f"categories ({', '.join(names[1:])})")
        task_opts["classes"] = list(range(1, len(names)))
    seed_everything(cfg.train.seed)  # the initial weights are part of what the seed fixes
    if given is not None:
        encoder = given
    class_names = list(cfg.task.get("class_names") or names or [])
    model = TASKS.build_with(task_name, task_opts, {"encoder": encoder, "num_classes": num_classes,
                                                    "spatial_dims": spatial_dims, "in_channels": in_channels,
                                                    "image_size": list(sample.shape[1:]),
                                                    "class_names": class_names}, "task")
    run_info = {"config": resume_key(cfg), "task": task_name, "num_classes": num_classes,
                "class_names": class_names, "task_options": task_opts,
                "encoder": {"name": encoder_spec.get("name"), **encoder_spec.get("options", {})},
                "input": {"spatial_dims": spatial_dims, "in_channels": in_channels,
                          "image_size": list(sample.shape[1:])},
                "preprocessing": dataspec.contract(cfg.data, train_ds)}
    return Prepared(model, train_ds, run_info, task_name, num_classes, encoder_spec)


def method_name(cfg: RunConfig, prep: Prepared) -> str:
    fixed_networks = {"registration": "voxelmorph", "detection": f"retinanet:{prep.encoder_spec.get('name')}",
                      "promptable_segmentation": "litemedsam"}
    network = cfg.task.get("network") or fixed_networks.get(prep.task)
    if prep.task in ("registration", "detection"):
        network = fixed_networks[prep.task]
    arch = network if network not in (None, "encoder") else prep.encoder_spec.get("name") or "encoder"
    return cfg.method or f"{arch}-{_start_label(cfg, prep, arch)}"


def _start_label(cfg: RunConfig, prep: Prepared, arch: str) -> str:
    """Where the network's weights started: the started encoder's label (``encoder.weights``), ``pretrained``
    (a zoo encoder built with the weights its package ships: ``litemedsam-pretrained[input_size=64]``, as
    ``encoder.weights=litemedsam:input_size=64`` names it) or ``scratch``."""
    import inspect

    from mmfm.encoders import ENCODERS
    from mmfm.encoders.zoo import ZOO

    if cfg.encoder.get("weights"):
        return str(prep.encoder_spec.get("method", "pretrained")).split("-", 1)[-1]
    if prep.task == "promptable_segmentation" and arch == "litemedsam":
        return "pretrained"    # task.network=litemedsam fine-tunes the shipped LiteMedSAM
    name = cfg.encoder.get("name")
    if arch != name or name not in ZOO or ZOO[name].kind != "image" or not ENCODERS.accepts(name, "pretrained"):
        return "scratch"
    default = inspect.signature(ENCODERS.get(name)).parameters["pretrained"].default
    if not cfg.encoder.get("pretrained", default):
        return "scratch"
    opts = {k: v for k, v in cfg.encoder.items() if k not in ("name", "pretrained") and ENCODERS.accepts(name, k)}
    return "pretrained" + "".join(f"[{k}={v}]" for k, v in opts.items())


def evaluate_splits(model: Any, cfg: RunConfig, task_name: str, method: str,
                    datasets: dict[str, Any] | None = None, dataset_name: str | None = None,
                    cases: dict[str, list[dict[str, Any]]] | None = None) -> list[ResultRecord]:
    """Records of ``model`` on each of ``data.eval_splits`` (or the given ``datasets``: split -> dataset).
    ``cases``: for segmentation, receives split -> one row per image (:mod:`mmfm.evaluation.per_case`)."""
    dataset = dataset_name or dataspec.name(cfg.data)
    records = []
    for split in cfg.data.eval_splits:
        ds = datasets[split] if datasets is not None else build_split(cfg.data, split, task_name)[0]
        if len(ds) == 0:
            continue
        roi = cfg.data.patch if task_name == "segmentation" else ()
        # boundary distances in mm need the evaluated grid's voxel size: known when volumes are resampled to
        # data.spacing and evaluated whole (data.patch), not after a resize to data.size
        spacing = cfg.data.spacing if (roi and cfg.data.spacing) else ()
        rows = cases.setdefault(split, []) if cases is not None and task_name == "segmentation" else None
        for metric, value in evaluate(model, ds, task_name, class_names=cfg.task.get("class_names"),
                                      roi_size=roi, spacing=spacing, cases=rows, split=split).items():
            if metric != "classes_evaluated":
                records.append(ResultRecord(task_name, dataset, split, method, metric, value, cfg.train.seed,
                                            cfg.data.label_fraction))
    return records


def evaluate_without_each_modality(prep: Prepared, cfg: RunConfig) -> list[ResultRecord]:
    """``data.eval_missing``: the eval splits again with each modality removed in turn (zeros in its channels,
    absent for late fusion); the split is named ``<split>-no<modality>``."""
    from dataclasses import replace

    mods = list(getattr(prep.train_ds, "modalities", []) or [])
    if len(mods) < 2:
        raise ConfigError("data.eval_missing needs samples with several modalities",
                          "list two or more modalities in data.modalities (a catalog or folder dataset)")
    records = []
    for m in mods:
        data = replace(cfg.data, drop_modalities=[m], missing_modalities="zero", cache="")
        sets = {}
        for split in cfg.data.eval_splits:   # samples that hold nothing but the removed modality are left out
            ds = build_split(data, split, prep.task)[0]
            sets[split] = ds.subset([i for i in range(len(ds)) if ds.holds_any(i)])
        for r in evaluate_splits(prep.model, replace(cfg, data=data), prep.task, method_name(cfg, prep),
                                 datasets=sets, dataset_name=dataspec.name(cfg.data)):
            records.append(replace(r, split=f"{r.split}-no{m}"))
    return records


def run_supervised(cfg: RunConfig) -> list[ResultRecord]:
    """Train ``cfg.task`` on ``cfg.data`` into ``cfg.out``; write config, metrics, checkpoint, results, report.
    Checks what would fail later (empty splits, masks, label values) before anything is built or written."""
    from mmfm.engine.distributed import is_main
    from mmfm.workflows.preflight import preflight

    preflight(cfg)
    if cfg.task.get("name") == "classification":   # a calibration split it trains on: refused before anything
        from mmfm.trust.temperature import check_held_out

        check_held_out(cfg.calibrate, cfg.data.train_split)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    prep = prepare(cfg)
    if is_main():
        dump_config(cfg, out / "config.yaml")
    Trainer(prep.model, prep.train_ds, cfg.train, cfg.optim, out, run_info=prep.run_info).fit()
    if not is_main():
        return []
    calibration = calibrate(prep, cfg, out)
    cases: dict[str, list[dict[str, Any]]] = {}   # segmentation: per-case rows, cases_<split>.json/.csv
    records = evaluate_splits(prep.model, cfg, prep.task, method_name(cfg, prep), cases=cases)
    for split, rows in cases.items():
        write_cases(out, split, rows)
    if cfg.data.eval_missing:
        records += evaluate_without_each_modality(prep, cfg)
    if prep.run_info.get("dp"):   # differential privacy: the budget spent, next to the metrics it bought
        write_json_atomic(out / "privacy.json", prep.run_info["dp"])
        records.append(ResultRecord(prep.task, dataspec.name(cfg.data), "train", method_name(cfg, prep),
                                    "dp_epsilon", float(prep.run_info["dp"]["epsilon_spent"]), cfg.train.seed,
                                    cfg.data.label_fraction))
    write_results(out / "results.json", records, provenance(out))
    plots = {"training loss": plot_losses(out / "metrics.jsonl", out / "plots" / "loss.png",
                                          f"{prep.task} training loss"),
             **report_figures(prep, cfg, out, cases)}
    notes = [f"{len(prep.train_ds)} training samples, {prep.num_classes} classes, {cfg.train.max_steps} steps"]
    if prep.run_info.get("dp"):
        dp = prep.run_info["dp"]
        notes.append(f"differential privacy (Opacus, RDP accountant): epsilon {dp['epsilon_spent']:.3f} spent of "
                     f"{dp['target_epsilon']:g} at delta {dp['delta']:g}; noise multiplier {dp['noise_multiplier']:.3f}"
                     f", clipping norm {dp['max_grad_norm']:g}, Poisson sample rate {dp['sample_rate']:.4f}")
    if calibration:
        notes.append(f"temperature scaling fitted on {calibration['split']} ({calibration['samples']} samples): "
                     f"T = {calibration['temperature']:.3f}, ECE {calibration['ece_before']:.4f} -> "
                     f"{calibration['ece_after']:.4f} there (calibration.json); test metrics use it, "
                     "*_unscaled rows are the raw model")
    write_report(out / "report.md", f"{prep.task} on {dataspec.name(cfg.data)}", records, plots, notes)
    write_json_atomic(out / "status.json", {"status": "complete", "results": "results.json"})
    return records
