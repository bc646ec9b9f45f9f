"""The public Python API: what a notebook needs, as plain objects and torch modules.

The CLI is a thin shell over these same functions::

    import mmfm
    img = mmfm.read_image("scan.nii.gz", modality="CT")           # mmfm.data.sample.Image (array, affine, ...)
    enc = mmfm.create_encoder("vit_mini", spatial_dims=2, in_channels=1)   # torch module: x -> {"tokens", "pooled"}
    ds = mmfm.load_dataset("my_images/", size=(64, 64))            # torch Dataset of {"image", ...}
    run = mmfm.pretrain("configs/pretrain/simclr_2d.yaml", data={"dataset": "folder", "root": "my_images/"})
    enc = mmfm.create_encoder(pretrained=run)                      # the pretrained encoder, ready to fine-tune
    seg = mmfm.load_trained("runs/seg")                            # a `mmfm train` run, ready to apply
    out = seg.predict("new_scan.nrrd")                             # {"mask": on the scan's grid, "affine", ...}
    bot = mmfm.load_assistant("smollm2")                           # an offline chat model (research output)
    bot.chat("What does a CT scan measure?", max_new_tokens=64)    # greedy; temperature=, top_p=, stop=
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmfm.errors import ConfigError

__all__ = ["read_image", "create_encoder", "load_dataset", "config", "pretrain", "train", "evaluate", "federate",
           "continual", "load_trained", "load_assistant"]

KINDS = ("images", "classification", "segmentation", "pairs")


def read_image(path: str | Path, modality: str | None = None) -> Any:
    """One 2D or 3D image from any supported format (:func:`mmfm.data.io.read_image`)."""
    from mmfm.data.io import read_image as _read

    return _read(path, modality=modality)


def create_encoder(name: str | None = None, pretrained: bool | str | Path = False, spatial_dims: int = 2,
                   in_channels: int = 1, options: dict[str, Any] | None = None) -> Any:
    """An image encoder (``torch.nn.Module``; ``encoder(x)`` -> ``{"tokens": (B, N, D), "pooled": (B, D)}``).

    ``pretrained``: ``False`` (random init), ``True`` (the weights a registry package ships: ``litemedsam``,
    ``merlin``), or a `mmfm pretrain` run folder / ``encoder/`` folder (then ``name`` may be omitted).
    """
    from mmfm.encoders import build_encoder
    from mmfm.workflows.pretrain import PACKAGED, load_encoder

    if isinstance(pretrained, (str, Path)) and not isinstance(pretrained, bool):
        enc, spec = load_encoder(str(pretrained))
        if name and name != spec["name"]:
            raise ConfigError(f"{pretrained} holds a {spec['name']}, not a {name}", "omit name, or give another run")
        return enc
    if not name:
        raise ConfigError("create_encoder needs a name", "e.g. create_encoder('vit_mini'); `mmfm` lists them in "
                                                        "the README")
    if pretrained:
        if name not in PACKAGED:
            raise ConfigError(f"no packaged pretrained weights for '{name}'",
                              f"packaged: {sorted(PACKAGED)}; or pass pretrained=<a mmfm pretrain run folder>")
        return load_encoder(name)[0]
    from mmfm.encoders import ENCODERS

    opts = dict(options or {})
    if ENCODERS.accepts(name, "pretrained"):
        opts.setdefault("pretrained", False)
    return build_encoder(name, spatial_dims=spatial_dims, in_channels=in_channels, **opts)


def load_dataset(root: str | Path | None = None, dataset: str = "folder", split: str = "train",
                 kind: str = "images", size: tuple[int, ...] = (64, 64), label: str = "label", channels: int = 0,
                 spacing: tuple[float, ...] = (), options: dict[str, Any] | None = None) -> Any:
    """A torch ``Dataset`` of one split, as every command reads it (:mod:`mmfm.data.spec`).

    ``kind``: ``images`` (unlabelled, with ``patient``/``position``), ``classification`` (``label``),
    ``segmentation`` (``mask``) or ``pairs`` (``text``). Datasets read from files decode lazily.
    """
    from mmfm.data import spec

    if kind not in KINDS:
        raise ConfigError(f"kind='{kind}'", f"use one of {KINDS}")
    data = config(overrides=None, data={"dataset": dataset, "root": None if root is None else str(root),
                                        "size": list(size), "label": label, "channels": channels,
                                        "spacing": list(spacing), "options": dict(options or {})}).data
    if kind == "images":
        return spec.unlabelled(data, split)
    if kind == "pairs":
        return spec.pairs(data, split)
    return spec.labelled(data, split, kind)[0]


def config(path: str | Path | None = None, overrides: list[str] | None = None, **sections: Any) -> Any:
    """A validated :class:`~mmfm.workflows.config.RunConfig` from a YAML file, ``key=value`` overrides and/or
    sections given as keyword arguments (``data={...}``, ``train={...}``, ``out=...``); unknown keys are errors."""
    from mmfm.workflows.config import load_config

    return load_config(path, overrides, base=sections or None)


def _as_config(cfg: Any, overrides: list[str] | None, sections: dict[str, Any]) -> Any:
    from mmfm.workflows.config import RunConfig, _merge, load_config

    if isinstance(cfg, RunConfig):
        if overrides or sections:
            return load_config(None, overrides, base=_merge(cfg.to_dict(), sections))
        return cfg
    if isinstance(cfg, dict):
        return load_config(None, overrides, base=_merge(cfg, sections))
    base = load_config(cfg).to_dict() if cfg is not None else {}    # a YAML path; keyword sections override it
    return load_config(None, overrides, base=_merge(base, sections))


def pretrain(cfg: Any, overrides: list[str] | None = None, **sections: Any) -> Path:
    """Run `mmfm pretrain`; returns the run folder (``encoder/``, ``results.json``, ...)."""
    from mmfm.workflows.pretrain import run_pretrain

    c = _as_config(cfg, overrides, sections)
    run_pretrain(c)
    return Path(c.out)


def train(cfg: Any, overrides: list[str] | None = None, **sections: Any) -> Path:
    """Run `mmfm train` (a supervised task, evaluated on the eval splits); returns the run folder."""
    from mmfm.workflows.supervised import run_supervised

    c = _as_config(cfg, overrides, sections)
    run_supervised(c)
    return Path(c.out)


def federate(cfg: Any, overrides: list[str] | None = None, **sections: Any) -> Path:
    """Run `mmfm federate simulate` (every site in this process, Flower's server loop); returns the run folder
    (global model, per-site ``results.json``, ``federation.json``). Separate processes: the CLI's server/client."""
    from mmfm.workflows.federate import run_simulation

    c = _as_config(cfg, overrides, sections)
    run_simulation(c)
    return Path(c.out)


def continual(cfg: Any, overrides: list[str] | None = None, **sections: Any) -> Path:
    """Run `mmfm continual` (tasks in sequence, forgetting measured); returns the run folder (``continual.json``)."""
    from mmfm.workflows.continual import run_continual

    c = _as_config(cfg, overrides, sections)
    run_continual(c)
    return Path(c.out)


def load_trained(run: str | Path) -> Any:
    """A trained supervised run (`mmfm train` out= folder: segmentation, classification or detection) as a
    :class:`mmfm.workflows.predict.TrainedModel`: ``.predict(image)`` with ``image`` a path, an
    :class:`~mmfm.data.sample.Image` or an array (``affine=`` 4x4) returns the mask on the image's own grid, the
    class probabilities (calibrated temperature applied) or the boxes (voxel and world mm); ``.model`` is the
    ``torch.nn.Module``. A run that is not supervised is a ConfigError."""
    from mmfm.workflows.predict import TrainedModel

    return TrainedModel(run)


def load_assistant(model: str = "smollm2", device: str | None = None, precision: str = "auto",
                   system: str | None = None) -> Any:
    """A chat assistant on a zoo language model (:class:`mmfm.tasks.assistant.Assistant`), as `mmfm chat` uses:
    ``.chat(messages, max_new_tokens=, temperature=, top_p=, stop=, seed=)`` returns the answer text, ``.reply``
    also its token counts, speed and why it stopped. ``messages``: a string or ``[{"role", "content"}, ...]``.
    Greedy by default; bf16 autocast where native (``precision="auto"``). Answers are research output, not a
    diagnosis. ``model`` may also be a `mmfm report-gen` / `mmfm vqa` run trained with ``task.decoder``: its
    bridge and LoRA weights; then ``.reply(messages, image=mmfm.workflows.chat.read_run_image(bot, path))``
    asks about an image."""
    from mmfm.workflows.chat import load_assistant as _load

    return _load(model, device=device, precision=precision, system=system)


def evaluate(encoders: list[str | Path], out: str | Path, data: dict[str, Any] | None = None,
             protocols: tuple[str, ...] = ("linear", "knn"), fractions: tuple[float, ...] = (0.01, 0.1, 1.0),
             seeds: tuple[int, ...] = (0, 1, 2)) -> list[dict[str, Any]]:
    """Run `mmfm evaluate`; returns the summary (mean and sd over seeds per method, protocol and fraction)."""
    from mmfm.workflows.evaluate import evaluate_encoders, summarise

    d = config(data=data or {}).data
    records = evaluate_encoders([str(e) for e in encoders], list(protocols), d, list(fractions), list(seeds), out)
    return summarise(records)
