"""Launching a test's 2-process run through torchrun: a free port per launch, Python tracebacks on a fatal signal,
and a failure message that keeps what each rank said."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.network import free_port  # a port per launch: two on one port would join each other's rendezvous

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def torchrun(args: list[str], nproc: int = 2, env: dict | None = None, timeout: int = 300, **kw
             ) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --nproc_per_node N --master_port FREE ARGS...`` with ``PYTHONPATH`` at the
    repository root and ``PYTHONFAULTHANDLER`` on (a rank killed by a signal prints where it was)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), *args]
    env = {**os.environ, "PYTHONPATH": ROOT, "PYTHONFAULTHANDLER": "1", **(env or {})}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, **kw)


def failure(r: subprocess.CompletedProcess) -> str:
    """The lines that say why a launch failed: each rank's own errors and fatal-signal tracebacks, then the tail
    (torchrun's summary alone names only the signal)."""
    keep = [ln for ln in r.stderr.splitlines()
            if re.search(r"error|Error|terminate|Fatal Python|Thread 0x|File \"|exitcode|Traceback", ln)
            and "torch/distributed/elastic" not in ln and "torch/distributed/run.py" not in ln]
    return "\n".join(keep[:80]) + "\n--- tail ---\n" + r.stderr[-1500:]
