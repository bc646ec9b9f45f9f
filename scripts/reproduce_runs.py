"""Runs of the Python reproduce scripts (reproduce_adaptation.py, reproduce_trust.py): a run that fails is recorded
as failed and shown as FAILED under its table (scripts/doc_tables.py), never silently left out of it; the other
runs go on, and the script exits non-zero at the end.

    out = run(RUNS / "x-s0", "train", cfg, ...)                    # RunFailed if mmfm exits non-zero
    with attempt(recs, "classification", "mini", "resnet-scratch", seed=0):
        recs += records(run(...))                                  # on failure: a `failed` record instead
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from doc_tables import failed_record  # noqa: E402

FAILURES: list[dict] = []   # every failed run of this process, for the exit status


class RunFailed(Exception):
    """A run of the reproduce script did not finish (mmfm exited non-zero, or did not run under COLLECT_ONLY)."""


def run(mmfm: str, out: Path, *args: str, collect_only: bool = False) -> Path:
    """``mmfm ARGS out=OUT`` unless OUT already holds a finished run; RunFailed (with mmfm's last line, its
    one-line error) when it exits non-zero."""
    if (out / "status.json").exists() and (out / "results.json").exists():
        return out
    if collect_only:
        raise RunFailed(f"not run (COLLECT_ONLY=1 and {out.name} has not finished)")
    cmd = [mmfm, *args, f"out={out}", "train.progress=false"]
    print("+", " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: deque[str] = deque(maxlen=20)
    for line in proc.stdout or ():    # shown as it comes (runs take minutes); the last lines kept for the record
        sys.stdout.write(line)
        tail.append(line)
    if proc.wait():
        last = next((ln.strip() for ln in reversed(tail) if ln.strip()), "")
        raise RunFailed(f"exit {proc.returncode}: {last}")
    return out


@contextmanager
def attempt(recs: list[dict], task: str, dataset: str, method: str, seed: int, split: str = "test",
            label_fraction: float = 1.0) -> Iterator[None]:
    """Run the block; if a run in it fails, append a ``failed`` record for (method, seed) instead of its numbers."""
    try:
        yield
    except RunFailed as e:
        rec = failed_record(task, dataset, method, seed, str(e), split, label_fraction)
        recs.append(rec)
        FAILURES.append(rec)
        print(f"FAILED: {method} seed {seed}: {e}", flush=True)


def write_tables() -> None:
    subprocess.run([sys.executable, str(ROOT / "scripts" / "doc_tables.py"), "write"], check=True, cwd=ROOT)


def save(results: Path, name: str, recs: list[dict]) -> None:
    """``RESULTS/NAME.json`` (failed runs included), then every doc table regenerated."""
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{name}.json").write_text(json.dumps(recs, indent=1))
    failed = sum(r["metric"] == "failed" for r in recs)
    print(f"{len(recs)} records ({failed} failed runs) -> {name}.json", flush=True)
    write_tables()


def exit_status() -> int:
    """0, or 1 after printing the failed runs (the tables list them too)."""
    for r in FAILURES:
        print(f"FAILED: {r['method']} seed {r['seed']} ({r['task']}): {r['error']}", file=sys.stderr)
    return 1 if FAILURES else 0
