"""Peak memory of pretraining on a plain folder does not grow with the corpus: the same run (SimCLR, vit_mini, 64x64,
batch 32, 4 DataLoader workers, a fixed number of steps) on synthetic folders of N PNG images, one fresh process
per size, side by side in one invocation. Reported: peak RSS of the training process, peak RSS summed over it and
its DataLoader workers (sampled every 0.1 s from /proc), the time to scan the folder, and their ratio to the
smallest corpus.

    .venv/bin/python benchmarks/folder_memory.py [--sizes 2000 20000] [--steps 30] [--workers 2]
                                                 [--json docs/results/bench_memory.json]

A flat peak (ratio ~1) is what "never holds a whole corpus in memory" means in numbers: images are decoded by the
workers one batch at a time; only the list of file records (path and header facts, ~1 KB each) grows with N.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def make_folder(root: Path, n: int) -> None:
    """N 64x64 grey PNGs in sub-folders of 1,000 (random noise plus a square, so no two are alike)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        sub = root / f"part{i // 1000:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        x = rng.integers(0, 200, (64, 64), dtype=np.uint8)
        r, c = rng.integers(0, 48, 2)
        x[r:r + 16, c:c + 16] = 255
        Image.fromarray(x).save(sub / f"img{i:06d}.png", compress_level=1)


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                kids = Path(f"/proc/{p}/task/{t}/children").read_text().split()
                todo += [int(k) for k in kids]
        except OSError:
            pass
    return out


def run(folder: Path, out: Path, steps: int, workers: int) -> dict[str, float]:
    cmd = [sys.executable, "-m", "mmfm.cli.main", "pretrain", "configs/pretrain/simclr_2d.yaml",
           "data.dataset=folder", f"data.root={folder}", "data.size=[64,64]", "encoder.name=vit_mini",
           f"train.max_steps={steps}", "train.batch_size=32", f"train.ckpt_every={steps}", f"train.workers={workers}",
           "train.progress=false", f"out={out}"]
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    main_peak = total_peak = 0
    while proc.poll() is None:
        main_peak = max(main_peak, rss_kb(proc.pid))
        total_peak = max(total_peak, sum(rss_kb(p) for p in tree(proc.pid)))
        time.sleep(0.1)
    log = proc.stdout.read() if proc.stdout else ""
    if proc.returncode:
        raise SystemExit(f"pretraining failed:\n{log[-2000:]}")
    return {"peak_rss_main_MB": main_peak / 1024, "peak_rss_with_workers_MB": total_peak / 1024,
            "wall_s": time.time() - t0}


def scan_seconds(folder: Path) -> float:
    from mmfm.data.catalog import load_dataset

    t0 = time.time()
    load_dataset("folder", folder)
    return time.time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", type=int, default=[2000, 20000])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    records, base = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for n in sorted(a.sizes):
            folder = Path(tmp) / f"images_{n}"
            make_folder(folder, n)
            scan = scan_seconds(folder)
            m = run(folder, Path(tmp) / f"run_{n}", a.steps, a.workers)
            m["scan_s"] = scan
            base = base or m
            for k, v in m.items():
                records.append({"task": "memory/pretrain-folder", "dataset": f"synthetic PNG folder, N={n}",
                                "split": "train", "method": f"N={n}", "metric": k, "value": round(v, 2),
                                "seed": 0, "label_fraction": None})
            ratio = m["peak_rss_with_workers_MB"] / base["peak_rss_with_workers_MB"]
            records.append({"task": "memory/pretrain-folder", "dataset": f"synthetic PNG folder, N={n}",
                            "split": "train", "method": f"N={n}", "metric": "peak_ratio_to_smallest",
                            "value": round(ratio, 3), "seed": 0, "label_fraction": None})
            print(f"N={n:6d}  peak RSS main {m['peak_rss_main_MB']:.0f} MB, with workers "
                  f"{m['peak_rss_with_workers_MB']:.0f} MB (x{ratio:.2f} of the smallest), scan {scan:.1f} s, "
                  f"run {m['wall_s']:.0f} s", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
