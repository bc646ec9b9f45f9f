"""`mmfm pretrain`: pretrain an encoder with a proxy-task objective on unlabelled images.

The run directory holds the usual engine files plus ``encoder/`` (``encoder.safetensors`` and ``encoder.json``:
registry name, options, input channels, spatial dims, preprocessing contract), which `mmfm evaluate` loads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from mmfm.data.datasets import ArrayDataset
from mmfm.data.sources.mini_reader import load_mini_arrays, mini_root
from mmfm.encoders import Encoder, build_encoder
from mmfm.engine.distributed import is_main
from mmfm.engine.trainer import Trainer, seed_everything
from mmfm.errors import CheckpointError, ConfigError
from mmfm.evaluation.report import plot_losses
from mmfm.evaluation.results import ResultRecord, write_json_atomic, write_results
from mmfm.objectives import OBJECTIVES, build_objective
from mmfm.workflows.config import RunConfig, dump_config


def unlabelled_mini(cfg: RunConfig, split: str = "train") -> ArrayDataset:
    """Images of a mini set with ``patient`` (int) and ``position`` (relative slice position) for MICLe/PCL."""
    root = Path(cfg.data.root) if cfg.data.root else mini_root()
    d = load_mini_arrays(root, cfg.data.set, split)
    keep = np.ones(len(d["split"]), bool)
    for key, value in cfg.data.options.items():
        keep &= d[key] == value
    d = {k: v[keep] for k, v in d.items()}
    patients, patient_idx = np.unique(d["patient_id"], return_inverse=True)
    pos = np.zeros(len(patient_idx), np.float32)
    for p in range(len(patients)):
        sel = patient_idx == p
        z = d["slice_index"][sel].astype(np.float32)
        pos[sel] = (z - z.min()) / max(float(z.max() - z.min()), 1.0)
    return ArrayDataset(d["image"], extras={"patient": patient_idx.astype(np.int64), "position": pos})


def save_encoder(encoder: Encoder, spec: dict[str, Any], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()},
              str(folder / "encoder.safetensors"))
    write_json_atomic(folder / "encoder.json", {**spec, "contract": dict(encoder.contract)})


def load_encoder(source: str) -> tuple[Encoder, dict[str, Any]]:
    """An encoder from ``<pretrain run dir>`` (or its ``encoder/`` folder), ``random:<name>[:<2|3>D]`` or
    ``litemedsam`` (the packaged pretrained weights)."""
    if source.startswith("random:"):
        parts = source.split(":")
        dims = int(parts[2].rstrip("dD")) if len(parts) > 2 else 2
        spec = {"name": parts[1], "options": {}, "spatial_dims": dims, "in_channels": 1, "method": f"{parts[1]}-random"}
        return build_encoder(parts[1], spatial_dims=dims, in_channels=1), spec
    if source == "litemedsam":
        return build_encoder("litemedsam", in_channels=1), {"name": "litemedsam", "method": "litemedsam-pretrained",
                                                             "spatial_dims": 2, "in_channels": 1}
    folder = Path(source)
    folder = folder / "encoder" if (folder / "encoder").is_dir() else folder
    if not (folder / "encoder.json").exists():
        raise CheckpointError(f"{source}: no encoder.json", "pass a `mmfm pretrain` run directory, "
                                                              "random:<encoder> or litemedsam")
    spec = json.loads((folder / "encoder.json").read_text())
    enc = build_encoder(spec["name"], spatial_dims=spec["spatial_dims"], in_channels=spec["in_channels"],
                        **spec.get("options", {}))
    enc.contract = spec.get("contract", {})  # the preprocessing the weights expect travels with them
    sd = load_file(str(folder / "encoder.safetensors"))
    missing, unexpected = enc.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{folder}: encoder weights do not match '{spec['name']}' (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")
    return enc, spec


def method_name(encoder: dict[str, Any], objective: dict[str, Any]) -> str:
    """A label that tells pretrained encoders apart: ``vit_small-mae``, ``vit_small-mae[block]``,
    ``vit_small-mae+simclr``."""
    name = objective["name"]
    if name == "combined":
        name = "+".join(p["name"] for p in objective.get("parts", []))
    elif objective.get("masking", "random") != "random":
        name += f"[{objective['masking']}]"
    return f"{encoder['name']}-{name}"


def run_pretrain(cfg: RunConfig) -> list[ResultRecord]:
    if not cfg.objective.get("name"):
        raise ConfigError("no objective given", f"set objective.name to one of {OBJECTIVES.names()}")
    if cfg.data.dataset != "mini":
        raise ConfigError("pretraining reads the mini corpus in this version",
                          "point data.root at a mini-format folder (slices2d/patches2d/crops3d .npz)")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = unlabelled_mini(cfg)
    x = ds[0]["image"]
    spatial_dims, in_channels = x.ndim - 1, x.shape[0]
    enc_opts = {k: v for k, v in cfg.encoder.items() if k != "name"}
    seed_everything(cfg.train.seed)
    encoder = build_encoder(cfg.encoder["name"], spatial_dims=spatial_dims, in_channels=in_channels, **enc_opts)
    obj_opts = {k: v for k, v in cfg.objective.items() if k != "name"}
    obj_opts.setdefault("image_size", int(x.shape[-1]))
    objective = build_objective(cfg.objective["name"], encoder, **obj_opts)
    card = json.loads(((Path(cfg.data.root) if cfg.data.root else mini_root()) / "card.json").read_text())
    encoder.contract = {"presets": card.get("presets", {}), "input_size": list(x.shape[1:]),
                        "in_channels": in_channels, "data": f"mini/{cfg.data.set}"}
    if is_main():
        dump_config(cfg, out / "config.yaml")
    key = {k: v for k, v in cfg.to_dict().items() if k != "out"}
    key["train"] = {k: v for k, v in key["train"].items() if k not in ("progress", "tensorboard")}
    last = Trainer(objective, ds, cfg.train, cfg.optim, out, run_info={"config": key, "kind": "pretrain"}).fit()
    if not is_main():
        return []
    method = cfg.method or method_name(cfg.encoder, cfg.objective)
    spec = {"name": cfg.encoder["name"], "options": enc_opts, "spatial_dims": spatial_dims,
            "in_channels": in_channels, "objective": cfg.objective, "method": method,
            "pretrain_data": f"mini/{cfg.data.set}:train", "steps": cfg.train.max_steps}
    save_encoder(encoder, spec, out / "encoder")
    records = [ResultRecord("pretrain", f"mini/{cfg.data.set}", "train", method, k, float(v), cfg.train.seed)
               for k, v in last.items() if k == "loss" or k.endswith("_loss")]
    write_results(out / "results.json", records)
    plot_losses(out / "metrics.jsonl", out / "plots" / "loss.png", f"{method} pretraining loss")
    write_json_atomic(out / "status.json", {"status": "complete", "encoder": "encoder/"})
    torch.set_grad_enabled(True)
    return records
