"""Does data loading starve the training step? The same MAE pretraining (vit_mini, 64x64, batch 32) timed on a
folder of real-format files read by mmfm's pipeline (decode, preset, resize in DataLoader worker processes, loaded
ahead of the step) and on the very same preprocessed images already in memory as tensors, side by side in one
process (alternating, median over rounds).

    .venv/bin/python benchmarks/data_pipeline.py [--images 512] [--steps 20] [--rounds 3] [--workers -1]
                                                 [--json docs/results/bench_data.json]

The folder holds ``--images`` 256x256 16-bit PNG "CT slices" (noise plus shapes; decoding and resizing cost what
real slices of that size cost). Three sides: files decoded every time (a first epoch), files through
``data.cache`` already filled (every later epoch), tensors in memory. The last lines are the settings and
``ratio: X.XX``: seconds per step on cached files over seconds per step in memory (1.00 = loading is fully hidden;
the target is <= 1.10); the first-epoch ratio is printed above them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
from _common import print_ratio

from mmfm.data import spec as dataspec
from mmfm.encoders import build_encoder
from mmfm.engine.trainer import OptimConfig, TrainConfig, Trainer, num_workers
from mmfm.evaluation.results import ResultRecord, write_results
from mmfm.objectives import OBJECTIVES
from mmfm.workflows.config import DataConfig


def make_folder(root: Path, n: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        x = rng.integers(0, 1200, (256, 256)).astype(np.uint16)
        r, c = rng.integers(20, 180, 2)
        x[r:r + 60, c:c + 50] += 800
        Image.fromarray(x).save(root / f"slice{i:05d}.png")


class InMemory(torch.utils.data.Dataset):
    """The folder's items, decoded and preprocessed once, held as tensors."""

    def __init__(self, ds) -> None:
        self.items = [ds[i] for i in range(len(ds))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def seconds_per_step(ds, steps: int, batch: int, workers: int, out: Path) -> float:
    torch.manual_seed(0)
    x = ds[0]["image"]
    enc = build_encoder("vit_mini", spatial_dims=x.ndim - 1, in_channels=x.shape[0])
    model = OBJECTIVES.build_with("mae", {}, {"encoder": enc, "image_size": int(x.shape[-1])}, "objective")
    cfg = TrainConfig(max_steps=steps, batch_size=batch, workers=workers, log_every=1, ckpt_every=10**6,
                      progress=False, precision="fp32")
    Trainer(model, ds, cfg, OptimConfig(lr=1e-4), out).fit()
    lines = (out / "metrics.jsonl").read_text().splitlines()
    first = json.loads(lines[2])["seconds"]           # steps 1-3 include worker start-up and warm-up
    last = json.loads(lines[-1])["seconds"]
    return (last - first) / (len(lines) - 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, default=-1, help="train.workers for the files side (-1: mmfm's auto)")
    ap.add_argument("--json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "slices"
        make_folder(root, args.images)
        data = DataConfig(dataset="folder", root=str(root), size=[64, 64])
        files = dataspec.unlabelled(data, "all")
        cached = dataspec.unlabelled(DataConfig(dataset="folder", root=str(root), size=[64, 64],
                                                cache=str(Path(tmp) / "cache")), "all")
        memory = InMemory(files)
        InMemory(cached)                                   # fills the cache: what a run's second epoch finds
        workers = num_workers(TrainConfig(workers=args.workers), files)
        times: dict[str, list[float]] = {"files": [], "files, cached": [], "memory": []}
        sides = (("files", files, workers), ("files, cached", cached, workers), ("memory", memory, 0))
        for r in range(args.rounds):
            for name, ds, w in sides[:: 1 if r % 2 else -1]:
                times[name].append(seconds_per_step(ds, args.steps, args.batch, w, Path(tmp) / f"{name}{r}"))
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["files"] / med["memory"]
    ratio_cached = med["files, cached"] / med["memory"]
    setting = f"MAE vit_mini 64x64 b{args.batch}, {args.images} PNG 256x256 uint16, {torch.get_num_threads()} threads"
    for k, v in med.items():
        print(f"{k:13s} {v * 1e3:7.1f} ms per step  (rounds: {', '.join(f'{t * 1e3:.0f}' for t in times[k])})")
    if args.json:
        write_results(args.json, [ResultRecord("data pipeline", setting, "bench", k, "ms per step", v * 1e3, 0)
                                  for k, v in med.items()]
                      + [ResultRecord("data pipeline", setting, "bench", "files", "time / in-memory", ratio, 0),
                         ResultRecord("data pipeline", setting, "bench", "files, cached", "time / in-memory",
                                      ratio_cached, 0)])
        print(f"wrote {args.json}")
    print(f"first epoch (decoding every file): {ratio:.2f} x the in-memory step")
    print_ratio(ratio_cached, f"files read by mmfm's pipeline with data.cache (a later epoch), {workers} DataLoader "
                              f"workers, {setting}",
                f"the same preprocessed images as in-memory tensors, no workers, {setting}")


if __name__ == "__main__":
    main()
