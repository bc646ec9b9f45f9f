"""Choose the quickstart's pretraining on the VALIDATION split (the test split is never read).

Pretrains each candidate on mini/patches2d (training patches, labels unused) at the quickstart's budget with
seed 0, then scores a linear probe at 1% and 10% of the training labels (seeds 0, 1, 2) on the validation
patches, beside random initialisation (seeded) of each architecture. (LiteMedSAM's packaged encoder is not a
candidate: nothing about it is chosen; the quickstart compares it as it ships.) The quickstart takes the
candidate with the best mean over both fractions (configs/quickstart_pretrain.yaml says which and why);
the table in docs/vision_pretraining.md is written from docs/results/quickstart_selection.json.

Usage: .venv/bin/python scripts/select_quickstart.py [OUT] [STEPS]      (defaults: runs/select_quickstart, 150)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mmfm.data.sources.mini import build_mini
from mmfm.workflows.config import DataConfig, load_config
from mmfm.workflows.evaluate import evaluate_encoders
from mmfm.workflows.pretrain import run_pretrain

ROOT = Path(__file__).resolve().parents[1]
# the quickstart's former MAE ViT and the two contrastive families that suit a small CNN at this scale
CANDIDATES = {"mae_vit_mini": ROOT / "configs" / "pretrain" / "mae_quickstart_former.yaml",
              "simclr_resnet_small": ROOT / "configs" / "pretrain" / "simclr_2d.yaml",
              "moco_resnet_small": ROOT / "configs" / "pretrain" / "moco_2d.yaml"}


def main(out: Path, steps: int) -> None:
    build_mini()
    runs = []
    for name, cfg_path in CANDIDATES.items():
        run = out / "pretrain" / name
        cfg = load_config(cfg_path, [f"out={run}", f"train.max_steps={steps}", "train.seed=0",
                                     "train.progress=false", "data.set=patches2d"])
        if not (run / "status.json").exists():
            print(f"[select] pretraining {name} ({steps} steps)", flush=True)
            run_pretrain(cfg)
        runs.append(str(run))
    evaluate_encoders([*runs, "random:vit_mini", "random:resnet_small"], ["linear"],
                      DataConfig(set="patches2d", label="tissue"), [0.01, 0.1], [0, 1, 2], out / "eval",
                      score_split="val", seeded_init=True)
    subprocess.run([sys.executable, str(ROOT / "scripts" / "doc_tables.py"), "collect", "quickstart_selection",
                    str(out / "eval"), "--splits", "val"], check=True)


if __name__ == "__main__":
    from mmfm.cli.logs import setup as show_progress

    show_progress()   # the library's log lines (progress, decisions), as the mmfm command shows them
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/select_quickstart"),
         int(sys.argv[2]) if len(sys.argv) > 2 else 150)
