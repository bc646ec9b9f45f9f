"""Typed run configuration: YAML files plus ``key.sub=value`` command-line overrides.

Unknown keys and values of the wrong type are rejected with the closest valid key, so a typo never silently
falls back to a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mmfm.engine.settings import OptimConfig, TrainConfig  # torch-free: a config error answers at once
from mmfm.errors import ConfigError
from mmfm.options import Aggregation, ContinualMethod, MissingModalities, Prompt, choose, plain

PROMPTABLE = "promptable_segmentation"   # the task whose task.prompt is a Prompt (a bridge's is free text)


@dataclass
class DataConfig:
    dataset: str = "mini"                 # a catalog name (`mmfm data list`)
    root: str | None = None               # local copy of the dataset (default for mini: $MMFM_HOME/data/mini)
    set: str = "patches2d"                # mini only: slices2d | patches2d | crops3d | reports
    label: str = "tissue"                 # label key (classification)
    modalities: list[str] = field(default_factory=list)  # catalog datasets: early-fused modalities ([]: as read)
    missing_modalities: MissingModalities = MissingModalities.ERROR  # a sample lacking one of data.modalities:
    #                                     error | zero (zeros, and item["present"] says which are there: any-subset
    #                                     inference)
    modality_dropout: float = 0.0         # training: each modality of a sample removed with this probability
    #                                     (M3AE-style; at least one kept), so the model copes with missing ones
    drop_modalities: list[str] = field(default_factory=list)  # remove these modalities from every sample
    eval_missing: bool = False            # also evaluate with each modality removed in turn (split "test-noMR")
    size: list[int] = field(default_factory=list)  # resize grid (2 or 3 numbers); []: 64x64 for files (volumes
    #                                     sliced), mini at its stored size (slices2d 128, patches2d 32, crops3d 32^3)
    spacing: list[float] = field(default_factory=list)   # catalog/folder: resample to this voxel size (mm) first
    channels: int = 0                     # catalog/folder: bring every image to this many channels (0: as read)
    presets: dict[str, str] = field(default_factory=dict)  # modality -> preset name (`mmfm data presets`)
    patch: list[int] = field(default_factory=list)  # train on random patches of this size (foreground-aware),
    #                                     evaluate whole volumes by sliding window; data.size is then not used
    patches_per_volume: int = 1           # data.patch: random patches drawn from each volume per pass
    slice_stride: int = 1                 # 2D size on 3D volumes: use every n-th slice
    augment: list[str] = field(default_factory=list)   # seeded training augmentation: flip, rot90, affine, ...
    cache: str = ""                       # folder for preprocessed items (second epoch reads no DICOM/NIfTI)
    train_split: str = "train"            # "train+val": train on the union (then report test only)
    eval_splits: list[str] = field(default_factory=lambda: ["val", "test"])
    splits_file: str = ""                 # catalog/folder: JSON {"train": [names], "val": [...], "test": [...]}
    #                                     naming cases (nifti_folders) or files inside data.root (folder)
    label_fraction: float = 1.0           # fraction of training labels used (seeded; stratified by class)
    split_seed: int = 0
    allow_outside_root: bool = False      # every layout: follow table rows, JSON entries and links that leave data.root
    options: dict[str, Any] = field(default_factory=dict)  # extra loader options
    query: list[str] = field(default_factory=list)  # dataset dicomweb: QIDO-RS filters KEY=VALUE on data.root's
    #                                     series (retrieved once into $MMFM_HOME/dicomweb, then read as a folder)


@dataclass
class FederateConfig:
    """`mmfm federate`: one dataset split into sites, trained with Flower (mmfm/engine/federated.py)."""

    sites: str = "modality"               # iid | modality | patient | <mini field or labels.csv column>
    num_sites: int = 2                    # iid and patient: how many sites
    rounds: int = 5
    local_steps: int = 20                 # optimiser steps per site per round (train.max_steps is not used)
    strategy: Aggregation = Aggregation.FEDAVG  # fedavg | fedprox
    proximal_mu: float = 0.01             # fedprox
    min_sites: int = 1                    # a round goes on with at least this many sites (the others dropped out)
    address: str = "127.0.0.1:8080"       # server/client mode: where the server listens (loopback by default)
    round_timeout: float = 600.0          # server/client mode: seconds before a silent site counts as failed
    wait_s: float = 600.0                 # server: how long to wait for every site before the first round
    drop: dict[str, int] = field(default_factory=dict)  # simulation: site -> round from which it fails
    secret_file: str = ""                 # server/client: a file holding the federation's shared secret (same
    #                                     everywhere): a site joins only by proving it, every reply is signed
    tls_dir: str = ""                     # server/client: TLS; ca.crt (+ server.crt, server.key at the server)
    max_update_ratio: float = 10.0        # an update moving the model more than this x its norm is rejected


@dataclass
class ContinualConfig:
    """`mmfm continual`: tasks learned one after another on one encoder (mmfm/workflows/continual.py)."""

    method: ContinualMethod = ContinualMethod.MOE  # moe (experts + gate) | sequential (fine-tune on) | replay
    tasks: list[dict[str, Any]] = field(default_factory=list)  # {name, task: {...}, data: {...}, metric}
    steps_per_task: int = 200
    expert_rank: int = 8                  # moe: LoRA rank of each task's expert
    gate_prototypes: int = 8              # moe: prototypes per task in the gate
    replay_per_task: int = 64             # replay: samples kept from each earlier task
    replay_batch: int = 16                # replay: samples of each earlier task per step


@dataclass
class RunConfig:
    task: dict[str, Any] = field(default_factory=lambda: {"name": "classification"})
    objective: dict[str, Any] = field(default_factory=dict)   # pretraining: {name: mae, ...} (mmfm pretrain)
    encoder: dict[str, Any] = field(default_factory=lambda: {"name": "resnet_small"})
    text_encoder: dict[str, Any] = field(default_factory=lambda: {"name": "minilm"})  # report tower (VL runs)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    federate: FederateConfig = field(default_factory=FederateConfig)
    continual: ContinualConfig = field(default_factory=ContinualConfig)
    out: str = "runs/run"
    method: str = ""                      # label for results.json (default: encoder name + "-scratch" or "-pretrained")
    calibrate: str | None = "val"         # classification: fit temperature scaling on this split (empty: do not)

    def to_dict(self) -> dict[str, Any]:
        """Every section as plain data: enum options as their strings (config.yaml, run_info, resume keys)."""
        return plain(asdict(self))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return _build(tp, value, where + ".")
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        return _coerce(value, next(a for a in args if a is not type(None)), where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}", "write it as [a, b]")
        return [_coerce(v, args[0], where) for v in value] if args else value
    if origin is dict or tp is Any:
        if origin is dict and not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return value
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return choose(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):  # YAML 1.1 reads "1e-2" as a string
        try:
            return float(value)
        except ValueError:
            pass
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is str and isinstance(value, str):
        return value
    raise ConfigError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def _build(cls: Any, raw: dict[str, Any], where: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            raise ConfigError(f"unknown config key '{where}{key}'",
                              (f"did you mean '{where}{close[0]}'? " if close else "") + f"valid: {names}")
        kwargs[key] = _coerce(value, hints[key], f"{where}{key}")
    return cls(**kwargs)


def _set(d: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
        if not isinstance(d, dict):
            raise ConfigError(f"override '{dotted}': '{k}' is not a section")
    d[keys[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict[str, Any] | None = None) -> RunConfig:
    """Defaults <- ``base`` <- YAML file <- overrides (``train.max_steps=10``; values parsed as YAML)."""
    raw: dict[str, Any] = dict(base or {})
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file {p} not found", "see configs/ for examples")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: invalid YAML ({e})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: expected a mapping at the top level")
        raw = _merge(raw, loaded)
    for ov in overrides or []:
        if "=" not in ov:
            raise ConfigError(f"override '{ov}' has no '='", "write key.sub=value, e.g. train.max_steps=10")
        key, val = ov.split("=", 1)
        _set(raw, key.strip(), yaml.safe_load(val))
    cfg = _build(RunConfig, raw)
    if cfg.task.get("name") == PROMPTABLE and "prompt" in cfg.task:   # a free section: checked here, kept a str
        cfg.task["prompt"] = choose(Prompt, cfg.task["prompt"], "task.prompt").value
    if cfg.data.dataset == "dicomweb" or cfg.data.query:   # a PACS: its series retrieved once, read as a folder
        from mmfm.workflows.pacs import cached_folder

        if cfg.data.dataset != "dicomweb":
            raise ConfigError("data.query selects series on a PACS", "set data.dataset=dicomweb data.root=URL")
        cfg.data.root, cfg.data.dataset = str(cached_folder(cfg.data.root, cfg.data.query)), "folder"
    return cfg


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def dump_config(cfg: RunConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def resume_key(cfg: RunConfig) -> dict[str, Any]:
    """The part of a config that must match for a run to resume from a checkpoint (not the output folder,
    not display options)."""
    # federate, continual: sections of their own commands, which key their Trainer runs themselves
    key = {k: v for k, v in cfg.to_dict().items() if k not in ("out", "federate", "continual")}
    key["train"] = {k: v for k, v in key["train"].items() if k not in ("progress", "tensorboard")}
    return key
