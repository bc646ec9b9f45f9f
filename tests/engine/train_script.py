"""A tiny training run used by the resume and DDP tests (run as a subprocess, also under torchrun).

usage: python train_script.py OUT BATCH_SIZE [--dropout] [--accum N]
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from mmfm.data.datasets import ArrayDataset
from mmfm.data.synthetic import phantoms
from mmfm.engine.trainer import OptimConfig, TrainConfig, Trainer


class Net(nn.Module):
    def __init__(self, dropout: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(16 * 16, 32), nn.ReLU(),
                                  nn.Dropout(0.3 if dropout else 0.0), nn.Linear(32, 2))

    def forward(self, batch):
        logits = self.body(batch["image"])
        ce = nn.functional.cross_entropy(logits, batch["label"])
        return {"loss": ce, "ce_loss": ce}


def main() -> None:
    out, bs = sys.argv[1], int(sys.argv[2])
    accum = int(sys.argv[sys.argv.index("--accum") + 1]) if "--accum" in sys.argv else 1
    torch.manual_seed(0)
    model = Net("--dropout" in sys.argv)
    data = phantoms(64, spatial_dims=2, size=16, seed=0)
    ds = ArrayDataset(data["image"], data["label"])
    train = TrainConfig(max_steps=12, batch_size=bs, grad_accum=accum, seed=1, ckpt_every=4, log_every=1,
                        progress=False)
    Trainer(model, ds, train, OptimConfig(lr=0.01, warmup_steps=3), out, run_info={"config": {"bs": bs}}).fit()


if __name__ == "__main__":
    main()
