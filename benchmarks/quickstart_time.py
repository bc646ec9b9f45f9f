"""Wall time of ``mmfm quickstart`` end to end (mini already prepared), into a fresh folder, in a child process.

    .venv/bin/python benchmarks/quickstart_time.py [--json docs/results/bench_quickstart.json]

The target: under 15 minutes on 2 CPU cores. The last lines are the settings and ``ratio: X.XX`` (the wall time
over the 15-minute budget; below 1.00 meets it).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import print_ratio

from mmfm.evaluation.results import ResultRecord, write_results

BUDGET_S = 15 * 60


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json")
    args = ap.parse_args()
    mmfm = Path(sys.executable).with_name("mmfm")
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        r = subprocess.run([str(mmfm), "quickstart", "--out", str(Path(tmp) / "qs")], capture_output=True, text=True)
        wall = time.perf_counter() - t
    if r.returncode:
        raise SystemExit(f"quickstart failed ({r.returncode}):\n{r.stderr[-2000:]}")
    setting = f"mmfm quickstart, {os.cpu_count()} CPUs"
    print(f"{setting}: {wall / 60:.1f} min")
    if args.json:
        write_results(args.json, [ResultRecord("quickstart", setting, "bench", "mmfm", "minutes", wall / 60, 0)])
        print(f"wrote {args.json}")
    print_ratio(wall / BUDGET_S, f"{setting}, wall time", "the 15-minute budget")


if __name__ == "__main__":
    main()
