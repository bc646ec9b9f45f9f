"""Fault injection for the tests: hard kills at chosen points of a run, from the test side (the library reads no
test switches). ``train_script.py`` passes :class:`CrashAfterStep` to its Trainer; a CLI run is wrapped:

    python -m tests.engine.faults crash-after-step N -- <mmfm arguments>    every Trainer the command builds
    python -m tests.engine.faults site-exit-round R -- <mmfm arguments>     a federated site dies as round R starts

and :func:`crash_in_save` kills a process between the two renames of its next checkpoint save that replaces one.
A kill is ``os._exit(137)``: no cleanup, no flushing, as a SIGKILL leaves a run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mmfm.engine.handlers import FitState, Handler

KILLED = 137


class CrashAfterStep(Handler):
    """Kill the process once step ``step`` is logged and, where due, checkpointed."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, fit: FitState) -> None:
        if fit.step + 1 == self.step:
            os._exit(KILLED)


def crash_in_save() -> None:
    """The next save that replaces a checkpoint dies after moving the old one aside, before the new one is in
    place (what ``recover_interrupted_save`` repairs)."""
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        src, dst = Path(src), Path(dst)
        if src.name.endswith(".tmp") and dst.with_name(dst.name + ".old").exists():
            os._exit(KILLED)
        return real(src, dst, *args, **kwargs)
    os.replace = replace


def _every_trainer(handler: Handler) -> None:
    from mmfm.engine import trainer

    own = trainer.feature_handlers
    trainer.feature_handlers = lambda t: [*own(t), handler]


def _site_exit(rnd: int) -> None:
    from mmfm.engine.federated import SiteClient

    train_round = SiteClient.train_round

    def dying(self, r, config):
        if r == rnd:
            os._exit(KILLED)
        return train_round(self, r, config)
    SiteClient.train_round = dying


def main(argv: list[str]) -> int:
    fault, value, sep, *args = argv
    assert sep == "--", "usage: python -m tests.engine.faults FAULT VALUE -- <mmfm arguments>"
    {"crash-after-step": lambda n: _every_trainer(CrashAfterStep(n)), "site-exit-round": _site_exit}[fault](int(value))
    from mmfm.cli.main import main as mmfm

    return mmfm(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
