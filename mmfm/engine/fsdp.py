"""Fully sharded data parallel (``train.strategy=fsdp``) through torch's FSDP2 (``fully_shard``), under torchrun.

Each process holds 1/world of every parameter, gradient and optimiser state; a block's parameters are gathered
just before it runs and freed after, so an encoder that does not fit one device trains on several. The unit of
sharding is every entry of every ``nn.ModuleList`` (transformer blocks, decoder layers, MONAI stages), then the
root for what is left. Gradients are averaged over processes as under DDP, so a step is the same step.

The trainer shards a copy of the model and, when training ends, gathers the weights back into the caller's own
(unsharded) module, so the workflows that evaluate and save it afterwards see an ordinary model.

Checkpoints stay the ordinary single-file kind (``mmfm.engine.checkpoint``): the full state is gathered to rank 0
to be written, and every rank reads the full file and keeps its shard when resuming, so a run may move between
DDP, FSDP and one process.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import fully_shard

_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def shard(model: nn.Module) -> nn.Module:
    """Shard ``model`` in place (blocks first, then the root) and return it."""
    for module in list(model.modules()):
        if isinstance(module, nn.ModuleList):
            for block in module:
                if any(p.requires_grad for p in block.parameters()):
                    fully_shard(block)
    fully_shard(model)
    return model


def gather_into(sharded: nn.Module, plain: nn.Module) -> None:
    """Copy the full weights of ``sharded`` into the unsharded module ``plain`` on every rank (collective)."""
    sd = get_model_state_dict(sharded, options=StateDictOptions(full_state_dict=True))
    plain.load_state_dict({k: v.detach().cpu() for k, v in sd.items()})


def _param_names(model: nn.Module, opt: torch.optim.Optimizer) -> list[str]:
    """The name of each optimiser parameter in the order ``Optimizer.state_dict`` numbers them."""
    names = {id(p): n for n, p in model.named_parameters()}
    return [names[id(p)] for group in opt.param_groups for p in group["params"]]


def full_state(model: nn.Module, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The unsharded model and optimiser state on rank 0 (empty on the others), the optimiser numbered as
    ``Optimizer.state_dict`` numbers it. Every rank must call this (it gathers)."""
    sd = get_model_state_dict(model, options=_FULL)
    osd = get_optimizer_state_dict(model, opt, options=_FULL)
    if not osd:
        return sd, {}
    index = {n: i for i, n in enumerate(_param_names(model, opt))}
    groups = [{**g, "params": [index[n] for n in g["params"]]} for g in osd["param_groups"]]
    return sd, {"state": {index[n]: s for n, s in osd["state"].items()}, "param_groups": groups}


def load_full_state(model: nn.Module, opt: torch.optim.Optimizer | None, sd: dict[str, torch.Tensor],
                    osd: dict[str, Any] | None) -> None:
    """Load an unsharded state (as :func:`full_state` returns it) into a sharded model and its optimiser."""
    set_model_state_dict(model, sd, options=StateDictOptions(full_state_dict=True))
    if opt is not None and osd is not None:
        names = _param_names(model, opt)
        groups = [{**g, "params": [names[i] for i in g["params"]]} for g in osd["param_groups"]]
        by_name = {"state": {names[int(i)]: s for i, s in osd["state"].items()}, "param_groups": groups}
        # not strict: a parameter no step has used yet has no optimiser state, as in a plain AdamW
        set_optimizer_state_dict(model, opt, by_name, options=StateDictOptions(full_state_dict=True, strict=False))
