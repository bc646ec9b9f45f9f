"""Summarise vision-language evidence runs: mean ± sd over seeds of every results.json below a folder.

Usage: python scripts/vl_table.py runs/vlm [metric ...]   -> a Markdown table on stdout (and summary.json there)
"""

from __future__ import annotations

import sys
from pathlib import Path

from mmfm.evaluation.results import read_results, write_json_atomic
from mmfm.workflows.evaluate import summarise


def main(folder: str, metrics: list[str]) -> None:
    records = [r for p in sorted(Path(folder).rglob("results.json")) for r in read_results(p)
               if r.task != "pretrain" and r.split == "test"]
    summary = [s for s in summarise(records) if not metrics or s["metric"] in metrics]
    write_json_atomic(Path(folder) / "summary.json", summary)
    cols = sorted({s["metric"] for s in summary}, key=lambda m: (metrics.index(m) if m in metrics else 99, m))
    rows: dict[tuple[str, str], dict[str, str]] = {}
    for s in summary:
        cell = f"{s['mean']:.3f} ± {s['std']:.3f} (n={s['n_seeds']})"
        rows.setdefault((s["task"], s["method"]), {})[s["metric"]] = cell
    print("| task | method | " + " | ".join(cols) + " |")
    print("|---|---|" + "---|" * len(cols))
    for (task, method), vals in sorted(rows.items()):
        print(f"| {task} | {method} | " + " | ".join(vals.get(c, "") for c in cols) + " |")
    print(f"\n{len(records)} records from {folder}; summary.json written there", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
