"""`mmfm continual`: learn ``continual.tasks`` one after another on one encoder and measure forgetting.

Methods (``continual.method``):

* ``sequential``: fine-tune the whole encoder on each task in turn (a new head per task): the baseline that
  forgets;
* ``replay``: the same, plus a buffer of ``replay_per_task`` samples of every earlier task replayed through its own
  head at each step;
* ``moe``: the first task trains the encoder, which then stays frozen; each later task gets a LoRA expert and a
  head, and a prototype gate routes every input to an expert (:mod:`mmfm.tasks.continual`, in the spirit of
  SAM-Med3D-MoE). Reported twice: with the gate choosing (``routed``: the task is not given at inference) and with
  the task's own expert (``oracle``), plus how often the gate picked the right expert.

After each task every task seen so far is evaluated on its eval split: the matrix R[t][j] (metric of task j after
learning task t). Forgetting of task j = its best earlier value minus its final value (averaged over all but the
last task). Writes continual.json (matrix, forgetting, routing), results.json, report.md with the curves, and a
folder per task with the ordinary training outputs (each resumable).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmfm.data.batches import iter_items
from mmfm.engine.trainer import Trainer
from mmfm.errors import ConfigError
from mmfm.evaluation.evaluate import evaluate
from mmfm.evaluation.results import ResultRecord, write_json_atomic, write_results
from mmfm.workflows.config import DataConfig, RunConfig, _build, dump_config, resume_key
from mmfm.workflows.provenance import provenance
from mmfm.workflows.supervised import build_split, prepare

log = logging.getLogger(__name__)

METHODS = ("moe", "sequential", "replay")
DEFAULT_METRIC = {"classification": "balanced_accuracy", "segmentation": "dice_foreground"}


def _task_configs(cfg: RunConfig) -> list[tuple[str, RunConfig, str]]:
    c = cfg.continual
    if c.method not in METHODS:
        raise ConfigError(f"continual.method='{c.method}' is not a method mmfm knows", f"use one of {METHODS}")
    if c.method == "moe" and cfg.train.peft:
        raise ConfigError("continual.method=moe brings its own adapters (one expert per task)",
                          "drop train.peft (set continual.expert_rank instead), or use sequential/replay with it")
    if len(c.tasks) < 2:
        raise ConfigError("continual.tasks lists fewer than 2 tasks", "list the tasks in the order to learn them")
    out = []
    for k, spec in enumerate(c.tasks):
        unknown = set(spec) - {"name", "task", "data", "metric"}
        if unknown or "task" not in spec:
            raise ConfigError(f"continual.tasks[{k}] has keys {sorted(spec)}",
                              "each task is {name, task: {name: ...}, data: {...}, metric: ...}")
        data = _build(DataConfig, {**cfg.to_dict()["data"], **spec.get("data", {})}, f"continual.tasks[{k}].data.")
        kind = spec["task"].get("name")
        if kind not in DEFAULT_METRIC:
            raise ConfigError(f"continual.tasks[{k}]: task '{kind}' is not supported in a continual run",
                              f"use {' or '.join(DEFAULT_METRIC)}")
        tcfg = replace(cfg, task=dict(spec["task"]), data=data,
                       train=replace(cfg.train, max_steps=c.steps_per_task, ckpt_every=c.steps_per_task))
        out.append((str(spec.get("name") or f"task{k}"), tcfg, spec.get("metric") or DEFAULT_METRIC[kind]))
    names = [n for n, _, _ in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"continual task names repeat: {names}", "give each task its own name")
    return out


def _freeze_base(encoder: torch.nn.Module) -> None:
    """The base stays exactly as the first task left it: weights frozen (and so its BatchNorm statistics: the
    trainer keeps frozen BatchNorm layers in eval mode)."""
    encoder.requires_grad_(False)


@torch.no_grad()
def _base_features(encoder: Any, ds: Any, limit: int = 512) -> torch.Tensor:
    from mmfm.encoders.adapters import has_adapters, use_adapter

    if has_adapters(encoder):
        use_adapter(encoder, None)
    was = encoder.training
    encoder.eval()
    feats = []
    for n, item in enumerate(iter_items(ds)):
        if n >= limit:
            break
        feats.append(encoder(torch.as_tensor(item["image"])[None].float())["pooled"])
    encoder.train(was)
    return torch.cat(feats)


def run_continual(cfg: RunConfig) -> list[ResultRecord]:
    from mmfm.encoders.adapters import PeftSpec, add_adapters, has_adapters, use_adapter
    from mmfm.tasks.continual import PrototypeGate, ReplayMix, RoutedEncoder

    c = cfg.continual
    tasks = _task_configs(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, out / "config.yaml")
    models, evals, buffers, experts = [], [], [], []
    gate = PrototypeGate(c.gate_prototypes)
    encoder = None
    matrix: list[list[float | None]] = []
    oracle: list[list[float | None]] = []
    routing: list[list[float | None]] = []
    for t, (name, tcfg, _) in enumerate(tasks):
        prep = prepare(tcfg, encoder=encoder)
        encoder = prep.model.encoder if encoder is None else encoder
        evals.append({s: build_split(tcfg.data, s, prep.task)[0] for s in tcfg.data.eval_splits[:1]})
        if c.method == "moe" and t > 0:
            expert = f"expert_{t}"
            add_adapters(encoder, PeftSpec("lora", rank=c.expert_rank, alpha=2.0 * c.expert_rank), adapter=expert)
            use_adapter(encoder, expert)
            experts.append(expert)
        elif c.method == "moe":
            experts.append(None)
        model: Any = prep.model
        if c.method == "replay" and t > 0:
            model = ReplayMix(prep.model, models, buffers, c.replay_batch, seed=tcfg.train.seed)
        info = {**prep.run_info, "config": {**resume_key(tcfg), "continual": {"method": c.method, "task": t}}}
        Trainer(model, prep.train_ds, tcfg.train, tcfg.optim, out / f"{t:02d}_{name}", run_info=info).fit()
        models.append(prep.model)
        if c.method == "moe":
            if t == 0:
                _freeze_base(encoder)
            gate.add_task(name, _base_features(encoder, prep.train_ds), seed=tcfg.train.seed)
        if c.method == "replay":
            g = np.random.default_rng(tcfg.train.seed + 7 * t)
            idx = g.choice(len(prep.train_ds), size=min(c.replay_per_task, len(prep.train_ds)), replace=False)
            buffers.append([prep.train_ds[int(i)] for i in idx])
        row, orow, rrow = [], [], []
        for j, (_, jcfg, jmetric) in enumerate(tasks[: t + 1]):
            ds = next(iter(evals[j].values()))

            def score(model: Any, _ds: Any = ds, _cfg: RunConfig = jcfg, _m: str = jmetric) -> float:
                return float(evaluate(model, _ds, _cfg.task["name"], class_names=_cfg.task.get("class_names"))[_m])

            if c.method == "moe":
                if has_adapters(encoder):
                    use_adapter(encoder, experts[j])
                orow.append(score(models[j]))      # the task's own expert (oracle)
                own = models[j].encoder
                models[j].encoder = routed = RoutedEncoder(encoder, gate, experts)
                row.append(score(models[j]))       # the gate chooses
                models[j].encoder = own
                rrow.append(float(torch.cat(routed.history).eq(j).float().mean()))
            else:
                row.append(score(models[j]))
        matrix.append(row + [None] * (len(tasks) - t - 1))
        if c.method == "moe":
            oracle.append(orow + [None] * (len(tasks) - t - 1))
            routing.append(rrow + [None] * (len(tasks) - t - 1))
        log.info(f"continual {c.method}: after {name}: " +
                 ", ".join(f"{tasks[j][0]} {v:.3f}" for j, v in enumerate(row)))
    return _write(cfg, tasks, matrix, oracle, routing)


def forgetting(matrix: list[list[float | None]]) -> list[float]:
    """Per task but the last: best value before the final task minus the final value (>= 0 means forgotten)."""
    final = matrix[-1]
    out = []
    for j in range(len(final) - 1):
        before = [matrix[t][j] for t in range(j, len(matrix) - 1) if matrix[t][j] is not None]
        out.append(float(max(before) - final[j]))
    return out


def _write(cfg: RunConfig, tasks: list, matrix: list, oracle: list, routing: list) -> list[ResultRecord]:
    from mmfm.evaluation.report import write_report

    out = Path(cfg.out)
    c = cfg.continual
    names = [n for n, _, _ in tasks]
    method = cfg.method or f"continual-{c.method}"
    forg = forgetting(matrix)
    summary = {"method": c.method, "tasks": names, "metrics": [m for _, _, m in tasks], "matrix": matrix,
               "forgetting": dict(zip(names[:-1], forg)), "mean_forgetting": float(np.mean(forg)),
               "final_mean": float(np.mean(matrix[-1]))}
    if oracle:
        summary.update({"oracle_matrix": oracle, "routing_accuracy": routing,
                        "oracle_mean_forgetting": float(np.mean(forgetting(oracle)))})
    write_json_atomic(out / "continual.json", summary)
    records = []
    for t, row in enumerate(matrix):
        for j, v in enumerate(row):
            if v is not None:
                records.append(ResultRecord(tasks[j][1].task["name"], names[j], f"after:{names[t]}", method,
                                            tasks[j][2], float(v), cfg.train.seed))
    write_results(out / "results.json", records, provenance(out))
    plots = {"forgetting curves": _plot(out / "plots" / "continual.png", names, matrix, c.method)}
    notes = [f"{c.method}: {len(names)} tasks in order {' -> '.join(names)}, {c.steps_per_task} steps each",
             f"mean forgetting {summary['mean_forgetting']:.3f}, final mean metric {summary['final_mean']:.3f}"]
    write_report(out / "report.md", f"continual learning ({c.method})", records, plots, notes)
    write_json_atomic(out / "status.json", {"status": "complete", "results": "results.json"})
    return records


def _plot(path: Path, names: list[str], matrix: list, method: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for j, name in enumerate(names):
        xs = [t for t in range(len(matrix)) if matrix[t][j] is not None]
        ax.plot(xs, [matrix[t][j] for t in xs], marker="o", label=name)
    ax.set_xticks(range(len(names)), [f"after\n{n}" for n in names], fontsize=7)
    ax.set_ylabel("metric")
    ax.set_title(f"{method}: each task after each new one", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
