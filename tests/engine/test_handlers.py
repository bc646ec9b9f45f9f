"""The loop's handlers (mmfm.engine.handlers): called at their named points in order, and an exception from one at
the end of a step stops the run with the last checkpoint whole and resumable."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from mmfm.data.datasets import ArrayDataset
from mmfm.engine.handlers import Handler
from mmfm.engine.trainer import OptimConfig, TrainConfig, Trainer


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 2))

    def forward(self, batch):
        ce = nn.functional.cross_entropy(self.body(batch["image"]), batch["label"])
        return {"loss": ce, "ce_loss": ce}


def _trainer(out, handlers=(), steps=5):
    g = torch.Generator().manual_seed(0)
    ds = ArrayDataset(torch.randn(32, 1, 4, 4, generator=g).numpy(), (torch.arange(32) % 2).numpy())
    cfg = TrainConfig(max_steps=steps, batch_size=4, seed=1, ckpt_every=2, log_every=1, progress=False,
                      precision="fp32")
    return Trainer(Tiny(), ds, cfg, OptimConfig(lr=0.01, warmup_steps=1), out, run_info={"config": {"t": 1}},
                   handlers=handlers)


class Recorder(Handler):
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def on_fit_start(self, fit):
        self.calls.append(("fit_start", fit.model is None))         # before the model is placed

    def on_loop_start(self, fit):
        self.calls.append(("loop_start", fit.start))

    def on_record(self, fit, record):
        self.calls.append(("record", record["step"]))
        record["extra"] = 1.0                                          # a handler's addition is logged

    def on_checkpoint(self, fit, state):
        self.calls.append(("checkpoint", state["step"]))

    def on_step_end(self, fit):
        self.calls.append(("step_end", fit.step + 1))

    def on_fit_end(self, fit):
        self.calls.append(("fit_end",))


class Boom(Handler):
    def on_step_end(self, fit):
        if fit.step + 1 == 3:
            raise RuntimeError("boom")


def test_handlers_are_called_at_their_points_in_order(tmp_path):
    rec = Recorder()
    _trainer(tmp_path, [rec], steps=3).fit()
    assert rec.calls == [("fit_start", True), ("loop_start", 0),
                         ("record", 1), ("step_end", 1),
                         ("record", 2), ("checkpoint", 2), ("step_end", 2),
                         ("record", 3), ("checkpoint", 3), ("step_end", 3), ("fit_end",)]
    assert '"extra": 1.0' in (tmp_path / "metrics.jsonl").read_text()


def test_an_exception_at_step_end_leaves_the_last_checkpoint_whole_and_resumable(tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    _trainer(full).fit()
    with pytest.raises(RuntimeError, match="boom"):
        _trainer(cut, [Boom()]).fit()                 # after step 3; the checkpoint of step 2 stays
    ck = cut / "checkpoints"
    assert sorted(p.name for p in ck.iterdir()) == ["last"]
    assert '"step": 2' in (ck / "last" / "state.json").read_text()
    rec = Recorder()
    _trainer(cut, [rec]).fit()
    assert rec.calls[1] == ("loop_start", 2)
    a = load_file(str(full / "checkpoints" / "last" / "model.safetensors"))
    b = load_file(str(ck / "last" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
