"""`mmfm pretrain`: pretrain with a proxy-task objective on unlabelled images, image-text pairs or reports.

The run directory holds the usual engine files plus ``encoder/`` (``encoder.safetensors`` and ``encoder.json``:
registry name, options, input channels, spatial dims, preprocessing contract), which `mmfm evaluate` loads;
report and image-text objectives add ``text_encoder/`` and, for aligned models, ``dual/`` (mmfm.workflows.towers).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from mmfm.data import spec as dataspec
from mmfm.data.batches import first_item
from mmfm.encoders import ENCODERS, Encoder, build_encoder
from mmfm.encoders.dual import DualEncoder
from mmfm.encoders.text import build_text_encoder
from mmfm.encoders.zoo import ZOO
from mmfm.engine.distributed import is_main
from mmfm.engine.trainer import Trainer, seed_everything
from mmfm.errors import CheckpointError, ConfigError
from mmfm.evaluation.report import plot_losses
from mmfm.evaluation.results import ResultRecord, write_json_atomic, write_results
from mmfm.objectives import OBJECTIVES
from mmfm.workflows.config import RunConfig, dump_config, resume_key
from mmfm.workflows.provenance import provenance
from mmfm.workflows.towers import save_dual, save_text_encoder

log = logging.getLogger(__name__)


def save_encoder(encoder: Encoder, spec: dict[str, Any], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()},
              str(folder / "encoder.safetensors"))
    write_json_atomic(folder / "encoder.json", {**spec, "contract": dict(encoder.contract)})


# image encoders whose pretrained weights ship in a registry package (the offline zoo): name -> spatial dims
PACKAGED = {n: int(e.contract["spatial_dims"]) for n, e in ZOO.items() if e.kind == "image"}


def _packaged_options(name: str, text: str) -> dict[str, Any]:
    """``key=value,key=value`` after a packaged encoder's name: integer options its builder takes."""
    opts: dict[str, Any] = {}
    for item in filter(None, text.split(",")):
        key, eq, value = (t.strip() for t in item.partition("="))
        if not eq or not value.strip().isdigit() or key == "pretrained" or not ENCODERS.accepts(name, key):
            raise ConfigError(f"'{name}:{text}': '{item}' is not an option of {name}",
                              f"write {name}:input_size=64 (integer options the encoder takes), or {name} alone")
        opts[key] = int(value)
    return opts


def _supervised_encoder(run: Path) -> tuple[Encoder, dict[str, Any]]:
    """The encoder of a `mmfm train` run, with the preprocessing it was trained on: a supervised model as the
    starting point of another task (the transfer STU-Net and the TotalSegmentator-pretrained models use)."""
    from mmfm.workflows.supervised import load_trained  # supervised imports this module: not at the top

    model, state = load_trained(run)
    info = state["run_info"]
    enc = getattr(model, "encoder", None)
    if not isinstance(enc, Encoder):
        raise CheckpointError(f"{run}: this {info['task']} run trained a network without a registry encoder "
                              "(task.network=basicunet or similar), so there is no encoder to start from",
                              "train with task.network=encoder (the default) to transfer it, or pass a pretrain run")
    arch = dict(info.get("encoder") or {})
    name = str(arch.pop("name", type(enc).__name__))
    pre = dict(info.get("preprocessing") or {})
    enc.contract = {**pre, **({"input_size": list(pre["shape"][1:])} if pre.get("shape") else {})}
    opts = {k: v for k, v in arch.items() if k not in ("weights",)}
    return enc.train(), {"name": name, "options": opts, "spatial_dims": int(enc.spatial_dims),
                         "in_channels": int(enc.in_channels), "method": f"{name}-supervised[{info['task']}]",
                         "contract": enc.contract}


def load_encoder(source: str) -> tuple[Encoder, dict[str, Any]]:
    """An encoder from ``<pretrain run dir>`` (or its ``encoder/`` folder), ``random:<name>[:<2|3>D]``,
    ``litemedsam`` / ``merlin`` (the packaged pretrained weights; ``litemedsam:input_size=64`` passes an option),
    a `mmfm train` run (its task's encoder) or a name added with `mmfm zoo add`."""
    if source.startswith("random:"):
        parts = source.split(":")
        dims = int(parts[2].rstrip("dD")) if len(parts) > 2 else 2
        # random means random: an encoder that ships weights (litemedsam, merlin) is built without them
        opts = {"pretrained": False} if ENCODERS.accepts(parts[1], "pretrained") else {}
        spec = {"name": parts[1], "options": opts, "spatial_dims": dims, "in_channels": 1,
                "method": f"{parts[1]}-random"}
        return build_encoder(parts[1], spatial_dims=dims, in_channels=1, **opts), spec
    from mmfm.encoders import zoo

    if source in zoo.user_entries():   # a checkpoint added with `mmfm zoo add` (files checked against SHA-256)
        entry = zoo.verify_user(source)
        if entry["format"] in ("mmfm-encoder", "mmfm-run"):
            return load_encoder(entry["path"])
        return zoo.load_user_encoder(source)
    name, _, opt_text = source.partition(":")
    if name in PACKAGED:   # litemedsam, or litemedsam:input_size=64 (options of the packaged encoder)
        dims, opts = PACKAGED[name], _packaged_options(name, opt_text)
        enc = build_encoder(name, spatial_dims=dims, in_channels=1, **opts)
        suffix = "".join(f"[{k}={v}]" for k, v in opts.items())
        return enc, {"name": name, "options": opts, "method": f"{name}-pretrained{suffix}", "spatial_dims": dims,
                     "in_channels": 1}
    folder = Path(source)
    if not (folder / "encoder").is_dir() and not (folder / "encoder.json").exists() and \
            (folder / "checkpoints" / "last" / "state.json").is_file() and (folder / "config.yaml").is_file():
        return _supervised_encoder(folder)
    folder = folder / "encoder" if (folder / "encoder").is_dir() else folder
    if not (folder / "encoder.json").exists():
        raise CheckpointError(f"{source}: no encoder.json", "pass a `mmfm pretrain` run directory (or its "
                                                              "encoder/ folder), a `mmfm train` run, "
                                                              "random:<encoder>, litemedsam or merlin")
    spec = json.loads((folder / "encoder.json").read_text())
    enc = build_encoder(spec["name"], spatial_dims=spec["spatial_dims"], in_channels=spec["in_channels"],
                        **spec.get("options", {}))
    enc.contract = spec.get("contract", {})  # the preprocessing the weights expect travels with them
    if spec.get("dp_fixed_layers"):   # pretrained under DP with BatchNorm replaced by GroupNorm
        from mmfm.engine.privacy import fix_layers

        fix_layers(enc)
    sd = load_file(str(folder / "encoder.safetensors"))
    missing, unexpected = enc.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{folder}: encoder weights do not match '{spec['name']}' (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")
    return enc, spec


def start_from(cfg: RunConfig) -> tuple[Encoder, dict[str, Any]]:
    """The encoder named by ``encoder.weights`` (a pretrain run, an ``encoder/`` folder, ``litemedsam``,
    ``merlin``), with its stored preprocessing contract applied to ``cfg.data`` where the user left a choice open
    (channels, spacing, presets); a contradiction (a 3D encoder on 2D data, channels that differ) is an error."""
    source = str(cfg.encoder["weights"])
    enc, spec = load_encoder(source)
    unused = {k: v for k, v in cfg.encoder.items() if k != "weights" and not (k == "name" and v == spec["name"])}
    if unused:
        log.info(f"encoder.weights={source} holds a {spec['name']} with the options it was trained with; "
                 f"not used from the config: {unused}")
    data, c = cfg.data, dict(getattr(enc, "contract", {}) or {})
    dims, chans = int(spec["spatial_dims"]), int(spec["in_channels"])
    if not dataspec.source(data).preprocessed:   # a built corpus and shards hold items already preprocessed
        grid = data.patch or dataspec.grid_size(data)
        if len(grid) != dims:
            what = "data.patch" if data.patch else "data.size"
            raise ConfigError(f"the encoder from {source} is {dims}D but {what} {grid} is {len(grid)}D",
                              f"set {what} to {dims} numbers (e.g. {c.get('input_size') or [64] * dims})")
        if data.channels and data.channels != chans:
            raise ConfigError(f"the encoder from {source} takes {chans} channel(s) but data.channels is "
                              f"{data.channels}", f"set data.channels={chans} (grey is repeated, colour becomes "
                                                  "luminance) or drop it")
        data.channels = chans
        if not data.spacing and c.get("spacing"):
            data.spacing = list(c["spacing"])
        if not data.presets and c.get("applied", "").startswith("by mmfm") and c.get("presets"):
            data.presets = {m: p["name"] for m, p in c["presets"].items()}
    log.info(f"starting from the pretrained encoder {spec.get('method', source)} ({dims}D, {chans} channel(s)"
             f"{', pretrained on ' + str(c['data']) if c.get('data') else ''})")
    return enc, spec


def method_name(encoder: dict[str, Any], objective: dict[str, Any]) -> str:
    """A label that tells pretrained encoders apart: ``vit_mini-mae``, ``vit_mini-mae[block]``,
    ``vit_mini-mae+simclr``."""
    name = objective["name"]
    if name == "combined":
        name = "+".join(p["name"] for p in objective.get("parts", []))
    elif objective.get("masking", "random") != "random":
        name += f"[{objective['masking']}]"
    return f"{encoder['name']}-{name}"


def build_image_objective(cfg: RunConfig, ds: Any, start: Encoder | None = None) -> tuple[Any, Encoder, Any, Any]:
    """(objective, image encoder, text encoder or None, first image) of an objective on images (or pairs) of
    ``ds``; the encoder carries the preprocessing contract of ``cfg.data``. ``start``: an encoder whose weights the
    objective continues from (:func:`start_from`), instead of a new ``cfg.encoder``."""
    inputs = getattr(OBJECTIVES.get(cfg.objective["name"]), "inputs", ("image",))
    obj_opts = {k: v for k, v in cfg.objective.items() if k != "name"}
    enc_opts = {k: v for k, v in cfg.encoder.items() if k not in ("name", "weights")}
    txt_opts = {k: v for k, v in cfg.text_encoder.items() if k != "name"}
    seed_everything(cfg.train.seed)
    text_encoder = None
    x = first_item(ds)["image"]
    if start is None:
        encoder = build_encoder(cfg.encoder["name"], spatial_dims=x.ndim - 1, in_channels=x.shape[0], **enc_opts)
    else:
        encoder = start
        if (encoder.spatial_dims, encoder.in_channels) != (x.ndim - 1, x.shape[0]):
            raise ConfigError(f"encoder.weights={cfg.encoder['weights']} is a {encoder.spatial_dims}D encoder of "
                              f"{encoder.in_channels} channel(s), the data give {x.ndim - 1}D images of "
                              f"{x.shape[0]} channel(s)", "pretrain it on data of its own kind (e.g. 2D slices: "
                                                          "data.set=patches2d, or data.size with 2 numbers)")
    context: dict[str, Any] = {"image_size": int(x.shape[-1])}
    if "text" in inputs:
        text_encoder = build_text_encoder(cfg.text_encoder["name"], **txt_opts)
        context["text_encoder"] = text_encoder
        if ds.labels is not None:
            context["num_labels"] = int(ds.labels.max()) + 1
    try:
        objective = OBJECTIVES.build_with(cfg.objective["name"], obj_opts, {"encoder": encoder, **context},
                                          "objective")
    except ConfigError as e:
        if start is None:
            raise
        why = str(e).splitlines()[0]   # the objective's problem, without its hint
        raise ConfigError(f"objective '{cfg.objective['name']}' cannot continue from encoder.weights="
                          f"{cfg.encoder['weights']}: {why}", "continue it with an objective that takes any "
                                                              "encoder (simclr, moco, dae, ...)") from None
    encoder.contract = {**dataspec.contract(cfg.data, ds), "input_size": list(x.shape[1:]),
                        "in_channels": int(x.shape[0])}
    return objective, encoder, text_encoder, x


def encoder_record(cfg: RunConfig, x: Any, method: str, started: dict[str, Any] | None = None) -> dict[str, Any]:
    """What encoder.json records of a pretrained image encoder; ``started``: the spec of the encoder it continued
    from (its name and options are the architecture; ``started_from`` keeps the provenance)."""
    rec = {"name": cfg.encoder["name"], "options": {k: v for k, v in cfg.encoder.items() if k != "name"},
           "spatial_dims": x.ndim - 1, "in_channels": int(x.shape[0]), "objective": cfg.objective,
           "method": method, "pretrain_data": f"{dataspec.name(cfg.data)}:train", "steps": cfg.train.max_steps,
           "seed": cfg.train.seed}
    if started is not None:
        opts = dict(started.get("options", {}))
        if ENCODERS.accepts(started["name"], "pretrained"):
            opts["pretrained"] = False   # the weights are in encoder.safetensors; do not load the package's first
        rec.update(name=started["name"], options=opts, started_from={
            "source": str(cfg.encoder["weights"]), "method": started.get("method", started["name"]),
            **{k: started[k] for k in ("objective", "pretrain_data", "steps", "seed", "started_from")
               if k in started}})
    return rec


def continued_method(started: dict[str, Any], objective: dict[str, Any]) -> str:
    """``litemedsam-pretrained[input_size=64]+simclr[continued]``: the starting encoder, then the objective."""
    return f"{started.get('method', started['name'])}+{method_name({'name': ''}, objective)[1:]}[continued]"


def run_pretrain(cfg: RunConfig) -> list[ResultRecord]:
    if not cfg.objective.get("name"):
        raise ConfigError("no objective given", f"set objective.name to one of {OBJECTIVES.names()}")
    inputs = getattr(OBJECTIVES.get(cfg.objective["name"]), "inputs", ("image",))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    obj_opts = {k: v for k, v in cfg.objective.items() if k != "name"}
    txt_opts = {k: v for k, v in cfg.text_encoder.items() if k != "name"}
    seed_everything(cfg.train.seed)
    encoder, text_encoder, x = None, None, None
    start, started = None, None
    if cfg.encoder.get("weights"):   # continued (domain-adaptive) pretraining from a foundation or earlier encoder
        if inputs != ("image",):
            raise ConfigError(f"encoder.weights is not used by objective '{cfg.objective['name']}'",
                              "continue pretraining with an image objective (simclr, moco, dae, ...)")
        start, started = start_from(cfg)   # before the data: it applies the encoder's preprocessing contract
    if inputs == ("text",):
        src = dataspec.source(cfg.data)
        if src.synthetic_text and not src.text_only:   # generated captions: the reports are a set of their own
            raise ConfigError(f"objective '{cfg.objective['name']}' trains the text tower on reports",
                              "set data.set=reports")
        ds: Any = dataspec.reports(cfg.data)
        text_encoder = build_text_encoder(cfg.text_encoder["name"], **txt_opts)
        objective = OBJECTIVES.build_with(cfg.objective["name"], obj_opts, {"encoder": text_encoder}, "objective")
    else:
        ds = dataspec.pairs(cfg.data) if "text" in inputs else dataspec.unlabelled(
            cfg.data, dataspec.pretraining_split(cfg.data))
        objective, encoder, text_encoder, x = build_image_objective(cfg, ds, start)
    if is_main():
        dump_config(cfg, out / "config.yaml")
    key = resume_key(cfg)
    run_info: dict[str, Any] = {"config": key, "kind": "pretrain"}
    last = Trainer(objective, ds, cfg.train, cfg.optim, out, run_info=run_info).fit()
    if not is_main():
        return []
    objective.eval()
    towers = method_name(cfg.text_encoder if encoder is None else cfg.encoder, cfg.objective)
    method = cfg.method or (continued_method(started, cfg.objective) if started else towers)
    common = {"objective": cfg.objective, "method": method, "pretrain_data": f"{dataspec.name(cfg.data)}:train",
              "steps": cfg.train.max_steps, "seed": cfg.train.seed}
    saved: dict[str, str] = {}
    if encoder is not None:
        image_spec = encoder_record(cfg, x, method, started)
        if run_info.get("dp_fixed_layers"):
            image_spec["dp_fixed_layers"] = True
        save_encoder(encoder, image_spec, out / "encoder")
        saved["encoder"] = "encoder/"
    if text_encoder is not None:
        text_spec = {"name": cfg.text_encoder["name"], "options": txt_opts, **common}
        save_text_encoder(text_encoder, text_spec, out / "text_encoder")
        saved["text_encoder"] = "text_encoder/"
    if isinstance(getattr(objective, "model", None), DualEncoder):
        save_dual(objective.model, image_spec, text_spec, method, out / "dual")
        saved["dual"] = "dual/"
    records = [ResultRecord("pretrain", dataspec.name(cfg.data), "train", method, k, float(v), cfg.train.seed)
               for k, v in last.items() if k == "loss" or k.endswith("_loss")]
    if run_info.get("dp"):
        records.append(ResultRecord("pretrain", dataspec.name(cfg.data), "train", method, "dp_epsilon",
                                    float(run_info["dp"]["epsilon_spent"]), cfg.train.seed))
        write_json_atomic(out / "privacy.json", run_info["dp"])
    write_results(out / "results.json", records, provenance(out))
    plot_losses(out / "metrics.jsonl", out / "plots" / "loss.png", f"{method} pretraining loss")
    write_json_atomic(out / "status.json", {"status": "complete", **saved})
    from mmfm.evaluation.html_report import write_html_report

    write_html_report(out, f"{method} pretraining")
    torch.set_grad_enabled(True)
    return records
