"""Execute the tutorials in examples/ (jupytext percent scripts) as notebooks, each in a fresh kernel in its own
temporary working directory, so nothing is written into the repository (`make examples`; CI runs it).

    python scripts/run_examples.py [examples/01_segment_your_scan.py ...] [--timeout S] [--keep DIR]

Each tutorial asserts its own outputs; a failing cell stops that tutorial and is reported in one line naming the
file, the cell and its first source line, after the end of its traceback. Exit status 1 when any failed. The kernels
run with OMP_NUM_THREADS=1 unless it is set.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def examples(names: list[str]) -> list[Path]:
    """The given scripts, or every examples/*.py in name order."""
    if not names:
        return sorted(EXAMPLES.glob("*.py"))
    paths = [Path(n) if Path(n).exists() else EXAMPLES / n for n in names]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SystemExit(f"run_examples: no such example: {', '.join(missing)} (see {EXAMPLES.relative_to(ROOT)}/)")
    return paths


def failed_cell(nb, text: str) -> tuple[int, int, str]:
    """(cell number, 1-based line in the script, first source line) of the cell whose output is an error."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    for n, cell in enumerate(code, start=1):
        if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            first = next((ln for ln in cell.source.splitlines() if ln.strip() and not ln.startswith("#")), "")
            at = text.find(cell.source)
            return n, (text[:at].count("\n") + 1 if at >= 0 else 0), first.strip()
    return 0, 0, ""


def run_one(path: Path, timeout: int, keep: Path | None) -> str | None:
    """Execute one example; None when it passed, else the one-line failure."""
    import jupytext
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    text = path.read_text()
    nb = jupytext.reads(text, fmt="py:percent")
    rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    with tempfile.TemporaryDirectory(prefix=f"mmfm-example-{path.stem}-") as work:
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": work}})
        try:
            client.execute()
            error = None
        except (CellExecutionError, CellTimeoutError, DeadKernelError) as e:
            n, line, first = failed_cell(nb, text)
            tail = ANSI.sub("", str(e)).strip().splitlines()[-12:]
            print("\n".join("    " + t for t in tail), file=sys.stderr)
            what = ANSI.sub("", f"{getattr(e, 'ename', type(e).__name__)}: {getattr(e, 'evalue', '')}").strip()
            where = f"cell {n} (line {line}: {first})" if n else "a cell"
            error = f"{rel}: {where} failed: {what.splitlines()[0] if what else type(e).__name__}"
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, keep / f"{path.stem}.ipynb")
    return error


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("examples", nargs="*", help="scripts to run (default: every examples/*.py)")
    ap.add_argument("--timeout", type=int, default=600, help="seconds one cell may take (default 600)")
    ap.add_argument("--keep", type=Path, help="write the executed notebooks (.ipynb, with outputs) into this folder")
    args = ap.parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "Agg")
    # the kernels inherit this: the tutorials' models are tiny and gain little from more threads, which thrash on a
    # busy machine (measured on a shared, loaded 2-core machine: all five in 227 s with one thread, 599 s without)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    failures, start = [], time.perf_counter()
    for path in examples(args.examples):
        t0 = time.perf_counter()
        print(f"[examples] {path.name} ...", flush=True)
        error = run_one(path, args.timeout, args.keep)
        status = "FAILED" if error else "ok"
        print(f"[examples] {path.name}: {status} in {time.perf_counter() - t0:.0f} s", flush=True)
        if error:
            failures.append(error)
    print(f"[examples] {len(failures)} failed, total {time.perf_counter() - start:.0f} s", flush=True)
    for error in failures:
        print(error, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
