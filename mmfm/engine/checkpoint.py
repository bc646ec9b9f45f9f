"""Checkpoints as safetensors (tensors) plus JSON (everything else): loading never runs pickled code.

A checkpoint is a folder ``<name>/`` holding ``model.safetensors``, ``optimizer.safetensors`` (optional) and
``state.json`` (step, epoch, scheduler, RNG, and whatever the caller adds, e.g. the preset and the config).
It is written to ``<name>.tmp``; the previous one is moved to ``<name>.old`` and the new one renamed into place.
A kill at any point leaves a complete checkpoint: between the two renames only ``<name>.old`` exists, and
:func:`recover_interrupted_save` (called before every resume) puts it back. The RNG states of the CPU and of
every CUDA device are saved, so augmentations drawn on a GPU resume exactly too.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from mmfm.errors import CheckpointError


def _optim_to_flat(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optim_from_flat(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, v in list(tensors.items()) + list(meta["scalars"].items()):
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def _dedupe(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """safetensors refuses tensors that share memory (an encoder shared by several objectives appears under
    several keys): keep the first key and record the others as aliases in state.json."""
    seen: dict[tuple[int, int, tuple[int, ...]], str] = {}
    out, aliases = {}, {}
    for k, v in state.items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape))
        if key in seen and v.numel():
            aliases[k] = seen[key]
            continue
        seen[key] = k
        out[k] = v.detach().cpu().contiguous()
    return out, aliases


def save_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    state: dict[str, Any] | None = None, model_state: dict[str, torch.Tensor] | None = None,
                    optim_state: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint folder atomically. RNG states are stored as uint8 tensors. ``model_state`` and
    ``optim_state`` replace ``model.state_dict()`` / ``optimizer.state_dict()`` when the caller gathered them
    (a sharded model, :func:`mmfm.engine.fsdp.full_state`)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    sd, aliases = _dedupe(model.state_dict() if model_state is None else model_state)
    save_file(sd, str(tmp / "model.safetensors"))
    meta = dict(state or {})
    meta["aliases"] = aliases
    if optimizer is not None:
        tensors, ometa = _optim_to_flat(optimizer.state_dict() if optim_state is None else optim_state)
        tensors["__rng_torch__"] = torch.get_rng_state()
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"__rng_cuda{i}__"] = s
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        meta["optimizer"] = ometa
    (tmp / "state.json").write_text(json.dumps(meta, indent=1, default=str))
    old = path.with_name(path.name + ".old")
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    return path


def recover_interrupted_save(path: str | Path) -> None:
    """If a kill fell between the two renames of :func:`save_checkpoint`, put the previous checkpoint back."""
    path = Path(path)
    old = path.with_name(path.name + ".old")
    if not path.exists() and (old / "state.json").exists():
        os.replace(old, path)


def read_state(path: str | Path) -> dict[str, Any]:
    p = Path(path) / "state.json"
    if not p.exists():
        raise CheckpointError(f"{path}: not a checkpoint (no state.json)",
                              "point at a folder written by mmfm (e.g. <run>/checkpoints/last)")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{p}: corrupt state.json ({e})", "the checkpoint is damaged; use an older one") from None


def read_checkpoint(path: str | Path, model: nn.Module, with_optimizer: bool = True
                    ) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any] | None, list[torch.Tensor]]:
    """(state, model state dict, optimizer state dict or None, [torch RNG, cuda RNGs...]) of a checkpoint, its
    weights checked against ``model`` (every key and shape must match)."""
    path = Path(path)
    state = read_state(path)
    try:
        sd = load_file(str(path / "model.safetensors"))
    except (SafetensorError, FileNotFoundError, OSError) as e:
        raise CheckpointError(f"{path}/model.safetensors: corrupt or missing ({e})",
                              "the checkpoint is damaged; use an older one") from None
    for alias, original in state.get("aliases", {}).items():
        if original in sd:
            sd[alias] = sd[original]
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    wrong = [f"{k}: {tuple(sd[k].shape)} vs {tuple(own[k].shape)}"
             for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{path}: checkpoint does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"shape mismatch {wrong[:3]})", "was it trained with another encoder or config? check state.json")
    if not with_optimizer:
        return state, sd, None, []
    try:
        tensors = load_file(str(path / "optimizer.safetensors"))
    except (SafetensorError, FileNotFoundError, OSError) as e:
        raise CheckpointError(f"{path}/optimizer.safetensors: corrupt or missing ({e})") from None
    rng = [tensors.pop("__rng_torch__")] if "__rng_torch__" in tensors else []
    rng += [tensors.pop(k) for k in sorted([k for k in tensors if k.startswith("__rng_cuda")],
                                           key=lambda k: int(k[10:-2]))]
    return state, sd, _optim_from_flat(tensors, state["optimizer"]), rng


def restore_rng(rng: list[torch.Tensor]) -> None:
    if rng:
        torch.set_rng_state(rng[0])
    if rng[1:] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng[1:torch.cuda.device_count() + 1])


def load_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    restore_rng_state: bool = True) -> dict[str, Any]:
    """Load weights (strictly: every key and shape must match) and, if given, the optimizer; return the state."""
    state, sd, osd, rng = read_checkpoint(path, model, optimizer is not None)
    model.load_state_dict(sd)
    if optimizer is not None:
        optimizer.load_state_dict(osd)
        if restore_rng_state:
            restore_rng(rng)
    return state
