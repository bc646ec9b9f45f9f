"""Parameter-efficient tuning through peft: LoRA, DoRA, LoHa and LoKr on the pretrained parts of any mmfm model.

``train.peft=lora`` (with ``train.peft_rank``, ``peft_alpha``, ``peft_dropout``, ``peft_targets``,
``peft_modules``) freezes the pretrained parts of the model and trains low-rank updates of their layers; what is
new for the task (heads, decoders, necks, projections outside the encoders) keeps training in full, as in MA-SAM and
Mammo-CLIP (review Sec. III-A and VI-A).

*The pretrained parts* (``peft_modules`` empty): every image or text encoder inside the model (both towers of an
image-text model, the encoder of a task), plus what a model lists in its ``adaptable`` attribute (LiteMedSAM: image
encoder and mask decoder). *The layers* (``peft_targets`` empty): every ``nn.Linear`` in those parts, or every
convolution where a part has no linear layer (a CNN); ``peft_targets`` names layers by the end of their dotted
name (``qkv``, ``attn.proj``, ``fc1``) or by a regular expression (``re:.*blocks\\.[0-9]+\\.attn\\.qkv``).
Linear layers that ``nn.MultiheadAttention`` owns are skipped: it reads their weights directly, so a LoRA layer
there would never be called (peft's own MHA support is experimental).

peft does the low-rank layers, their weights and their merging; mmfm only chooses where they go, keeps the task's
new parts trainable (peft's injection freezes everything else), and writes the adapter as its own safetensors file.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmfm.errors import ConfigError

PEFT_METHODS = ("lora", "dora", "loha", "lokr")
ADAPTER_NAME = "default"


@dataclass(frozen=True)
class PeftSpec:
    method: str
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PeftSpec:
        return cls(d["method"], int(d["rank"]), float(d["alpha"]), float(d["dropout"]), tuple(d["targets"]),
                   tuple(d["modules"]))

    def as_dict(self) -> dict[str, Any]:
        return {"method": self.method, "rank": self.rank, "alpha": self.alpha, "dropout": self.dropout,
                "targets": list(self.targets), "modules": list(self.modules)}


def check_spec(spec: PeftSpec) -> None:
    if spec.method not in PEFT_METHODS:
        raise ConfigError(f"train.peft='{spec.method}' is not a method mmfm knows",
                          f"use one of {', '.join(PEFT_METHODS)} (or leave it empty to train every parameter)")
    if spec.rank < 1:
        raise ConfigError(f"train.peft_rank={spec.rank} must be at least 1")
    if spec.alpha <= 0:
        raise ConfigError(f"train.peft_alpha={spec.alpha} must be positive")
    if not 0.0 <= spec.dropout < 1.0:
        raise ConfigError(f"train.peft_dropout={spec.dropout} must be in [0, 1)")


def pretrained_parts(model: nn.Module, names: tuple[str, ...] = ()) -> list[str]:
    """Dotted names of the modules to adapt: ``names`` if given (each must exist), else every outermost image or
    text encoder and every module a parent lists in its ``adaptable`` attribute."""
    from mmfm.encoders.base import Encoder
    from mmfm.encoders.text.base import TextEncoder

    modules = dict(model.named_modules())
    if names:
        unknown = [n for n in names if n not in modules]
        if unknown:
            tops = [n for n in modules if n and "." not in n]
            raise ConfigError(f"train.peft_modules names {unknown}, which this model does not have",
                              f"name modules by their dotted path; this model's top-level modules: {tops}")
        return list(names)
    chosen: list[str] = []
    for name, m in modules.items():
        if any(c == "" or name == c or name.startswith(c + ".") for c in chosen):
            continue  # inside a part already chosen
        if isinstance(m, (Encoder, TextEncoder)):
            chosen.append(name)
            continue
        chosen.extend(full for a in getattr(m, "adaptable", ())
                      if (full := f"{name}.{a}" if name else a) in modules)
    if not chosen:
        raise ConfigError("train.peft is set, but this model has no encoder to adapt",
                          "name the modules to adapt with train.peft_modules=[...]")
    return chosen


def _layers(part: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, layer) of every module that can take an adapter: plain layers, and layers that already have one
    (another expert of a mixture), seen as their base layer; never a part of an adapter."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    tuned = [n for n, m in part.named_modules() if isinstance(m, BaseTunerLayer)]
    out = []
    for n, m in part.named_modules():
        if any(n.startswith(t + ".") for t in tuned):
            continue
        out.append((n, m.get_base_layer() if isinstance(m, BaseTunerLayer) else m))
    return out


def _default_layers(part: nn.Module) -> list[str]:
    mha_owned = {id(m.out_proj) for m in part.modules() if isinstance(m, nn.MultiheadAttention)}
    layers = _layers(part)
    linear = [n for n, m in layers if isinstance(m, nn.Linear) and id(m) not in mha_owned]
    if linear:
        return linear
    return [n for n, m in layers if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))]


def _matches(name: str, target: str) -> bool:
    if target.startswith("re:"):
        return re.fullmatch(target[3:], name) is not None
    return name == target or name.endswith("." + target)


def target_layers(model: nn.Module, spec: PeftSpec) -> list[str]:
    """Full dotted names of the layers that get adapters."""
    modules = dict(model.named_modules())
    layers: list[str] = []
    for part in pretrained_parts(model, spec.modules):
        prefix = part + "." if part else ""
        sub = modules[part]
        names = _default_layers(sub) if not spec.targets else [
            n for n, _ in _layers(sub) if n and any(_matches(n, t) for t in spec.targets)]
        layers.extend(prefix + n for n in names if n)
    if not layers:
        raise ConfigError(f"train.peft_targets={list(spec.targets)} matches no layer in the adapted modules",
                          "name layers by the end of their dotted name (qkv, fc1, attn.proj) or 're:<regex>'; "
                          "leave it empty for every linear layer")
    return layers


def _config(spec: PeftSpec, layers: list[str]) -> Any:
    import peft

    pattern = "^(?:" + "|".join(re.escape(n) for n in layers) + ")$"
    if spec.method in ("lora", "dora"):
        return peft.LoraConfig(r=spec.rank, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                               target_modules=pattern, use_dora=spec.method == "dora")
    if spec.method == "loha":
        return peft.LoHaConfig(r=spec.rank, alpha=spec.alpha, module_dropout=spec.dropout, target_modules=pattern)
    return peft.LoKrConfig(r=spec.rank, alpha=spec.alpha, module_dropout=spec.dropout, target_modules=pattern)


def is_adapter_param(name: str, adapter: str = ADAPTER_NAME) -> bool:
    return f".{adapter}." in name + "." and any(k in name for k in ("lora_", "hada_", "lokr_"))


def add_adapters(model: nn.Module, spec: PeftSpec, adapter: str = ADAPTER_NAME) -> dict[str, Any]:
    """Put ``spec``'s adapters into ``model`` in place; freeze the adapted parts' own weights (and any other
    adapter), leave everything else as trainable as it was. Returns what was done: layers, trainable and total
    parameter counts, fraction. ``adapter``: its name (several coexist: the experts of a mixture)."""
    import peft

    check_spec(spec)
    parts = pretrained_parts(model, spec.modules)
    layers = target_layers(model, spec)
    before = {n: p.requires_grad for n, p in model.named_parameters()}
    try:
        peft.inject_adapter_in_model(_config(spec, layers), model, adapter_name=adapter)
    except (ValueError, TypeError) as e:  # a layer type the method has no adapter for
        raise ConfigError(f"peft cannot put {spec.method} adapters on these layers ({e})",
                          "choose other layers with train.peft_targets, or train.peft=lora") from None
    for name, p in model.named_parameters():
        in_part = any(part == "" or name.startswith(part + ".") for part in parts)
        if is_adapter_param(name, adapter):
            p.requires_grad_(True)
        elif in_part:
            p.requires_grad_(False)
        else:  # peft froze it; the task's own parts train as before
            p.requires_grad_(before.get(name, True))
    return {**spec.as_dict(), "parts": parts, "layers": len(layers), **trainable_fraction(model)}


def trainable_fraction(model: nn.Module) -> dict[str, Any]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": trainable, "total": total, "fraction": trainable / max(total, 1)}


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights only (peft's own keys, without the adapter name)."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(
        model, adapter_name=ADAPTER_NAME).items()}


def save_adapter(model: nn.Module, info: dict[str, Any], folder: Path) -> None:
    """``folder/adapter.safetensors`` (adapter weights only, a few MB for a ViT-B) + ``adapter.json`` (the spec,
    the adapted modules and the trainable fraction). Written to temporary names, then renamed."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "adapter.safetensors.tmp"
    save_file(adapter_state(model), str(tmp))
    tmp.replace(folder / "adapter.safetensors")
    tmpj = folder / "adapter.json.tmp"
    tmpj.write_text(json.dumps(info, indent=2))
    tmpj.replace(folder / "adapter.json")


def load_adapter(model: nn.Module, folder: Path) -> dict[str, Any]:
    """Put the adapter saved in ``folder`` into ``model`` (which has none yet); returns its info."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from mmfm.errors import CheckpointError

    info = json.loads((folder / "adapter.json").read_text())
    add_adapters(model, PeftSpec.from_dict(info))
    result = set_peft_model_state_dict(model, load_file(str(folder / "adapter.safetensors")),
                                       adapter_name=ADAPTER_NAME)
    missing = [k for k in result.missing_keys if is_adapter_param(k)]
    if missing or result.unexpected_keys:
        raise CheckpointError(f"{folder}: the adapter does not fit this model (missing {missing[:3]}, unexpected "
                              f"{list(result.unexpected_keys)[:3]})", "load it into the model it was trained on")
    return info


def merge_adapters(model: nn.Module) -> int:
    """Fold every adapter into its layer's weight and put the plain layer back (the exported model has the
    original architecture and no peft dependency). Returns the number of layers merged."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    merged = 0
    for name, m in list(model.named_modules()):
        if isinstance(m, BaseTunerLayer) and name:
            m.merge(safe_merge=True)
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, m.get_base_layer())
            merged += 1
    return merged


def use_adapter(model: nn.Module, adapter: str | None) -> None:
    """Make ``adapter`` the active one in every adapted layer (``None``: none, the base layers alone). Only the
    active adapter's weights are trainable afterwards (peft's rule)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for m in model.modules():
        if isinstance(m, BaseTunerLayer):
            m.enable_adapters(adapter is not None)
            if adapter is not None:
                m.set_adapter(adapter)


def has_adapters(model: nn.Module) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(m, BaseTunerLayer) for m in model.modules())
