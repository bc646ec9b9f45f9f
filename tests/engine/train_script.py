"""A tiny training run used by the resume and DDP tests (run as a subprocess, also under torchrun).

usage: python train_script.py OUT BATCH_SIZE [--dropout] [--bn] [--blocks] [--accum N] [--steps N]
                              [--nan-on-rank R --nan-at-step S] [--fsdp] [--compile] [--precision P] [--peft]
                              [--crash-after-step N] [--crash-in-save]

--crash-after-step N: a hard kill (exit 137) once step N is done; --crash-in-save: one between the two renames of
the first save that replaces a checkpoint (tests/engine/faults.py).

--precision defaults to fp32: the equality tests compare exact runs (bf16: tests/engine/test_bf16.py).
"""

from __future__ import annotations

import logging
import os
import sys

import torch
from torch import nn

from mmfm.data.datasets import ArrayDataset
from mmfm.data.synthetic import phantoms
from mmfm.engine.distributed import finish_worker
from mmfm.engine.trainer import OptimConfig, TrainConfig, Trainer
from mmfm.errors import MMFMError
from tests.engine.faults import CrashAfterStep, crash_in_save


class Net(nn.Module):
    def __init__(self, dropout: bool, bn: bool = False, nan_step: int = -1, blocks: bool = False) -> None:
        super().__init__()
        # --blocks: a ModuleList of residual blocks (FSDP shards each one) and a parameter no step uses
        self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(32, 32), nn.Tanh()) for _ in range(2)] if blocks
                                    else [])
        self.unused = nn.Parameter(torch.zeros(3)) if blocks else None
        # no bias before BN (it gets no gradient, and AdamW would turn round-off into steps)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(16 * 16, 32, bias=not bn),
                                  nn.BatchNorm1d(32) if bn else nn.Identity(),
                                  nn.ReLU(), nn.Dropout(0.3 if dropout else 0.0), nn.Linear(32, 2))
        self.nan_step, self.calls = nan_step, 0

    def forward(self, batch):
        self.calls += 1
        if self.calls == self.nan_step:  # a diverging loss on this process only
            batch = {**batch, "image": batch["image"] * float("nan")}
        h = self.body[:-1](batch["image"])
        for blk in self.blocks:
            h = h + blk(h)
        logits = self.body[-1](h)
        ce = nn.functional.cross_entropy(logits, batch["label"])
        return {"loss": ce, "ce_loss": ce}


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="[mmfm] %(message)s", stream=sys.stdout)  # as `mmfm` shows them
    out, bs = sys.argv[1], int(sys.argv[2])
    accum = int(sys.argv[sys.argv.index("--accum") + 1]) if "--accum" in sys.argv else 1
    torch.manual_seed(0)
    nan_step = -1
    if "--nan-on-rank" in sys.argv and os.environ.get("RANK", "0") == sys.argv[sys.argv.index("--nan-on-rank") + 1]:
        nan_step = int(sys.argv[sys.argv.index("--nan-at-step") + 1])
    model = Net("--dropout" in sys.argv, "--bn" in sys.argv, nan_step, "--blocks" in sys.argv)
    data = phantoms(64, spatial_dims=2, size=16, seed=0)
    ds = ArrayDataset(data["image"], data["label"])
    opt = {a[2:]: sys.argv[sys.argv.index(a) + 1] for a in ("--precision", "--steps") if a in sys.argv}
    train = TrainConfig(max_steps=int(opt.get("steps", 12)), batch_size=bs, grad_accum=accum, seed=1, ckpt_every=4,
                        log_every=1, progress=False, precision=opt.get("precision", "fp32"),
                        strategy="fsdp" if "--fsdp" in sys.argv else "ddp", compile="--compile" in sys.argv,
                        peft="lora" if "--peft" in sys.argv else "", peft_rank=2,
                        peft_modules=["body"] if "--peft" in sys.argv else [])
    handlers = [CrashAfterStep(int(sys.argv[sys.argv.index("--crash-after-step") + 1]))
                ] if "--crash-after-step" in sys.argv else []
    if "--crash-in-save" in sys.argv:
        crash_in_save()
    try:
        Trainer(model, ds, train, OptimConfig(lr=0.01, warmup_steps=3), out, run_info={"config": {"bs": bs}},
                handlers=handlers).fit()
        if os.environ.get("RANK", "0") == "0":  # the caller's own module after training (FSDP gathers into it)
            from safetensors.torch import save_file
            final = {k: v.contiguous() for k, v in model.state_dict().items()}
            save_file(final, os.path.join(out, "final.safetensors"))
        finish_worker(0)                        # as the CLI ends a torchrun worker (no-op in one process)
    except MMFMError as e:  # as the CLI does
        print(f"mmfm: error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
