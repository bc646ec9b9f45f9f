"""benchmarks/bridge_step.py runs to its ratio line on the stand-in language model and writes records with
provenance (never timed here: only that it runs and what it writes)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.long
def test_bridge_step_benchmark_runs_to_its_ratio_line(tmp_path):
    out = tmp_path / "b.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bridge_step.py"), "--model", "llama_tiny",
                          "--steps", "3", "--batch", "2", "--img", "16", "--json", str(out)],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert re.fullmatch(r"ratio: \d+\.\d\d", run.stdout.strip().splitlines()[-1])
    records = json.loads(out.read_text())
    methods = {r["method"] for r in records}
    assert {"stage1-fp32", "stage2-fp32"} <= methods and len(methods) in (2, 4)     # bf16 where it works
    assert all(r["metric"] == "seconds_per_step" and r["value"] > 0 for r in records)
    assert records[0]["provenance"]["command"].startswith("python benchmarks/bridge_step.py --model llama_tiny")
