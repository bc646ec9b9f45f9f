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
    seg = mmfm.segment(img.array[0], [30, 28, 60, 55], affine=img.affine, slice_index=40, modality="CT")
    seg.mask, seg.affine, seg.info                                 # uint8 (I, J, K) on the scan's grid, RAS mm
    mmfm.deid("study/", "study_deid/")                             # PS3.15 copies; returns the summary

Every `mmfm` command has its function here, and the command's handler calls it for its work
(``mmfm.cli.main.API_MAP``; ``tests/cli/test_cli_api_map.py`` checks the mapping). Arrays are (I, J[, K]) in index
order with a 4x4 voxel-index -> RAS mm affine (docs/conventions.md). Errors in the input raise
``mmfm.errors.MMFMError`` subclasses with a hint.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmfm.errors import ConfigError

__all__ = ["read_image", "create_encoder", "load_dataset", "config", "pretrain", "train", "evaluate", "federate",
           "federate_server", "federate_client", "continual", "load_trained", "load_assistant",
           # apply a model to images
           "Segmentation", "segment", "segmenter", "Explanation", "explain", "Registration", "register", "predict",
           # vision-language
           "zeroshot", "retrieve", "report_gen", "vqa", "chat", "summarize",
           # data
           "inspect", "prepare", "shard", "verify_shards", "datasets", "dataset_info", "deid", "label_reports",
           "check_labeller", "pull", "push",
           # models and apps
           "zoo_list", "zoo_info", "zoo_add", "zoo_remove", "zoo_export", "create_app", "serve", "report", "quickstart"]

KINDS = ("images", "classification", "segmentation", "pairs")


def read_image(path: str | Path, modality: str | None = None) -> Any:
    """One 2D or 3D image from any supported format (DICOM file or series folder, NIfTI, MetaImage, NRRD,
    PNG/JPEG/TIFF).

    Args:
        path: the file, or the folder of one DICOM series.
        modality: ``CT``, ``MR``, ``XR``, ... where the format does not record it.

    Returns:
        An ``mmfm.data.sample.Image``: ``array`` (C, I, J[, K]), ``affine`` (4x4, voxel index -> RAS mm),
        ``spacing`` (mm), ``orientation``, ``modality``, ``meta`` (docs/conventions.md).

    Raises:
        InputFileError: the file is missing, damaged or of an unsupported format.
    """
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
    """A torch ``Dataset`` of one split, as every command reads it (``mmfm.data.spec``).

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
    """A validated ``mmfm.workflows.config.RunConfig`` from a YAML file, ``key=value`` overrides and/or
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
    """Pretrain with ``cfg.objective`` (MAE, SimCLR, ..., CLIP, GLoRIA, MedCLIP, RSM) as `mmfm pretrain` does;
    re-running into the same folder resumes.

    Args:
        cfg: a YAML path, a dict or a ``RunConfig`` (``config``).
        overrides: ``key.sub=value`` strings, as on the command line.
        **sections: config sections that override ``cfg`` (``data={...}``, ``train={...}``, ``out=...``).

    Returns:
        The run folder: ``encoder/`` (and ``text_encoder/``, ``dual/`` as the objective has them; safetensors +
        JSON), ``metrics.jsonl``, ``results.json``, ``report.md``. ``create_encoder(pretrained=folder)`` loads it.

    Raises:
        ConfigError: an unknown or invalid config key (before anything is trained).
    """
    from mmfm.workflows.pretrain import run_pretrain

    return _run(run_pretrain, cfg, overrides, sections)


def train(cfg: Any, overrides: list[str] | None = None, **sections: Any) -> Path:
    """Train a supervised task and evaluate it on the eval splits, as `mmfm train` does; re-running resumes.

    Args:
        cfg: a YAML path, a dict or a ``RunConfig`` (``config``).
        overrides: ``key.sub=value`` strings, as on the command line.
        **sections: config sections that override ``cfg`` (``data={...}``, ``train={...}``, ``out=...``).

    Returns:
        The run folder (``config.yaml``, ``metrics.jsonl``, ``checkpoints/last``, ``results.json``,
        ``report.md``); ``load_trained(folder)`` applies it.

    Raises:
        ConfigError: an unknown or invalid config key (before anything is trained).
    """
    from mmfm.workflows.supervised import run_supervised

    return _run(run_supervised, cfg, overrides, sections)


def federate(cfg: Any, overrides: list[str] | None = None, **sections: Any) -> Path:
    """Federated training simulated in this process (`mmfm federate simulate`): every site, Flower's server loop
    (FedAvg / FedProx). Sites in separate processes: the CLI's ``federate server`` / ``federate client``.

    Args:
        cfg: a YAML path, a dict or a ``RunConfig`` (``config``).
        overrides: ``key.sub=value`` strings, as on the command line.
        **sections: config sections that override ``cfg`` (``data={...}``, ``train={...}``, ``out=...``).

    Returns:
        The run folder (the global model, per-site ``results.json``, ``federation.json``).

    Raises:
        ConfigError: an unknown or invalid config key (before anything is trained).
    """
    from mmfm.workflows.federate import run_simulation

    return _run(run_simulation, cfg, overrides, sections)


def federate_server(cfg: Any, overrides: list[str] | None = None, **sections: Any) -> Path:
    """The server of a federation whose sites run as separate processes (`mmfm federate server`): waits for
    ``federate.min_sites`` clients at ``federate.address`` (loopback by default), aggregates their rounds
    (FedAvg / FedProx) and evaluates the global model; sites that fail mid-round are dropped from that round.

    Args:
        cfg: a YAML path, a dict or a ``RunConfig`` (``config``) with a ``federate`` section.
        overrides: ``key.sub=value`` strings, as on the command line.
        **sections: config sections that override ``cfg``.

    Returns:
        The run folder (the global model, per-site ``results.json``, ``federation.json``, ``report.md``).

    Raises:
        ConfigError: an unknown or invalid config key (before anything is trained).
    """
    from mmfm.workflows.federate import run_server

    return _run(run_server, cfg, overrides, sections)


def federate_client(cfg: Any, site: str, overrides: list[str] | None = None, **sections: Any) -> Path:
    """One site of a federation (`mmfm federate client --site SITE`): trains on its own samples each round and
    sends only the weights to the server at ``federate.address``; returns when the federation ends.

    Args:
        cfg: the same config as the server's (a YAML path, a dict or a ``RunConfig``).
        site: the site this process is (one of the names the server lists when it starts).
        overrides: ``key.sub=value`` strings, as on the command line.
        **sections: config sections that override ``cfg``.

    Returns:
        The run folder named by the config (the server writes the results).

    Raises:
        ConfigError: an unknown or invalid config key, or a site the data does not have.
    """
    from mmfm.workflows.federate import run_client

    c = _as_config(cfg, overrides, sections)
    run_client(c, site)
    return Path(c.out)


def continual(cfg: Any, overrides: list[str] | None = None, **sections: Any) -> Path:
    """Tasks in sequence with forgetting measured (`mmfm continual`).

    Args:
        cfg: a YAML path, a dict or a ``RunConfig`` (``config``).
        overrides: ``key.sub=value`` strings, as on the command line.
        **sections: config sections that override ``cfg`` (``data={...}``, ``train={...}``, ``out=...``).

    Returns:
        The run folder (``continual.json``: per-task metrics after each stage, mean forgetting; ``results.json``).

    Raises:
        ConfigError: an unknown or invalid config key (before anything is trained).
    """
    from mmfm.workflows.continual import run_continual

    return _run(run_continual, cfg, overrides, sections)


def load_trained(run: str | Path) -> Any:
    """A trained supervised run (`mmfm train` out= folder: segmentation, classification or detection) as a
    ``mmfm.workflows.predict.TrainedModel``: ``.predict(image)`` with ``image`` a path, an
    ``mmfm.data.sample.Image`` or an array (``affine=`` 4x4) returns the mask on the image's own grid, the
    class probabilities (calibrated temperature applied) or the boxes (voxel and world mm); ``.model`` is the
    ``torch.nn.Module``. A run that is not supervised is a ConfigError."""
    from mmfm.workflows.predict import TrainedModel

    return TrainedModel(run)


def load_assistant(model: str = "smollm2", device: str | None = None, precision: str = "auto",
                   system: str | None = None) -> Any:
    """A chat assistant on a zoo language model (``mmfm.tasks.assistant.Assistant``), as `mmfm chat` uses:
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
             seeds: tuple[int, ...] = (0, 1, 2), *, finetune_steps: int = 100, max_per_split: int | None = None,
             record_val: bool = False) -> list[dict[str, Any]]:
    """Label-efficiency evaluation of encoders (`mmfm evaluate`): linear probe, k-NN (and fine-tuning) at
    several label fractions and seeds.

    Args:
        encoders: pretrain run folders, zoo names (``litemedsam``) or ``random:<architecture>``.
        out: the output folder (``results.json``, ``report.md``).
        data: the ``data`` config section (default: mini).
        protocols: ``linear``, ``knn``, ``finetune``.
        fractions: fractions of the training labels used.
        seeds: seeds per fraction (the label subsets and the heads).
        finetune_steps: optimiser steps per fine-tuning run.
        max_per_split: evaluate on a stratified subset of at most this many samples per split (slow encoders).
        record_val: also record every linear / k-NN score on the validation split, so that a best method can be
            chosen on validation.

    Returns:
        The summary: mean and sd over seeds per method, protocol and fraction.

    Raises:
        ConfigError: an unknown protocol, encoder or data key.
    """
    from mmfm.workflows.evaluate import evaluate_encoders, summarise

    d = config(data=data or {}).data
    records = evaluate_encoders([str(e) for e in encoders], list(protocols), d, list(fractions), list(seeds), out,
                                finetune_steps, max_per_split, record_val=record_val)
    return summarise(records)


def _run(workflow: Any, cfg: Any, overrides: list[str] | None, sections: dict[str, Any]) -> Path:
    """Validate the config, run one config-driven workflow (its records go to the run folder), return the folder."""
    c = _as_config(cfg, overrides, sections)
    workflow(c)
    return Path(c.out)


def report_gen(cfg: Any, overrides: list[str] | None = None, **sections: Any) -> Path:
    """Run `mmfm report-gen`: train an image encoder + text decoder and score the generated reports.

    Args:
        cfg: a YAML path (e.g. ``configs/report_generation_2d.yaml``), a dict or a ``RunConfig``.
        overrides: ``key.sub=value`` strings, as on the command line.
        **sections: config sections that override the file (``data={...}``, ``train={...}``, ``out=...``).

    Returns:
        The run folder (``results.json`` with BLEU, ROUGE-L, CIDEr and clinical efficacy, ``report.md``,
        ``generated.jsonl``, ``checkpoints/``).

    Raises:
        ConfigError: an unknown or invalid config key.
    """
    from mmfm.workflows.vision_language import run_report_generation

    return _run(run_report_generation, cfg, overrides, sections)


def vqa(cfg: Any, overrides: list[str] | None = None, **sections: Any) -> Path:
    """Run `mmfm vqa`: train and score visual question answering (closed and free-text answers).

    Args:
        cfg: a YAML path (e.g. ``configs/vqa_2d.yaml``), a dict or a ``RunConfig``.
        overrides: ``key.sub=value`` strings, as on the command line.
        **sections: config sections that override the file.

    Returns:
        The run folder (``results.json``, ``report.md``, ``checkpoints/``).

    Raises:
        ConfigError: an unknown or invalid config key.
    """
    from mmfm.workflows.vision_language import run_vqa

    return _run(run_vqa, cfg, overrides, sections)


# --- images in, arrays out -------------------------------------------------------------------------------------

def _image_file(image: Any, affine: Any, modality: str | None, folder: Path, name: str) -> tuple[str, str | None]:
    """The path a workflow reads: ``image`` itself when it is a path, else the array (or ``Image``) written as a
    NIfTI into the private temporary ``folder``; and the modality to read it with."""
    if isinstance(image, (str, Path)):
        if affine is not None:
            raise ConfigError("affine= is for an array input", "a file carries its own affine; leave affine out")
        return str(image), modality
    import numpy as np

    from mmfm.data.io.writers import write_image

    if hasattr(image, "array") and hasattr(image, "affine"):          # an mmfm Image: (C, I, J[, K])
        arr = np.asarray(image.array)
        modality = modality or getattr(image, "modality", None)
        affine = image.affine if affine is None else affine
        if arr.shape[0] > 1 and arr.ndim == 3:
            raise ConfigError(f"a 2D image of {arr.shape[0]} channels cannot be passed as an array",
                              "give its file path, or one channel")
        arr = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)   # NIfTI keeps channels last
    else:
        arr = np.asarray(image)
        if arr.ndim not in (2, 3):
            raise ConfigError(f"an image array of shape {arr.shape}", "give (I, J) for 2D or (I, J, K) for 3D, in "
                                                                      "index order (docs/conventions.md)")
    aff = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
    if aff.shape != (4, 4):
        raise ConfigError(f"affine of shape {aff.shape}", "give the 4x4 voxel-index -> RAS mm matrix")
    path = folder / f"{name}.nii.gz"
    write_image(path, arr.astype(np.float32), aff)
    return str(path), modality


def _read_array(path: Path) -> tuple[Any, Any]:
    """An output file (NIfTI or PNG) back as (array (I, J[, K]), 4x4 affine)."""
    from mmfm.data.io import read_image as _read

    img = _read(path)
    return img.array[0], img.affine


@dataclass
class Segmentation:
    """What ``segment`` returns.

    Attributes:
        mask: ``uint8`` array (I, J[, K]) on the input's own grid: 1 = the structure, or the label value n of the
            n-th structure with ``structures=``. ``None`` when ``out`` is a DICOM SEG / RTSTRUCT.
        affine: the mask's 4x4 voxel-index -> RAS mm matrix (the input's).
        info: the JSON record (prompt, model and its SHA-256, intensity preset, per-slice scores, foreground voxels,
            ``volume_ml``; ``structures`` with one entry per labelled structure).
        path: the mask file when ``out`` was given, else ``None`` (the temporary file is removed).
    """

    mask: Any
    affine: Any
    info: dict[str, Any]
    path: Path | None = None


def segment(image: Any, box: Sequence[float] | None = None, *, affine: Any = None,
            points: Sequence[Sequence[float]] = (), negative_points: Sequence[Sequence[float]] = (),
            slice_index: int | None = None, axis: int = 2, structures: Sequence[dict[str, Any]] | str | Path | None
            = None, slice_boxes: Sequence[dict[str, Any]] = (), clicks: Sequence[dict[str, Any]] = (),
            text: str | None = None, model: str = "litemedsam", modality: str | None = None,
            preset: str | None = None, min_score: float = 0.5, max_change: float = 0.15, precision: str = "fp32",
            engine: str = "auto", out: str | Path | None = None, overwrite: bool = False,
            progress: bool = False, return_arrays: bool = True, fuse_axes: bool = False,
            segmenter: Any = None) -> Segmentation:
    """Promptable segmentation of one image or volume (`mmfm segment`), with LiteMedSAM or a model you trained.

    Coordinates (docs/conventions.md): a 2D box is ``(x0, y0, x1, y1)`` and a point ``(x, y)`` in pixel
    (column i, row j) positions, 0-based, inclusive. A volume is prompted on slice ``slice_index`` along voxel
    axis ``axis`` (default 2, k), the box and points in that slice's voxel coordinates (for axis 2, x = i,
    y = j); the mask is propagated to the neighbouring slices until the structure ends.

    Args:
        image: a file or DICOM series folder; an ``Image`` (``mmfm.read_image``); or an array (I, J) / (I, J, K)
            in index order, with ``affine``.
        box: one box prompt.
        affine: for an array: its 4x4 voxel-index -> RAS mm matrix (default identity: 1 mm voxels).
        points: positive point prompts ``[(x, y), ...]``.
        negative_points: points outside the structure.
        slice_index: the prompted slice of a volume.
        axis: the voxel axis ``slice_index`` counts along.
        structures: several labelled structures at once (``[{"label", "box", "points", "negative_points",
            "slice", "boxes", "clicks"}]``, or the path of such a JSON file): one label map, value n for the
            n-th structure.
        slice_boxes: more prompted slices of the one structure (``[{"slice": K, "box": [x0, y0, x1, y1]}]``).
        clicks: corrections (``[{"slice": K, "point": [x, y], "positive": bool}]``).
        text: a text prompt (a text-prompted model you trained), instead of boxes.
        model: ``litemedsam``, a promptable run folder, or a trained segmentation run (then no prompt).
        modality: ``CT``, ``MR``, ... where the input does not record it (picks the intensity preset).
        preset: an intensity preset name instead of the automatic choice.
        min_score: propagation stops at a slice whose predicted IoU is below it.
        max_change: propagation stops where the area changes by more than this fraction between slices.
        precision: ``fp32`` (default), ``bf16`` or ``auto``.
        engine: ``torch``, ``onnx`` or ``auto`` (ONNX Runtime on a CPU in fp32).
        out: also keep the mask here (``.nii.gz``, ``.png`` for PNG/JPEG input, ``.dcm`` DICOM SEG or
            ``.rtstruct.dcm`` for DICOM input) with its JSON beside it.
        overwrite: replace an earlier mmfm output at ``out``.
        progress: show a progress bar.
        return_arrays: ``False`` leaves the mask in ``out`` only (``mask`` and ``affine`` are ``None``), as the
            command does: no second read of a large volume.
        fuse_axes: volumes: propagate along the other two axes too, from boxes drawn from the first result, and
            keep the voxels two of the three sweeps found (about three times the time).
        segmenter: a segmenter of this image file (``mmfm.segmenter(path)``) to prompt again: the image
            is read and preset once and its embeddings are kept, so each further prompt runs the prompt encoder and
            mask decoder only (plus slices no earlier sweep reached). Its model, modality, preset, precision and
            engine are the ones it was made with.

    Returns:
        A ``Segmentation``: the mask array on the input's grid, its affine, the JSON record and the file.

    Raises:
        ConfigError: no prompt, a prompt outside the image, an unknown model, engine or precision, a bad suffix.
        InputFileError: an unreadable input, or NaN/Inf voxels.
    """
    from mmfm.workflows.segment import load_prompts
    from mmfm.workflows.segment import segment as _segment

    if isinstance(structures, (str, Path)):
        structures = load_prompts(structures)
    if segmenter is not None and not isinstance(image, (str, Path)):
        raise ConfigError("a Segmenter is made from an image file", "give the file the Segmenter was made from")
    with tempfile.TemporaryDirectory(prefix="mmfm-api-") as tmp:
        path, modality = _image_file(image, affine, modality, Path(tmp), "image")
        if out is None:
            from mmfm.data.io import image_format

            target = Path(tmp) / ("mask.png" if image_format(Path(path)) == "raster" else "mask.nii.gz")
        else:
            target = Path(out)
        rec = _segment(path, target, box=box, points=points, negative_points=negative_points,
                       slice_index=slice_index, axis=axis, modality=modality, preset=preset, model=model,
                       min_score=min_score, max_change=max_change, overwrite=overwrite, progress=progress, text=text,
                       precision=precision, structures=structures, engine=engine, slice_boxes=slice_boxes,
                       clicks=clicks, fuse_axes=fuse_axes, segmenter=segmenter)
        if target.name.lower().endswith(".dcm") or (not return_arrays and out is not None):
            return Segmentation(None, None, rec, target)
        mask, mask_affine = _read_array(target)
        fg = rec.get("mask", {}).get("foreground_value", 1)
        mask = (mask == fg) if fg != 1 else mask
    return Segmentation(mask.round().astype("uint8"), mask_affine, rec, None if out is None else target)


def segmenter(image: str | Path, model: str = "litemedsam", *, modality: str | None = None,
              preset: str | None = None, precision: str = "fp32", engine: str = "auto") -> Any:
    """One image file made ready for many prompts: read, checked and preset once, the model built once, image
    embeddings kept (segment-anything's ``set_image`` once, ``predict`` per prompt). Pass it to
    :func:`segment` as ``segmenter=`` with the same image: each further prompt runs the prompt encoder and mask
    decoder only, plus the slices of a volume no earlier sweep reached (``.embedded`` counts the embeddings
    computed so far). This is what the web app holds for each upload.

    Args:
        image: an image file or DICOM series folder.
        model: ``litemedsam`` or a promptable run folder.
        modality: ``CT``, ``MR``, ... where the file does not record it.
        preset: an intensity preset name instead of the automatic choice.
        precision: ``fp32``, ``bf16`` or ``auto``.
        engine: ``torch``, ``onnx`` or ``auto``.

    Returns:
        A ``mmfm.workflows.segment.Segmenter``.

    Raises:
        ConfigError: an unknown model, engine or precision, or a trained (not promptable) segmentation run.
        InputFileError: an unreadable input, or NaN/Inf voxels.
    """
    from mmfm.workflows.segment import Segmenter

    return Segmenter(image, model, modality, preset, precision, engine)


@dataclass
class Explanation:
    """What ``explain`` returns.

    Attributes:
        maps: name -> saliency map on the input's grid (I, J[, K]), float in [0, 1] (8-bit PNG values 0..255
            for PNG/JPEG input); per-word maps ``wordNN_<token>`` for an image-text model.
        affine: the maps' 4x4 voxel-index -> RAS mm matrix.
        info: explain.json's record (prediction and explained class, or text tokens; pointing game with ``mask``).
        out: the output folder when ``out`` was given, else ``None``.
    """

    maps: dict[str, Any]
    affine: Any
    info: dict[str, Any]
    out: Path | None = None


def explain(model: str | Path, image: Any, *, affine: Any = None, text: str | None = None,
            methods: Sequence[str] = (), target: int | None = None, mask: Any = None, mask_label: int | None = None,
            slice_index: int | None = None, modality: str | None = None, preset: str | None = None,
            out: str | Path | None = None, overwrite: bool = False, format: str = "nifti",
            return_arrays: bool = True) -> Explanation:
    """Saliency maps of a trained classifier, or of an image-text model for a text (`mmfm explain`).

    Args:
        model: a classification run (`mmfm train`) or an image-text pretraining run (clip, medclip, gloria).
        image: a file or DICOM series folder, an ``Image``, or an array (I, J) / (I, J, K) with ``affine``.
        affine: for an array: its 4x4 voxel-index -> RAS mm matrix (default identity).
        text: what an image-text model is asked to locate (required for one).
        methods: saliency methods (default: every method the classifier supports, e.g. gradcam, integrated
            gradients).
        target: the class index to explain (default: the predicted class).
        mask: a reference mask on the image's grid (path, or array with the image's affine): the pointing game.
        mask_label: the mask value of the structure (default: any non-zero value).
        slice_index: the slice (voxel axis k) a 2D model reads of a volume (default: the middle one).
        modality: where the format does not record it.
        preset: an intensity preset instead of the model's.
        out: keep the maps (NIfTI, or PNG for PNG/JPEG input), ``overlay.png`` and ``explain.json`` in this folder.
        overwrite: replace an earlier `mmfm explain` output in ``out``.
        format: ``nifti`` or ``dcm`` (DICOM input: each map also as a DICOM Parametric Map; needs ``out``).
        return_arrays: ``False`` leaves the maps in ``out`` only (``maps`` is empty, ``affine`` ``None``), as the
            command does.

    Returns:
        An ``Explanation``: the maps as arrays on the input's grid, their affine and the record.

    Raises:
        ConfigError: an image-text model without ``text``, a target that is not a class, a bad format.
        InputFileError: an unreadable image or mask, a mask on another grid or empty on the slice.
    """
    from mmfm.workflows.explain import explain as _explain

    with tempfile.TemporaryDirectory(prefix="mmfm-api-") as tmp:
        path, modality = _image_file(image, affine, modality, Path(tmp), "image")
        mask_path = None if mask is None else _image_file(mask, None if isinstance(mask, (str, Path)) else
                                                          (affine if affine is not None else
                                                           getattr(image, "affine", None)), None, Path(tmp),
                                                          "mask")[0]
        folder = Path(tmp) / "explain" if out is None else Path(out)
        rec = _explain(str(model), path, folder, methods=methods, text=text, mask=mask_path, mask_label=mask_label,
                       target=target, slice_index=slice_index, modality=modality, preset=preset, overwrite=overwrite,
                       fmt=format)
        maps, map_affine = {}, None
        for name, file in rec["maps"].items() if return_arrays or out is None else ():
            maps[name], map_affine = _read_array(folder / file)
    return Explanation(maps, map_affine, rec, None if out is None else folder)


@dataclass
class Registration:
    """What ``register`` returns.

    Attributes:
        warped: MOVING resampled onto FIXED's grid (I, J[, K]).
        affine: FIXED's 4x4 voxel-index -> RAS mm matrix (the grid of ``warped``).
        info: registration.json's record (mode, similarity, loss, seconds, Jacobian folding fraction, label Dice).
        out: the output folder (``warped``, ``affine.json``, ``displacement.nii.gz``, ...).
    """

    warped: Any
    affine: Any
    info: dict[str, Any]
    out: Path


def register(fixed: Any, moving: Any, out: str | Path, *, mode: str = "deformable", similarity: str = "lncc",
             fixed_modality: str | None = None, moving_modality: str | None = None,
             moving_labels: str | Path | None = None, fixed_labels: str | Path | None = None,
             iterations: int = 150, levels: Sequence[float] = (8.0, 4.0, 2.0), smoothness: float = 1.0,
             overwrite: bool = False, progress: bool = False, return_arrays: bool = True) -> Registration:
    """Align MOVING to FIXED, affine then (``mode="deformable"``) a smooth displacement field (`mmfm register`).

    Convention: ``x_moving = A @ [x_fixed + u(x_fixed); 1]`` in world millimetres (RAS); ``A`` is written to
    ``affine.json`` (3x3 for 2D, 4x4 for 3D), ``u`` to ``displacement.nii.gz`` (mm).

    Args:
        fixed: the reference (its grid is the output grid): a file or folder, or an ``Image`` / array (an array
            without an affine is taken as 1 mm voxels at the origin: pass an ``Image`` to keep geometry).
        moving: the image to align, likewise.
        out: the output folder (new, empty, or an earlier `mmfm register` output with ``overwrite``).
        mode: ``affine`` or ``deformable``.
        similarity: ``lncc`` (same modality) or ``mi`` (mutual information, across modalities).
        fixed_modality: CT, MR, ... where FIXED's format does not record it (intensity preset).
        moving_modality: the same for MOVING.
        moving_labels: a label map file on MOVING's grid, carried to FIXED's grid (``warped_labels.nii.gz``).
        fixed_labels: a label map file on FIXED's grid: Dice before and after in ``info["dice"]``.
        iterations: optimiser steps per pyramid level.
        levels: the pyramid's resolutions in mm per voxel, coarse to fine.
        smoothness: weight of the bending energy.
        overwrite: replace an earlier output in ``out``.
        progress: show a progress bar.
        return_arrays: ``False`` leaves the warped image in ``out`` only (``warped`` and ``affine`` are ``None``),
            as the command does.

    Returns:
        A ``Registration``: the warped image as an array on FIXED's grid, its affine, the record and ``out``.
        Label files are paths only (the workflow reads label maps from files).

    Raises:
        ConfigError: a bad mode, similarity or output folder.
        InputFileError: an unreadable image or a label map on another grid.
    """
    from mmfm.workflows.register import register_files

    with tempfile.TemporaryDirectory(prefix="mmfm-api-") as tmp:
        f, fixed_modality = _image_file(fixed, None, fixed_modality, Path(tmp), "fixed")
        m, moving_modality = _image_file(moving, None, moving_modality, Path(tmp), "moving")
        rec = register_files(f, m, out, mode=mode, similarity=similarity, fixed_modality=fixed_modality,
                             moving_modality=moving_modality,
                             moving_labels=None if moving_labels is None else str(moving_labels),
                             fixed_labels=None if fixed_labels is None else str(fixed_labels), iterations=iterations,
                             steps=tuple(levels), smoothness=smoothness, overwrite=overwrite, progress=progress)
    if not return_arrays:
        return Registration(None, None, rec, Path(out))
    warped, warped_affine = _read_array(Path(out) / rec["warped"])
    return Registration(warped, warped_affine, rec, Path(out))


def predict(run: str | Path, inputs: str | Path | Sequence[str | Path], out: str | Path, *,
            classes: Sequence[str] | None = None, templates: Sequence[str] = (), modality: str | None = None,
            preset: str | None = None, format: str = "nifti", overwrite: bool = False,
            progress: bool = False) -> dict[str, Any]:
    """Apply a trained run to new images and write its outputs (`mmfm predict`).

    A segmentation run writes a label map per input on the input's own grid (NIfTI, or ``format="dcm"``: a
    DICOM SEG for DICOM input) with volumes in mL (mm2 for 2D); a classification run probabilities
    (``predictions.csv``); a detection run boxes in voxel and world (RAS mm) coordinates; an image-text run, given
    ``classes``, zero-shot probabilities (with ``format="dcm"`` a DICOM SR). For one image in memory, use
    ``load_trained(run).predict(array, affine=...)`` instead: this function reads files.

    Args:
        run: a `mmfm train` out= folder, or an image-text pretraining run (with ``classes``).
        inputs: image files, DICOM series folders or DICOMweb series URLs.
        out: the output folder (new, empty or an earlier `mmfm predict` output with ``overwrite``).
        classes: class names for zero-shot classification by an image-text run.
        templates: prompt templates with ``{name}`` for those classes.
        modality: where the input format does not record it.
        preset: an intensity preset instead of the run's.
        format: ``nifti`` or ``dcm``.
        overwrite: replace an earlier output.
        progress: show a progress bar.

    Returns:
        ``predict.json``'s record: ``task`` and one entry per input in ``cases`` (file names relative to ``out``).

    Raises:
        ConfigError: ``classes`` missing for an image-text run or given for another, a run that is not trained,
            an output format the inputs do not allow.
        InputFileError: an unreadable input.
    """
    from mmfm.workflows.pacs import local_images
    from mmfm.workflows.predict import predict_files
    from mmfm.workflows.zeroshot_predict import is_image_text_run, zeroshot_files

    zero_shot = is_image_text_run(run)
    if zero_shot != bool(classes):
        raise ConfigError(f"{run} is {'an' if zero_shot else 'not an'} image-text run: classes= is "
                          f"{'needed' if zero_shot else 'for zero-shot classification only'}",
                          "give classes= with an image-text run (clip, medclip, gloria) only")
    items = [str(inputs)] if isinstance(inputs, (str, Path)) else [str(i) for i in inputs]
    with local_images(items) as local:              # DICOMweb series URLs: temporary local copies
        if zero_shot:
            return zeroshot_files(run, local, out, list(classes or ()), templates, modality=modality, preset=preset,
                                  overwrite=overwrite, progress=progress, fmt=format)
        return predict_files(run, local, out, modality=modality, preset=preset, overwrite=overwrite,
                             progress=progress, fmt=format)


# --- vision-language ---------------------------------------------------------------------------------------------

def _eval_config(task: dict[str, Any], data: dict[str, Any], out: str | Path, overrides: list[str] | None) -> Any:
    """The config of an evaluation command: the dataset is what ``root`` holds when none is named."""
    from mmfm.data.spec import dataset_at

    named = "dataset" in data or any(o.split("=", 1)[0].strip() == "data.dataset" for o in overrides or [])
    cfg = config(overrides=overrides, task=task, out=str(out), data=data)
    if not named:
        cfg.data.dataset = dataset_at(cfg.data.root)
    return cfg


def zeroshot(model: str | Path, root: str | Path | None = None, *, dataset: str | None = None,
             set: str = "patches2d", label: str = "tissue", templates: Sequence[str] | None = None,
             splits: Sequence[str] = ("test",), out: str | Path = "runs/zeroshot",
             overrides: list[str] | None = None) -> list[Any]:
    """Zero-shot classification of a labelled dataset by an image-text model and prompt ensembles (`mmfm zeroshot`).

    Each class name of ``label`` is put into the prompt templates, the prompts' text embeddings are averaged per
    class, and each image goes to the most similar class; the labels are used only to score.

    Args:
        model: an image-text pretraining run (clip, medclip, gloria).
        root: the data (default: the built-in mini corpus); a folder, shards or a catalog layout.
        dataset: the catalog layout of ``root`` (default: what ``root`` holds).
        set: the mini set (patches2d, slices2d, crops3d).
        label: the label whose class names become prompts.
        templates: prompt templates with ``{name}`` (default: the model's).
        splits: the splits scored.
        out: the output folder (``results.json``, ``prompts.json``, ``report.md``).
        overrides: more ``key=value`` config overrides.

    Returns:
        The result records (``mmfm.evaluation.results.ResultRecord``: task, split, metric, value): accuracy,
        balanced accuracy, AUROC and their chance levels.

    Raises:
        ConfigError: a run that is not image-text, an unknown label or config key.
    """
    from mmfm.workflows.vision_language import run_zeroshot

    task: dict[str, Any] = {"name": "zeroshot", "model": str(model), **({"templates": list(templates)}
                                                                          if templates else {})}
    data = {"root": None if root is None else str(root), "set": set, "label": label, "eval_splits": list(splits),
            **({"dataset": dataset} if dataset else {})}
    return run_zeroshot(_eval_config(task, data, out, overrides))


def retrieve(model: str | Path | None = None, root: str | Path | None = None, *,
             text_encoder: str | Path | None = None, dataset: str | None = None, set: str = "patches2d",
             splits: Sequence[str] = ("test",), out: str | Path = "runs/retrieve",
             overrides: list[str] | None = None) -> list[Any]:
    """Image<->text retrieval (``model``), or report section matching (``text_encoder``) (`mmfm retrieve`).

    Args:
        model: an image-text pretraining run: rank the texts for each image and the images for each text.
        root: the data (default: mini); image-text pairs, or reports with ``text_encoder``.
        text_encoder: ``minilm``, ``hf:<folder>`` or a report pretraining run: rank the impressions of the
            reports for each report's findings.
        dataset: the catalog layout of ``root`` (default: what ``root`` holds).
        set: the mini set for image-text retrieval.
        splits: the splits scored.
        out: the output folder (``results.json``, ``report.md``).
        overrides: more ``key=value`` config overrides.

    Returns:
        The result records: ``i2t_`` / ``t2i_`` Recall@1/5/10, median rank and chance.

    Raises:
        ConfigError: neither or both of ``model`` and ``text_encoder``; an unknown config key.
    """
    from mmfm.workflows.vision_language import run_retrieve

    if (model is None) == (text_encoder is None):
        raise ConfigError("give either model= (image-text retrieval) or text_encoder= (report section matching)")
    task = ({"name": "retrieve", "model": str(model)} if model is not None else
            {"name": "retrieve", "text_encoder": str(text_encoder)})
    data = {"root": None if root is None else str(root), "set": "reports" if text_encoder else set,
            "eval_splits": list(splits), **({"dataset": dataset} if dataset else {})}
    return run_retrieve(_eval_config(task, data, out, overrides))


def chat(question: str, model: Any = "smollm2", *, image: str | Path | None = None, modality: str | None = None,
         max_new_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0, stop: Sequence[str] = (),
         seed: int = 0, system: str | None = None, precision: str = "auto") -> dict[str, Any]:
    """One answer of an offline language model (`mmfm chat QUESTION`); research output, not a diagnosis.

    Args:
        question: the question.
        model: a zoo language model name (``smollm2``), a `mmfm report-gen` / `mmfm vqa` run trained with
            ``task.decoder`` (then ``image`` may be given), or an assistant from ``load_assistant`` (reused).
        image: an image file to ask about (a run with an image bridge only).
        modality: the image's modality where its format does not record it.
        max_new_tokens: the most tokens in the answer.
        temperature: 0 = greedy (the same question gives the same answer); > 0 samples.
        top_p: nucleus sampling mass (with ``temperature``).
        stop: strings that end the answer.
        seed: seed of the sampling.
        system: replaces the model's default system prompt (a name given only).
        precision: ``auto`` (bf16 where native), ``fp32``, ``bf16`` or ``fp16`` (a name given only).

    Returns:
        The record `mmfm chat --json` prints: ``answer``, ``label``, token counts, speed, why it stopped,
        ``precision``.

    Raises:
        ConfigError: an empty question, an image for a model without an image bridge.
        UnknownNameError: an unknown language model.
    """
    from mmfm.tasks.assistant import GenerationOptions
    from mmfm.workflows.chat import ask, check_image, read_run_image

    if isinstance(model, (str, Path)):
        check_image(str(model), None if image is None else str(image))
        model = load_assistant(str(model), precision=precision, system=system)
    options = GenerationOptions(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                stop=tuple(stop), seed=seed)
    pixels = read_run_image(model, None if image is None else str(image), modality)
    return ask(model, question, options, pixels)


def summarize(root: str | Path | None = None, *, methods: Sequence[str] = ("most_frequent", "last_sentence",
              "nearest_neighbour", "prompted"), model: str = "smollm2", text_encoder: str = "minilm",
              max_new_tokens: int = 48, max_reports: int | None = None, dataset: str | None = None,
              splits: Sequence[str] = ("test",), out: str | Path = "runs/summarize",
              overrides: list[str] | None = None) -> list[Any]:
    """Findings -> impression on radiology reports (`mmfm summarize`): a language model prompted for the
    impression, against the baselines it has to beat; research output, not a diagnosis.

    Args:
        root: the reports (default: the IU X-ray reports in mini); with ``dataset``, your reports with FINDINGS and
            IMPRESSION sections: ``IU-Xray`` (report XMLs; ``data.options.require_images=false`` without images)
            or a text layout such as ``MIMIC-III`` (a CSV whose ``TEXT`` column holds the report).
        methods: any of ``most_frequent`` (the training split's most frequent impression), ``last_sentence`` (the
            findings' last sentence), ``nearest_neighbour`` (the impression of the training report with the
            nearest findings in ``text_encoder``'s space) and ``prompted`` (``model`` asked, no training).
        model: the language model prompted (a zoo language model, e.g. ``smollm2``).
        text_encoder: the nearest neighbour's text tower (``minilm``, ``hf:<folder>`` or a report run).
        max_new_tokens: the most tokens of a generated impression.
        max_reports: score the first N reports of each split only (default: all).
        dataset: the catalog layout of ``root`` (default: what ``root`` holds).
        splits: the splits scored (never ``train``: the baselines' bank).
        out: the output folder (``results.json``, ``report.md``, ``impressions_<split>_<method>.jsonl``).
        overrides: more ``key=value`` config overrides.

    Returns:
        The result records: BLEU-1..4, ROUGE-L, CIDEr-D and the labeller's clinical efficacy (CE_precision,
        CE_recall, CE_F1) per split and method.

    Raises:
        ConfigError: an unknown method, ``train`` among the splits, reports without both sections.
    """
    from mmfm.workflows.summarize import run_summarize

    task = {"name": "summarize", "methods": list(methods), "model": model, "text_encoder": text_encoder,
            "max_new_tokens": int(max_new_tokens), **({"max_reports": int(max_reports)} if max_reports else {})}
    data = {"root": None if root is None else str(root), "set": "reports", "eval_splits": list(splits),
            **({"dataset": dataset} if dataset else {})}
    return run_summarize(_eval_config(task, data, out, overrides))


# --- data --------------------------------------------------------------------------------------------------------

def inspect(path: str | Path, modality: str | None = None, show_names: bool = False) -> dict[str, Any]:
    """What mmfm reads from a file or folder, or the clear error that stops it (`mmfm data inspect`).

    Args:
        path: an image file, a DICOM series folder, a folder of images, a report (``.txt``/``.xml``), a MedMNIST
            ``.npz``, or a DICOMweb series URL (a temporary local copy is read).
        modality: for formats that do not record it.
        show_names: show a DICOM file's or folder's name (hidden by default: names often carry PHI).

    Returns:
        A JSON-able dict. Images: ``format``, ``modality``, ``shape`` (C, I, J[, K]), ``spatial_dims``,
        ``spacing`` (mm), ``orientation`` (e.g. ``LPS``), ``affine`` (voxel index -> RAS mm) and the geometry,
        ``min``/``max``/``mean``; label maps: ``labels`` (value -> voxels). Folders: what
        ``data.dataset=folder`` reads.

    Raises:
        InputFileError: missing, damaged or unsupported, with the reason.
    """
    from mmfm.workflows.inspect import inspect_path
    from mmfm.workflows.pacs import local_images

    with local_images([str(path)]) as (local,):
        return inspect_path(local, modality, show_names)


def prepare(name: str, root: str | Path | None = None, *, force: bool = False, out: str | Path | None = None,
            overrides: list[str] | None = None, progress: bool = False) -> Path:
    """Build a built-in corpus, or check your data and write its data card (`mmfm data prepare`).

    Args:
        name: ``mini`` (the built-in corpus from registry packages), ``pretrain-corpus`` (every real CT/MR volume
            they ship, unlabelled), ``folder`` or a catalog dataset name (then ``root`` is your data).
        root: mini / pretrain-corpus: where to build it (default ``$MMFM_HOME/data/<name>``); otherwise your data.
        force: rebuild mini / pretrain-corpus even if it exists.
        out: where your data's card goes (default ``runs/data/<name>``); the data folder is never written to.
        overrides: data options, e.g. ``["data.options.modality=CT"]``.
        progress: show a progress bar while mini / pretrain-corpus are built.

    Returns:
        The corpus folder (mini, pretrain-corpus; ``card.md`` inside), or the folder of ``card.json`` and
        ``card.md`` (counts per split, modality, labels, patients, spacing, skipped files and why).

    Raises:
        MMFMError: a catalog dataset without ``root`` (mmfm cannot download it: the hint says how to obtain it).
        UnknownNameError: an unknown dataset name.
    """
    from mmfm.data.sources.pretrain_corpus import NAME as CORPUS

    if name == "mini":
        from mmfm.data.sources.mini import build_mini

        return build_mini(None if root is None else Path(root), force=force, progress=progress)
    if name == CORPUS:
        from mmfm.data.sources.pretrain_corpus import build_pretrain_corpus

        return build_pretrain_corpus(None if root is None else Path(root), force=force, progress=progress)
    from mmfm.data.card import card_markdown, user_card
    from mmfm.data.catalog import get_entry
    from mmfm.errors import MMFMError
    from mmfm.evaluation.results import write_json_atomic

    entry = get_entry(name)
    if root is None:
        raise MMFMError(f"{entry.name} cannot be downloaded by mmfm ({entry.licence})",
                        f"obtain it yourself: {entry.obtain}; then prepare('{entry.name}', root=DIR)")
    card = user_card(config(overrides=overrides, data={"dataset": entry.name, "root": str(root)}).data)
    folder = Path(out or Path("runs") / "data" / entry.name)
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "card.json", card)
    (folder / "card.md").write_text(card_markdown(card))
    return folder


def shard(src: str | Path, out: str | Path, *, dataset: str = "folder", shard_size: int = 1000,
          overrides: list[str] | None = None, progress: bool = False) -> dict[str, Any]:
    """Preprocess every split of your data into WebDataset tar shards for streaming (`mmfm data shard`).

    Args:
        src: your data.
        out: a new or empty folder for the shards.
        dataset: the catalog layout of ``src``.
        shard_size: samples per shard.
        overrides: data options as every command reads them, e.g. ``["data.size=[64,64]"]``.
        progress: show a progress bar.

    Returns:
        ``shards.json``'s index: per split, each shard's file, samples, bytes and SHA-256. Train on them with
        ``data={"dataset": "shards", "root": out}``.

    Raises:
        ConfigError: ``out`` is not new or empty; a bad data option.
    """
    from mmfm.data.shards import write_shards

    data = config(overrides=overrides, data={"dataset": dataset, "root": str(src)}).data
    return write_shards(data, out, shard_size, progress=progress)


def verify_shards(shards: str | Path) -> list[str]:
    """Check every shard of a shard folder against its SHA-256 (`mmfm data verify`).

    Args:
        shards: a folder ``shard`` wrote.

    Returns:
        The shards that differ (empty when all match).

    Raises:
        InputFileError: no ``shards.json`` in the folder.
    """
    from mmfm.data.shards import verify_shards as _verify

    return _verify(shards)


def datasets(table: str | None = None) -> list[Any]:
    """The dataset catalog (`mmfm data list`): the review's Tables I-III and mmfm's own.

    Args:
        table: only ``I`` (text), ``II`` (image), ``III`` (image-text) or ``mmfm``.

    Returns:
        ``CatalogEntry`` dataclasses (name, table, kind, layout, modalities, size, licence, how to obtain).
    """
    from mmfm.data.catalog import load_catalog

    return [e for e in load_catalog().values() if table is None or e.table == table]


def dataset_info(name: str) -> Any:
    """One catalog dataset (`mmfm data info`): a ``CatalogEntry`` (case-insensitive name).

    Raises:
        UnknownNameError: not in the catalog.
    """
    from mmfm.data.catalog import get_entry

    return get_entry(name)


def deid(input: str | Path, out: str | Path, *, keep_private: Sequence[str] = (),
         allow_outside_root: bool = False, progress: bool = False) -> dict[str, Any]:
    """De-identified copies of DICOM files and report texts (`mmfm data deid`).

    DICOM PS3.15 Basic Application Level Confidentiality Profile with the Modified Dates option: identifying
    attributes removed, emptied or replaced, UIDs remapped consistently, dates shifted per patient, private tags
    dropped, burned-in annotation flagged; pixel data unchanged. Every output is audited (the input's identifying
    values searched in its bytes) and withheld if one is found. The input is never modified.

    Args:
        input: a DICOM file or a folder (``.txt``/``.md`` report texts in it are de-identified too).
        out: a new or empty folder, outside ``input``.
        keep_private: private attributes known to be safe, as ``"GGGG,EEEE"`` hex strings.
        allow_outside_root: follow file symlinks that point outside ``input``.
        progress: show a progress bar.

    Returns:
        deid.json's summary: ``counts`` (written, text, skipped, withheld, burned_in_annotation), per-file changes
        (never old values), ``skipped`` with reasons and the ``audit``.

    Raises:
        ConfigError: ``out`` not empty or inside ``input``.
        DataError: a stale partial output not made by mmfm.
    """
    from mmfm.workflows.deid import deidentify_folder

    return deidentify_folder(input, out, keep_private, progress=progress, allow_outside_root=allow_outside_root)


def label_reports(texts: str | Sequence[str]) -> list[dict[str, int]]:
    """Finding labels of report texts, rule-based and negation-aware (`mmfm data label`).

    Args:
        texts: one report text, or several.

    Returns:
        Per text: finding -> 1 (positive), 0 (negated) or -1 (uncertain); unmentioned findings are left out.
    """
    from mmfm.data.labeller import label_report

    return [label_report(t) for t in ([texts] if isinstance(texts, str) else texts)]


def check_labeller(out: str | Path = "runs/labeller", root: str | Path | None = None) -> list[Any]:
    """Precision and recall of ``label_reports`` against the MeSH terms of the IU X-ray reports in mini
    (`mmfm data label --check-mesh`).

    Args:
        out: the output folder (``results.json``, ``report.md``).
        root: the mini folder (default ``$MMFM_HOME/data/mini``).

    Returns:
        The result records (precision, recall, F1 per label and part).
    """
    from mmfm.workflows.vision_language import run_labeller_check

    return run_labeller_check(out, root)


def pull(url: str, out: str | Path, *, deid: bool = False, query: Sequence[str] = (),
         progress: bool = False) -> dict[str, Any]:
    """Retrieve a study or series from a PACS over DICOMweb (WADO-RS), optionally de-identified (`mmfm data pull`).

    Files land in ``out/<study>/<series>/<instance>.dcm``. Credentials come from ``MMFM_DICOMWEB_TOKEN``,
    ``MMFM_DICOMWEB_USER`` / ``MMFM_DICOMWEB_PASSWORD`` or netrc (docs/pacs.md).

    Args:
        url: ``dicomweb+http(s)://HOST[:PORT]/PATH[/studies/<StudyUID>[/series/<SeriesUID>]]``.
        out: a new or empty folder.
        deid: de-identify on the way (as ``deid``); identified copies only lie in a private temporary folder.
        query: QIDO-RS filters ``"KEY=VALUE"`` on DICOM keywords (``Modality=CT``).
        progress: show a progress bar.

    Returns:
        The summary: ``from``, ``series``, ``instances`` (and ``deid`` counts).

    Raises:
        ConfigError: a bad URL or query, ``out`` not empty.
        MMFMError: the service refused or could not be reached.
    """
    from mmfm.workflows.pacs import pull as _pull

    return _pull(url, out, deid=deid, query=query, progress=progress)


def push(folder: str | Path, url: str) -> dict[str, Any]:
    """Store every DICOM file under ``folder`` on a DICOMweb service (STOW-RS) (`mmfm data push`).

    Args:
        folder: a DICOM file or a folder of them (symlinks are not followed).
        url: the service ``dicomweb+http(s)://HOST[:PORT]/PATH`` (or a study in it).

    Returns:
        ``stored`` (study, series, instance UIDs and modality per instance), ``to`` and ``not_dicom`` (files left
        out).

    Raises:
        InputFileError: no DICOM file in ``folder``.
        MMFMError: the service refused or could not be reached.
    """
    from mmfm.workflows.pacs import push as _push

    return _push(folder, url)


# --- models and apps ---------------------------------------------------------------------------------------------

def zoo_list() -> list[dict[str, Any]]:
    """Every pretrained model of the zoo (`mmfm zoo list`): those whose weights ship inside a registry package,
    then your own (``zoo_add``). Nothing is downloaded.

    Returns:
        One manifest per model: ``name``, ``kind``, ``package``, ``version``, ``installed``, ``licence``,
        ``trained_for``, ... (your own: ``format``, ``usable``).
    """
    from mmfm.encoders import zoo

    return [zoo.manifest(n, checksum=False) for n in zoo.ZOO] + list(zoo.user_entries().values())


def zoo_info(name: str) -> dict[str, Any]:
    """One zoo model's manifest (`mmfm zoo info`): package, version, licence, weight files with SHA-256,
    preprocessing contract, what it was trained on and for.

    Raises:
        UnknownNameError: not in the zoo.
    """
    from mmfm.encoders import zoo

    user = zoo.user_entries()
    return user[name] if name in user else zoo.manifest(name)


def zoo_add(path: str | Path, name: str | None = None, architecture: str | None = None) -> dict[str, Any]:
    """Record your own checkpoint in ``$MMFM_HOME/zoo/user.json`` (`mmfm zoo add`); ``encoder.weights=NAME`` and
    ``create_encoder`` then load it.

    Args:
        path: an mmfm pretrain run or ``encoder/`` folder, a timm ViT, an open_clip folder, a Hugging Face folder
            (MONAI bundles are recorded with checksums only).
        name: the name to use it by (default: the file or folder name).
        architecture: the timm model name of a timm checkpoint (e.g. ``vit_small_patch16_224``).

    Returns:
        The recorded entry (format, files with SHA-256, usable).

    Raises:
        ConfigError: an unknown checkpoint format or a name already taken.
    """
    from mmfm.encoders import zoo

    return zoo.add_user(path, name, architecture)


def zoo_remove(name: str) -> None:
    """Forget one of your zoo entries (`mmfm zoo remove`); its files are left where they are."""
    from mmfm.encoders import zoo

    zoo.remove_user(name)


def zoo_export(model: str, out: str | Path, format: str = "onnx", int8: bool = False,
               overwrite: bool = False) -> dict[str, Any]:
    """Export LiteMedSAM or a promptable run as ONNX graphs for 3D Slicer / OHIF plug-ins (`mmfm zoo export`).

    Args:
        model: ``litemedsam`` or a promptable run folder.
        out: the output folder (new, empty, or an earlier export with ``overwrite``).
        format: ``onnx``.
        int8: also an image encoder with int8 matrix products (ONNX Runtime dynamic quantisation).
        overwrite: replace an earlier export.

    Returns:
        ``model.onnx.json``'s manifest: ``files``, inputs, outputs, preprocessing and SHA-256.

    Raises:
        ConfigError: a model that cannot be exported, an unknown format, ``out`` not ours.
    """
    from mmfm.workflows.export import export_model

    return export_model(model, out, format, int8=int8, overwrite=overwrite)


def create_app(models: Sequence[str] | None = None, *, max_upload_mb: float = 512, max_sessions: int = 16,
               hosts: Sequence[str] = (), dicomweb: str | None = None) -> Any:
    """The web app of `mmfm serve` as an ASGI application (FastAPI), without starting a server.

    Serve it with any ASGI server (``uvicorn.run(app, host="127.0.0.1")``) or test it with
    ``fastapi.testclient.TestClient(app)``. Uploads and results live in a private temporary folder removed when
    the app shuts down.

    Args:
        models: ``litemedsam`` and/or run folders (classification, promptable, image-text); default
            ``["litemedsam"]``.
        max_upload_mb: the largest upload accepted.
        max_sessions: open images kept at once (the oldest is dropped).
        hosts: Host names answered besides the loopback ones (the host the app is served on).
        dicomweb: a PACS (service, study or series URL) to list, open and store SEGs into.

    Returns:
        The ``fastapi.FastAPI`` app.

    Raises:
        ConfigError: a model folder that is not a run the app can serve.
    """
    from mmfm.app.server import create_app as _create

    return _create(list(models) if models else None, max_upload_mb, max_sessions, tuple(hosts), dicomweb=dicomweb)


def serve(models: Sequence[str] | None = None, host: str = "127.0.0.1", port: int = 8765, *,
          max_upload_mb: float = 512, dicomweb: str | None = None) -> None:
    """Start the web app of ``create_app`` on ``host:port`` and serve until Ctrl+C (`mmfm serve`).

    Args:
        models: ``litemedsam``, ``smollm2`` and/or run folders, as for ``create_app``; LiteMedSAM is added
            where none of them is a promptable model (segmentation is always on offer).
        host: the address to bind; ``127.0.0.1`` (default) answers this machine only. Any other address lets
            anyone who can reach the machine upload scans (no login; docs/app.md), and the app says so.
        port: the TCP port.
        max_upload_mb: the largest upload accepted.
        dicomweb: a PACS (service, study or series URL) to list, open and store SEGs into.

    Raises:
        ConfigError: a model folder that is not a run the app can serve.
    """
    from mmfm.app.server import serve as _serve
    from mmfm.workflows.run_kind import run_kind

    models = list(models or ["litemedsam"])
    if "litemedsam" not in models and not any(run_kind(m) == "promptable_segmentation" for m in models):
        models = ["litemedsam", *models]
    _serve(models, host, port, max_upload_mb, dicomweb=dicomweb)


def report(run_dir: str | Path) -> Path:
    """Rebuild a run's self-contained ``report.html`` (opens offline) (`mmfm report`); returns its path.

    Raises:
        MMFMError: ``run_dir`` is not a folder.
    """
    from mmfm.errors import MMFMError
    from mmfm.evaluation.html_report import write_html_report

    if not Path(run_dir).is_dir():
        raise MMFMError(f"{run_dir} is not a folder", "give the out= folder of an mmfm run")
    return write_html_report(run_dir)


def quickstart(out: str | Path = "runs/quickstart", overrides: list[str] | None = None,
               max_per_split: int | None = None) -> list[Any]:
    """mmfm's main job on the built-in corpus (`mmfm quickstart`): prepare mini, train a classifier and a
    segmenter, pretrain, compare three starting points by linear probe at 1 %, 10 % and 100 % of the labels, and
    write ``results.json``, ``report.md`` and ``report.html`` under ``out``. Minutes to hours on a CPU.

    Args:
        out: the run folder.
        overrides: config overrides for both runs, e.g. ``["train.max_steps=20"]``.
        max_per_split: compare on a stratified subset of at most this many patches per split.

    Returns:
        The result records.
    """
    from mmfm.workflows.quickstart import quickstart as _quickstart

    return _quickstart(out, overrides, max_per_split)
