"""Provenance of a result: which code, when, on which software and hardware, at which arithmetic precision.

Every results record carries this block (``results.json`` of every command, and the ``docs/results/*.json`` files
that the reproduce scripts write), so a number in a table can be traced to the commit and the machine that
produced it, and a bf16 number is never mistaken for an fp32 one::

    {"commit": "abada62...", "uncommitted_changes": false, "date": "2026-12-02T10:30:00+00:00", "mmfm": "0.1.0",
     "torch": "2.x", "device": "cpu: AMD EPYC 9R14", "cpu_flags": ["avx2", "avx512_bf16", ...], "native_bf16": true,
     "precision": {"train": "bf16", "evaluation": "fp32"}}

``precision.train`` is what the trainer's steps ran at (``run_info.precision.used`` of the run's checkpoint;
None where nothing was trained, e.g. ``mmfm evaluate``'s probes); evaluation runs without autocast, in fp32.
This lives with the workflows (not in ``mmfm.evaluation``) because the CPU flags come from
:func:`mmfm.engine.precision.cpu_summary`, and evaluation sits below the engine in the import order.
"""

from __future__ import annotations

import functools
import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import mmfm
from mmfm.engine.precision import cpu_summary

EVALUATION_PRECISION = "fp32"   # evaluate(), probes and feature extraction run without autocast


@functools.cache
def git_commit() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the checkout mmfm is imported from; (None, None) for an installed copy without git."""
    root = Path(mmfm.__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if head.returncode:
            return None, None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None, None
    return head.stdout.strip(), bool(status.stdout.strip()) if status.returncode == 0 else None


@functools.cache
def device_name() -> str:
    """``cuda: <GPU name>`` where a GPU is used, else ``cpu: <model name>``."""
    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)}"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return "cpu: " + line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return f"cpu: {platform.processor() or platform.machine()}"


def trained_precision(run_dir: str | Path | None) -> str | None:
    """The precision the run in ``run_dir`` trained at (from its last checkpoint), None without a checkpoint."""
    if run_dir is None:
        return None
    state = Path(run_dir) / "checkpoints" / "last" / "state.json"
    try:
        info = json.loads(state.read_text()).get("run_info", {})
    except (OSError, ValueError):
        return None
    used = (info.get("precision") or {}).get("used")
    return str(used) if used else None


def provenance(run_dir: str | Path | None = None, train_precision: str | None = None) -> dict[str, Any]:
    """The provenance block of results produced now (by the run in ``run_dir``, if any); ``train_precision``
    overrides what the run's checkpoint says (for results of several trainings, e.g. a script's own loop)."""
    commit, dirty = git_commit()
    cpu = cpu_summary()   # the flags that decide the precision and the speed, and whether bf16 is native
    return {"commit": commit, "uncommitted_changes": dirty,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "mmfm": mmfm.__version__,
            "torch": torch.__version__, "device": device_name(),
            "cpu_flags": list(cpu["flags"]), "native_bf16": cpu["native_bf16"],
            "precision": {"train": train_precision or trained_precision(run_dir),
                          "evaluation": EVALUATION_PRECISION}}
