"""`mmfm federate`: train one task across sites with Flower, in one process (``simulate``) or as a server and one
process per site (``server`` / ``client --site S``), and report every site's metrics and the overall ones.

The sites come from one configuration: ``federate.sites`` splits every split of ``data`` the same way
(:mod:`mmfm.data.sites`), so the server and each client agree on who is who without exchanging data. A client only
ever reads its own site's samples. The global model is written like any `mmfm train` run (``checkpoints/last``
with its run_info), so `mmfm segment`, ``load_trained`` and the evaluation commands take it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mmfm.data import spec as dataspec
from mmfm.data.sites import BUILTIN, assign_sites, site_indices, site_values
from mmfm.engine.checkpoint import save_checkpoint
from mmfm.engine.distributed import is_main
from mmfm.errors import ConfigError
from mmfm.evaluation.evaluate import evaluate
from mmfm.evaluation.report import write_report
from mmfm.evaluation.results import ResultRecord, write_json_atomic, write_results
from mmfm.workflows.config import RunConfig, dump_config, resume_key
from mmfm.workflows.provenance import provenance
from mmfm.workflows.supervised import build_split, labelled_subset, method_name, prepare, training_view

log = logging.getLogger(__name__)


def _sites_of_split(cfg: RunConfig, split: str, ds: Any) -> dict[str, Any]:
    by = cfg.federate.sites
    arrays = dataspec.source(cfg.data).site_fields(split)
    values = None if by == "iid" else site_values(ds, arrays, by)
    seed = cfg.data.split_seed * 7919 + len(split)
    return site_indices(assign_sites(len(ds), values, by, cfg.federate.num_sites, seed))


def site_datasets(cfg: RunConfig) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """site -> {"train": dataset, <eval split>: dataset}, and the class names."""
    task = cfg.task["name"]
    if dataspec.source(cfg.data).streamed:
        raise ConfigError("mmfm federate needs an indexable dataset, not a shard stream",
                          "point data at the folder or catalog dataset the shards were written from")
    if _pretraining(cfg):
        return _pretraining_sites(cfg), []
    train, names = build_split(cfg.data, cfg.data.train_split, task, train=True)
    sites: dict[str, dict[str, Any]] = {}
    for site, idx in _sites_of_split(cfg, cfg.data.train_split, train).items():
        ds = train.subset(idx)
        if cfg.data.label_fraction < 1.0:
            ds = ds.subset(labelled_subset(ds, task, cfg.data.label_fraction, cfg.train.seed))
        sites[site] = {"train": training_view(ds, cfg)}
    if len(sites) < 2 and cfg.federate.sites not in ("iid", "patient"):
        raise ConfigError(f"federate.sites='{cfg.federate.sites}' gives {len(sites)} site(s) on this data",
                          f"use a field that differs between samples, or one of {', '.join(BUILTIN)}")
    for split in cfg.data.eval_splits:
        ds, _ = build_split(cfg.data, split, task)
        for site, idx in _sites_of_split(cfg, split, ds).items():
            if site in sites:   # a site with no training samples does not take part
                sites[site][split] = ds.subset(idx)
    return sites, names


def _pretraining(cfg: RunConfig) -> bool:
    """A config with an objective federates pretraining (self-supervised on images; the sites' data unlabelled)."""
    if not cfg.objective.get("name"):
        return False
    from mmfm.objectives import OBJECTIVES

    if getattr(OBJECTIVES.get(cfg.objective["name"]), "inputs", ("image",)) != ("image",):
        raise ConfigError(f"mmfm federate pretrains with objectives on images; '{cfg.objective['name']}' needs text",
                          "use an image objective (mae, simclr, moco, ...) or a supervised task")
    return True


def _pretraining_sites(cfg: RunConfig) -> dict[str, dict[str, Any]]:
    """Each site's unlabelled training images, and its share of the validation images (to report the objective's
    loss on held-out data)."""
    train_split = dataspec.pretraining_split(cfg.data)
    train = dataspec.unlabelled(cfg.data, train_split)
    sites = {site: {"train": train.subset(idx)} for site, idx in _sites_of_split(cfg, train_split, train).items()}
    if train_split == "train" and "val" in cfg.data.eval_splits:
        val = dataspec.unlabelled(cfg.data, "val")
        for site, idx in _sites_of_split(cfg, "val", val).items():
            if site in sites:
                sites[site]["val"] = val.subset(idx)
    return sites


def _loss_evaluator(sets: dict[str, Any], batch_size: int) -> Any:
    """Mean objective loss on each held-out split, with fixed random masks/views (seed 0): comparable rounds."""
    import torch

    from mmfm.data.datasets import collate_samples

    def run(model: Any) -> dict[str, float]:
        out = {}
        for split, ds in sets.items():
            if split == "train" or len(ds) == 0:
                continue
            state = torch.get_rng_state()
            torch.manual_seed(0)
            losses = []
            with torch.no_grad():
                for start in range(0, min(len(ds), 8 * batch_size), batch_size):
                    batch = collate_samples([ds[i] for i in range(start, min(start + batch_size, len(ds)))])
                    if len(batch["image"]) > 1:   # contrastive objectives need two samples
                        losses.append(float(model(batch)["loss"]))
            torch.set_rng_state(state)
            if losses:
                out[f"{split}/loss"] = sum(losses) / len(losses)
        return out
    return run


def _evaluator(cfg: RunConfig, sets: dict[str, Any]) -> Any:
    task = cfg.task["name"]

    def run(model: Any) -> dict[str, float]:
        out = {}
        for split, ds in sets.items():
            if split == "train" or len(ds) == 0:
                continue
            for metric, value in evaluate(model, ds, task, class_names=cfg.task.get("class_names")).items():
                if metric != "classes_evaluated":
                    out[f"{split}/{metric}"] = float(value)
        return out
    return run


def _n_eval(sets: dict[str, Any]) -> int:
    return sum(len(ds) for k, ds in sets.items() if k != "train")


def _client(cfg: RunConfig, site: str, sets: dict[str, Any], names: list[str], num_classes: int | None,
            secret: bytes | None = None) -> Any:
    from mmfm.engine.federated import SiteClient

    n_eval = _n_eval(sets)
    if _pretraining(cfg):
        from mmfm.workflows.pretrain import build_image_objective

        objective = build_image_objective(cfg, sets["train"])[0]   # same seed everywhere: the same initial model
        return SiteClient(site, objective, sets["train"], cfg.train, cfg.optim, cfg.federate.local_steps,
                          _loss_evaluator(sets, cfg.train.batch_size), n_eval, {"kind": "pretrain"}, secret)
    fixed = replace(cfg, task={**cfg.task, **({"num_classes": num_classes} if num_classes else {})})
    prep = prepare(fixed, train_ds=sets["train"], names=names)   # same seed everywhere: the same initial model
    return SiteClient(site, prep.model, sets["train"], cfg.train, cfg.optim, cfg.federate.local_steps,
                      _evaluator(cfg, sets), n_eval, prep.run_info, secret)


def _guard(cfg: RunConfig, sets: dict[str, dict[str, Any]], secret: bytes | None = None) -> Any:
    """What the server accepts: the configuration's sites, each with its own number of samples (the server derives
    every site's data from the same configuration), the secret, the norm bound."""
    from mmfm.engine.federated_guard import Guard

    return Guard(sorted(sets), {s: len(v["train"]) for s, v in sets.items()},
                 {s: max(_n_eval(v), 1) for s, v in sets.items()}, secret, cfg.federate.max_update_ratio)


def _check(cfg: RunConfig) -> None:
    f = cfg.federate
    if f.rounds < 1 or f.local_steps < 1 or f.min_sites < 1:
        raise ConfigError("federate.rounds, federate.local_steps and federate.min_sites must be at least 1")
    if cfg.train.peft and is_main():
        log.info("train.peft with federate: each round trains and merges a fresh adapter at every site")


@dataclass
class _Global:
    """The server's copy of the model: what it aggregates into and writes at the end."""

    model: Any
    task: str
    run_info: dict[str, Any]
    num_classes: int | None
    method: str
    encoder: Any = None     # pretraining: the image encoder, exported to encoder/
    x: Any = None           # pretraining: a sample image (the encoder's input shape)


def _global(cfg: RunConfig) -> _Global:
    if _pretraining(cfg):
        from mmfm.workflows.pretrain import build_image_objective
        from mmfm.workflows.pretrain import method_name as objective_method

        ds = dataspec.unlabelled(cfg.data, dataspec.pretraining_split(cfg.data))
        objective, encoder, _, x = build_image_objective(cfg, ds)
        return _Global(objective, "pretrain", {"config": resume_key(cfg), "kind": "pretrain"}, None,
                       cfg.method or objective_method(cfg.encoder, cfg.objective), encoder, x)
    prep = prepare(cfg)
    return _Global(prep.model, prep.task, prep.run_info, prep.num_classes, method_name(cfg, prep))


def _finish(cfg: RunConfig, prep: _Global, recorder: Any, sites: list[str], mode: str,
            rejected: list[dict[str, Any]] | None = None) -> list[ResultRecord]:
    """Write the global model, results.json (each site and overall), federation.json and the report; nothing when
    the global model is not finite (it is never saved as a checkpoint)."""
    from mmfm.engine.federated import get_arrays
    from mmfm.engine.federated_guard import all_finite

    out = Path(cfg.out)
    f = cfg.federate
    if not all_finite(get_arrays(prep.model)):
        raise ConfigError("the federation's global model holds NaN or infinite values: no checkpoint was written",
                          "lower optim.lr or federate.local_steps, or check the sites' data (`mmfm data inspect`)")
    info = {**prep.run_info, "federation": {"mode": mode, "strategy": f.strategy, "rounds": f.rounds,
                                            "local_steps": f.local_steps, "sites_by": f.sites, "sites": sites,
                                            "authenticated": bool(f.secret_file), "tls": bool(f.tls_dir),
                                            "rejected": rejected or []}}
    save_checkpoint(out / "checkpoints" / "last", prep.model, None, {"step": f.rounds * f.local_steps,
                                                                     "run_info": info})
    method = f"{prep.method}-{f.strategy}"
    if prep.encoder is not None:   # federated pretraining: the encoder, as `mmfm pretrain` exports it
        from mmfm.workflows.pretrain import encoder_record, save_encoder

        save_encoder(prep.encoder, encoder_record(cfg, prep.x, method), out / "encoder")
    dataset = dataspec.name(cfg.data)
    records: list[ResultRecord] = []
    last = next((r for r in reversed(recorder.rounds) if r["evaluate"]), {"evaluate": {}, "overall": {}})
    for where, metrics in [*[(f"{dataset}@{s}", m) for s, m in sorted(last["evaluate"].items())],
                           (dataset, last["overall"])]:
        for key, value in metrics.items():
            if "/" not in key:
                continue
            split, metric = key.split("/", 1)
            records.append(ResultRecord(prep.task, where, split, method, metric, float(value), cfg.train.seed,
                                        cfg.data.label_fraction))
    write_results(out / "results.json", records, provenance(out))
    failures = [{"round": r["round"], "trained": sorted(r["fit"]), "missing": sorted(set(sites) - set(r["fit"]))}
                for r in recorder.rounds]
    write_json_atomic(out / "federation.json", {"sites": sites, "history": recorder.rounds, "participation": failures,
                                                 **info["federation"]})
    notes = [f"{mode}: {len(sites)} sites ({', '.join(sites)}) by {f.sites}, {f.strategy}, {f.rounds} rounds x "
             f"{f.local_steps} local steps"]
    notes += [f"round {x['round']}: {len(x['trained'])} site(s) trained" + (f", missing {x['missing']}"
                                                                             if x["missing"] else "")
              for x in failures]
    write_report(out / "report.md", f"federated {prep.task} on {dataset}", records, {}, notes)
    write_json_atomic(out / "status.json", {"status": "complete", "results": "results.json"})
    return records


def run_simulation(cfg: RunConfig) -> list[ResultRecord]:
    """All sites in this process, through Flower's server loop."""
    from mmfm.engine.federated import Recorder, get_arrays, make_strategy, set_arrays, simulate

    _check(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, out / "config.yaml")
    sets, names = site_datasets(cfg)
    prep = _global(cfg)
    clients = {s: _client(cfg, s, v, names, prep.num_classes) for s, v in sets.items()}
    recorder = Recorder()
    strategy = make_strategy(cfg.federate.strategy, recorder, cfg.federate.min_sites, cfg.federate.proximal_mu,
                             get_arrays(prep.model), guard=_guard(cfg, sets))
    simulate(clients, strategy, cfg.federate.rounds, cfg.federate.drop)
    set_arrays(prep.model, strategy.global_arrays())
    return _finish(cfg, prep, recorder, sorted(sets), "simulation", strategy.guard.rejected)


def _no_simulated_drops(cfg: RunConfig) -> None:
    if cfg.federate.drop:
        raise ConfigError("federate.drop simulates sites dropping out in `mmfm federate simulate` only",
                          "drop the option; with separate processes a site drops out by stopping")


def run_server(cfg: RunConfig) -> list[ResultRecord]:
    """The federation's server: waits for every site, runs the rounds, writes the run directory."""
    from mmfm.engine.federated import Recorder, get_arrays, make_strategy, serve_federation, set_arrays
    from mmfm.engine.federated_guard import read_certificates, read_secret

    _check(cfg)
    _no_simulated_drops(cfg)
    secret = read_secret(cfg.federate.secret_file)
    certificates = read_certificates(cfg.federate.tls_dir, server=True)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, out / "config.yaml")
    sets, names = site_datasets(cfg)   # the site names (the server reads no site's samples for training)
    prep = _global(cfg)
    recorder = Recorder()
    strategy = make_strategy(cfg.federate.strategy, recorder, cfg.federate.min_sites, cfg.federate.proximal_mu,
                             get_arrays(prep.model), guard=_guard(cfg, sets, secret))
    log.info(f"federation server on {cfg.federate.address}: waiting for {len(sets)} sites ({', '.join(sets)})")
    if secret is None:
        log.warning("federate.secret_file is not set: any client that reaches federate.address can join and name "
                 "itself a site (its updates are still checked)")
    serve_federation(cfg.federate.address, strategy, cfg.federate.rounds, len(sets), cfg.federate.round_timeout,
          cfg.federate.wait_s, certificates)
    set_arrays(prep.model, strategy.global_arrays())
    return _finish(cfg, prep, recorder, sorted(sets), "server", strategy.guard.rejected)


def run_client(cfg: RunConfig, site: str) -> None:
    """One site: trains on its own share of the data whenever the server asks, until the federation ends."""
    from mmfm.engine.federated import connect
    from mmfm.engine.federated_guard import read_certificates, read_secret

    _check(cfg)
    _no_simulated_drops(cfg)
    secret = read_secret(cfg.federate.secret_file)
    ca = read_certificates(cfg.federate.tls_dir, server=False)
    sets, names = site_datasets(cfg)
    if site not in sets:
        raise ConfigError(f"there is no site '{site}' in this configuration",
                          f"sites by {cfg.federate.sites}: {', '.join(sorted(sets))}")
    prep = _global(cfg)
    client = _client(cfg, site, sets[site], names, prep.num_classes, secret)
    log.info(f"site {site}: {len(sets[site]['train'])} training samples, connecting to {cfg.federate.address}")
    connect(cfg.federate.address, client, root_certificate=ca[0] if ca else None)
