"""Training and loading vision-language bridges into a language model: `mmfm report-gen` / `mmfm vqa` with
``task.decoder=smollm2`` (the small decoder, ``task.decoder=small``, stays the default for comparison).

task options (with ``decoder`` set to a language model):

* ``decoder``: ``smollm2`` (or ``llama_tiny``, the random-weight stand-in the tests use);
* ``bridge``: ``llava`` (LLaVA-1.5's MLP projector: every image token) or ``qformer`` (MedBLIP's learned queries:
  ``num_queries`` tokens whatever the image; ``qformer_depth``, ``qformer_width``);
* ``stage``: 1 (LLaVA-Med's feature alignment: the bridge learns, the language model is frozen) or 2 (instruction
  tuning: the bridge and LoRA adapters on the language model; ``train.peft`` defaults to ``lora`` on the module
  ``lm`` and its attention and MLP projections);
* ``bridge_from``: a finished run whose bridge and image encoder this one starts from (stage 2 after stage 1);
* ``encoder_from``, ``freeze_encoder`` (default: frozen when pretrained, i.e. with ``encoder_from``; trained when
  built from scratch), ``prompt`` (report generation), ``max_len`` (answer tokens).

The run directory is the Trainer's (``checkpoints/last``: safetensors + JSON, resumable; ``adapter/`` after
stage 2) plus ``assistant.json``; the checkpoint holds everything but the language model's own weights, which
come from the zoo and are checked against the SHA-256 the run recorded. :func:`load_bridge_run` rebuilds it for
`mmfm chat --model RUN`.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmfm.errors import CheckpointError, ConfigError, UnknownNameError, unknown_option
from mmfm.tasks.llava_bridge import LlavaBridge
from mmfm.tasks.lm_bridge import CAPTION_PROMPT, LMBridge
from mmfm.tasks.qformer_bridge import QFormerBridge

log = logging.getLogger(__name__)

SMALL = "small"
BRIDGES: dict[str, type[LMBridge]] = {"llava": LlavaBridge, "qformer": QFormerBridge}
# task.<key> -> the bridge's keyword, per bridge
BRIDGE_OPTIONS = {"llava": {}, "qformer": {"num_queries": "num_queries", "qformer_depth": "depth",
                                          "qformer_width": "width"}}
TASK_KEYS = ("name", "decoder", "bridge", "stage", "bridge_from", "encoder_from", "freeze_encoder", "prompt",
             "max_len", "num_queries", "qformer_depth", "qformer_width")
SMALL_DECODER_KEYS = ("dim", "depth", "heads", "question_length", "freeze_text")
LM_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
INFO_FILE = "assistant.json"


def uses_language_model(task: dict[str, Any]) -> bool:
    """Whether a report-gen / vqa task decodes with a language model (``task.decoder`` other than ``small``)."""
    return str(task.get("decoder", SMALL)) != SMALL


def prepare(cfg: Any) -> None:
    """Check the task options and put stage 2's adapter defaults into ``cfg.train`` (before the config is written
    and keyed for resuming, so the run directory says what ran)."""
    from mmfm.encoders.text.llm import LANGUAGE_MODELS

    owner = f"{cfg.task.get('name', 'this command')} with task.decoder"
    unused = [k for k in SMALL_DECODER_KEYS if k in cfg.task]
    if unused:   # the small decoder's architecture, from the command's default config: said, then dropped
        log.info(f"task.decoder={cfg.task['decoder']}: the small decoder's options {', '.join(unused)} are "
                 "not used")
        cfg.task = {k: v for k, v in cfg.task.items() if k not in unused}
    for key in cfg.task:
        if key not in TASK_KEYS:
            raise unknown_option(f"task.{key}", key, TASK_KEYS, owner)
    if cfg.task["decoder"] not in LANGUAGE_MODELS:
        raise UnknownNameError("language model", str(cfg.task["decoder"]), (*LANGUAGE_MODELS, SMALL))
    kind = cfg.task.get("bridge", "llava")
    if kind not in BRIDGES:
        raise UnknownNameError("bridge", str(kind), BRIDGES)
    other = [k for o in BRIDGE_OPTIONS.values() for k in o if k in cfg.task and k not in BRIDGE_OPTIONS[kind]]
    if other:
        raise ConfigError(f"task.{other[0]} is an option of another bridge than task.bridge={kind}",
                          f"drop it, or set task.bridge={next(b for b, o in BRIDGE_OPTIONS.items() if other[0] in o)}")
    stage = cfg.task.get("stage", 1)
    if stage not in (1, 2):
        raise ConfigError(f"task.stage={stage!r}", "use 1 (the bridge alone, language model frozen) or 2 (the "
                                                   "bridge and LoRA on the language model)")
    if stage == 1 and cfg.train.peft:
        raise ConfigError(f"train.peft={cfg.train.peft} with task.stage=1: stage 1 trains the bridge alone",
                          "set task.stage=2 for adapters on the language model, or drop train.peft")
    if stage == 2:
        cfg.train.peft = cfg.train.peft or "lora"
        cfg.train.peft_modules = cfg.train.peft_modules or ["lm"]
        cfg.train.peft_targets = cfg.train.peft_targets or list(LM_TARGETS)


def build_bridge(cfg: Any, encoder: torch.nn.Module) -> LMBridge:
    """The bridge of ``cfg.task`` on ``encoder`` and a private copy of the task's language model (the loaded one is
    shared by the process). ``bridge_from``: start from that run's bridge and encoder weights."""
    from mmfm.encoders.text.llm import load_language_model

    t = cfg.task
    lm = load_language_model(t["decoder"])
    model = copy.deepcopy(lm.model)   # training moves it to its device and adapters go into it
    kind = t.get("bridge", "llava")
    bridge = BRIDGES[kind](encoder, model, lm.tokenizer, freeze_encoder=freezes_encoder(t),
                           prompt=str(t.get("prompt", CAPTION_PROMPT)), max_len=int(t.get("max_len", 64)),
                           **bridge_options(t))
    if t.get("bridge_from"):
        _load_stage(bridge, Path(t["bridge_from"]), t["decoder"], lm.sha256)
    return bridge


def freezes_encoder(task: dict[str, Any]) -> bool:
    """``task.freeze_encoder``; by default a pretrained encoder (``encoder_from``) is frozen, as LLaVA freezes
    CLIP's, and one built from scratch trains (frozen, its random features are all the bridge would see)."""
    return bool(task.get("freeze_encoder", bool(task.get("encoder_from"))))


def bridge_options(task: dict[str, Any]) -> dict[str, int]:
    """The bridge's own keywords from ``task`` (the Q-Former's queries, depth, width)."""
    names = BRIDGE_OPTIONS[task.get("bridge", "llava")]
    return {kw: int(task[key]) for key, kw in names.items() if key in task}


def run_info(cfg: Any, bridge: LMBridge, encoder_spec: dict[str, Any], task: str) -> dict[str, Any]:
    """What the run records to be loaded again (``run_info["assistant"]`` and ``assistant.json``)."""
    from mmfm.data import spec as dataspec
    from mmfm.encoders.text.llm import load_language_model

    t = cfg.task
    lm = load_language_model(t["decoder"])
    return {"task": task, "decoder": lm.name, "lm_sha256": lm.sha256, "bridge": t.get("bridge", "llava"),
            "bridge_options": bridge_options(t), "stage": int(t.get("stage", 1)), "prompt": bridge.prompt,
            "max_len": bridge.max_len,
            "freeze_encoder": freezes_encoder(t), "encoder": encoder_spec,
            "data": dataspec.name(cfg.data)}


def encoder_spec(cfg: Any, x: torch.Tensor) -> dict[str, Any]:
    """The image encoder's architecture (the checkpoint holds its weights): name, options, dims, channels."""
    if cfg.task.get("encoder_from"):
        from mmfm.workflows.pretrain import load_encoder

        _, spec = load_encoder(str(cfg.task["encoder_from"]))
        return {"name": spec["name"], "options": spec.get("options", {}),
                "spatial_dims": int(spec.get("spatial_dims", x.ndim - 1)),
                "in_channels": int(spec.get("in_channels", x.shape[0])), "input_shape": list(x.shape),
                "dp_fixed_layers": bool(spec.get("dp_fixed_layers"))}
    return {"name": cfg.encoder["name"], "options": {k: v for k, v in cfg.encoder.items() if k != "name"},
            "spatial_dims": x.ndim - 1, "in_channels": int(x.shape[0]), "input_shape": list(x.shape)}


def write_info(out: Path, info: dict[str, Any]) -> None:
    from mmfm.evaluation.results import write_json_atomic

    write_json_atomic(out / INFO_FILE, info)


# -- loading a run ------------------------------------------------------------------------------------------------
def _checkpoint(run: Path) -> tuple[Path, dict[str, Any]]:
    from mmfm.engine.checkpoint import read_state

    ckpt = run / "checkpoints" / "last"
    if not run.is_dir():
        raise ConfigError(f"{run}: not a folder", "give the out= folder of `mmfm report-gen` / `mmfm vqa` run with "
                                                  "task.decoder=smollm2, or a zoo language model")
    if not (ckpt / "state.json").is_file():
        raise ConfigError(f"{run}: not a finished training run (no checkpoints/last)",
                          "give the out= folder of a finished `mmfm report-gen` / `mmfm vqa` run")
    info = (read_state(ckpt).get("run_info") or {}).get("assistant")
    if not info:
        raise ConfigError(f"{run}: a run without a language-model bridge", "give a `mmfm report-gen` / `mmfm vqa` "
                                                                         "run trained with task.decoder=smollm2")
    return ckpt, info


def _load_stage(bridge: LMBridge, run: Path, decoder: str, sha: str) -> None:
    """Bridge and encoder weights of a finished run (stage 1, before stage 2 trains on)."""
    from mmfm.engine.checkpoint import read_checkpoint

    ckpt, info = _checkpoint(run)
    if info["decoder"] != decoder or info["lm_sha256"] != sha:
        raise CheckpointError(f"{run}: trained on language model {info['decoder']} ({info['lm_sha256'][:12]}...), "
                              f"not {decoder} ({sha[:12]}...)", "set task.decoder to the run's language model")
    if info.get("stage") != 1:
        raise ConfigError(f"task.bridge_from={run}: a stage-{info.get('stage')} run", "give a stage-1 run")
    state, sd, _, _ = read_checkpoint(ckpt, bridge, with_optimizer=False)
    bridge.load_state_dict(sd)


def load_bridge_run(run: str | Path, device: str | torch.device = "cpu") -> tuple[LMBridge, dict[str, Any], Any]:
    """(bridge in eval mode with any LoRA merged, its ``assistant`` info, the language model) of a run written by
    `mmfm report-gen` / `mmfm vqa` with ``task.decoder``. The language model must be the one the run recorded."""
    from mmfm.encoders import build_encoder
    from mmfm.encoders.adapters import PeftSpec, add_adapters, merge_adapters
    from mmfm.encoders.text.llm import load_language_model
    from mmfm.engine.checkpoint import load_checkpoint, read_state

    run = Path(run)
    ckpt, info = _checkpoint(run)
    lm = load_language_model(info["decoder"], device)
    if lm.sha256 != info["lm_sha256"]:
        raise CheckpointError(f"{run}: trained on {info['decoder']} with SHA-256 {info['lm_sha256'][:12]}..., this "
                              f"installation has {lm.sha256[:12]}...", "install the language model the run used")
    e = info["encoder"]
    encoder = build_encoder(e["name"], spatial_dims=int(e["spatial_dims"]), in_channels=int(e["in_channels"]),
                            **e.get("options", {}))
    if e.get("dp_fixed_layers"):   # pretrained under DP with BatchNorm replaced: the same architecture
        from mmfm.engine.privacy import fix_layers

        fix_layers(encoder)
    peft = (read_state(ckpt).get("run_info") or {}).get("peft")
    model = copy.deepcopy(lm.model) if peft else lm.model
    bridge = BRIDGES[info["bridge"]](encoder, model, lm.tokenizer, freeze_encoder=True, prompt=info["prompt"],
                                     max_len=int(info["max_len"]), **info.get("bridge_options", {}))
    if peft:   # the checkpoint holds the adapters unmerged (as trained); merged for inference
        add_adapters(bridge, PeftSpec.from_dict(peft))
    try:
        load_checkpoint(ckpt, bridge, restore_rng_state=False)
    except RuntimeError as err:
        raise CheckpointError(f"{run}: {err}", "the run's files do not fit its recorded architecture") from None
    if peft:
        merge_adapters(bridge)
    return bridge.to(device).eval(), info, lm


def run_image(info: dict[str, Any], run: Path, path: str | Path, modality: str | None = None) -> torch.Tensor:
    """The image at ``path`` as the run's model saw its training images: the run's intensity preset for the
    modality, its channels, resized to its grid. Shape: (1, C, *size)."""
    from monai.transforms import Resize

    from mmfm.data.io import read_image
    from mmfm.engine.checkpoint import read_state
    from mmfm.workflows.predict import Preprocessing, adapt_channels

    e = info["encoder"]
    dims, shape = int(e["spatial_dims"]), [int(v) for v in e["input_shape"]]
    contract = (read_state(run / "checkpoints" / "last").get("run_info") or {}).get("preprocessing") or {}
    prep = Preprocessing(dims, shape[0], shape[1:], presets=dict(contract.get("presets") or {}))
    img = read_image(path, modality=modality)
    if not np.isfinite(img.array).all():
        raise ConfigError(f"{path}: the image has NaN or infinite values", "fix the image; mmfm never replaces them")
    if img.spatial_dims != dims:
        raise ConfigError(f"{path}: a {img.spatial_dims}D image; the run's model takes {dims}D images",
                          f"give a {dims}D image")
    arr = adapt_channels(prep.preset(img.modality)(img.array.astype(np.float32)), prep.channels)
    resize = Resize(tuple(prep.size), mode="area" if dims == 2 else "trilinear")
    return torch.as_tensor(np.asarray(resize(arr)), dtype=torch.float32)[None]


def describe(info: dict[str, Any]) -> str:
    """One line naming what a run is (for the chat header)."""
    return (f"{info['bridge']} bridge, stage {info['stage']}, {info['encoder']['name']} "
            f"{info['encoder']['spatial_dims']}D -> {info['decoder']}, trained on {info['data']}")

