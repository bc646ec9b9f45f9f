"""Diagnostic for the pointing-game table of docs/trust.md: where a ViT's attention-rollout maxima land on the LiTS
tumour windows (at the window border; on zero-valued pixels, i.e. air below the CT window or padding) for seed 0
of `scripts/reproduce_trust.py pointing`'s protocol. Prints the fractions; writes only its training run.

    .venv/bin/python scripts/diagnose_pointing.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from reproduce_trust import RUNS, lits_task  # noqa: E402

from mmfm.encoders import build_encoder  # noqa: E402
from mmfm.engine.trainer import OptimConfig, TrainConfig, Trainer  # noqa: E402
from mmfm.tasks.classification import ClassificationTask  # noqa: E402
from mmfm.trust.explain import saliency  # noqa: E402


def main() -> None:
    data = lits_task(np.random.default_rng(0))
    xtr, ytr, _ = data["train"]
    xte, yte, mte = data["test"]
    torch.manual_seed(0)
    model = ClassificationTask(build_encoder("vit_mini", spatial_dims=2, in_channels=1, patch_size=4), 2)
    ds = [{"image": torch.from_numpy(x), "label": torch.tensor(int(y))} for x, y in zip(xtr, ytr)]
    Trainer(model, ds, TrainConfig(max_steps=150, batch_size=32, seed=0, progress=False, ckpt_every=150),
            OptimConfig(lr=1e-3, warmup_steps=10), RUNS / "diagnose_pointing", run_info={"config": {}}).fit()
    model.eval()
    sel = yte == 1
    x = torch.from_numpy(xte[sel])
    maps = saliency(model, x, "rollout").numpy()
    side = maps.shape[-1]
    peaks = [np.unravel_index(int(s.argmax()), s.shape) for s in maps]
    print("rollout maxima within 3 px of the window border:",
          np.mean([min(p[0], p[1], side - 1 - p[0], side - 1 - p[1]) <= 3 for p in peaks]))
    on_zero = np.mean([x[i, 0][p] == 0 for i, p in enumerate(peaks)])
    print("rollout maxima on zero-valued pixels (air / padding):", on_zero)
    print("distinct maxima positions:", len(set(peaks)), "of", len(peaks))
    print("mean intensity: at the maxima", np.mean([float(x[i, 0][p]) for i, p in enumerate(peaks)]),
          "| tumour", float(x[:, 0][torch.from_numpy(mte[sel])].mean()), "| whole windows", float(x.mean()))


if __name__ == "__main__":
    main()
