"""Saving and loading the text tower and the aligned image-text model of a pretraining run.

A vision-language run directory holds ``encoder/`` (image tower, as for vision objectives), ``text_encoder/``
(``text_encoder.safetensors`` + ``text_encoder.json``) and ``dual/`` (``dual.safetensors`` + ``dual.json``: both
towers' specs, the projections and the temperature), which zero-shot and retrieval load. Weights are
safetensors: loading never runs pickled code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from mmfm.encoders import build_encoder
from mmfm.encoders.dual import DualEncoder
from mmfm.encoders.text import TEXT_ENCODERS, TextEncoder, build_text_encoder
from mmfm.errors import CheckpointError
from mmfm.evaluation.results import write_json_atomic


def _save(module: nn.Module, folder: Path, stem: str, spec: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(folder / f"{stem}.safetensors"))
    write_json_atomic(folder / f"{stem}.json", spec)


def _load_weights(module: nn.Module, path: Path, what: str) -> None:
    missing, unexpected = module.load_state_dict(load_file(str(path)), strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match the {what} (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})", "was the run made with another mmfm version?")


def save_text_encoder(encoder: TextEncoder, spec: dict[str, Any], folder: Path) -> None:
    _save(encoder, folder, "text_encoder", spec)


def load_text_encoder(source: str) -> tuple[TextEncoder, dict[str, Any]]:
    """A text tower from a registry name (``minilm``; ``bert_tiny`` is random), ``hf:<local folder>``, or a
    run directory (or its ``text_encoder/`` folder)."""
    if source in TEXT_ENCODERS:
        return build_text_encoder(source), {"name": source, "options": {}, "method": f"{source}"}
    if source.startswith("hf:"):
        return build_text_encoder("hf", path=source[3:]), {"name": "hf", "options": {"path": source[3:]},
                                                            "method": Path(source[3:]).name}
    folder = Path(source)
    folder = folder / "text_encoder" if (folder / "text_encoder").is_dir() else folder
    if not (folder / "text_encoder.json").exists():
        raise CheckpointError(f"{source}: no text_encoder.json",
                              f"pass a report/vision-language pretraining run, hf:<folder> or one of "
                              f"{TEXT_ENCODERS.names()}")
    spec = json.loads((folder / "text_encoder.json").read_text())
    enc = build_text_encoder(spec["name"], **{**spec.get("options", {}), "pretrained": False})
    _load_weights(enc, folder / "text_encoder.safetensors", f"text encoder '{spec['name']}'")
    return enc, spec


def save_dual(model: DualEncoder, image_spec: dict[str, Any], text_spec: dict[str, Any], method: str,
              folder: Path) -> None:
    _save(model, folder, "dual", {"image": image_spec, "text": text_spec, **model.spec(), "method": method,
                                  "contract": dict(model.image.contract)})


def load_dual(source: str) -> tuple[DualEncoder, dict[str, Any]]:
    """The aligned model of a vision-language run (its directory or ``dual/`` folder)."""
    folder = Path(source)
    folder = folder / "dual" if (folder / "dual").is_dir() else folder
    if not (folder / "dual.json").exists():
        raise CheckpointError(f"{source}: no dual.json (not a vision-language pretraining run)",
                              "pretrain with objective.name=clip|medclip|gloria first (mmfm pretrain)")
    spec = json.loads((folder / "dual.json").read_text())
    im, tx = spec["image"], spec["text"]
    image = build_encoder(im["name"], spatial_dims=im["spatial_dims"], in_channels=im["in_channels"],
                          **im.get("options", {}))
    image.contract = spec.get("contract", {})
    text = build_text_encoder(tx["name"], **{**tx.get("options", {}), "pretrained": False})  # weights: below
    model = DualEncoder(image, text, embed_dim=spec["embed_dim"], max_length=spec["max_length"])
    _load_weights(model, folder / "dual.safetensors", "image-text model")
    return model, spec
