"""What an mmfm run folder holds: one owner for the question every command that takes a run asks (`mmfm serve`,
`mmfm segment --model`, `mmfm predict`, the app). A run records its kind when it is written (``run_info["kind"]``
in its last checkpoint's ``state.json``); runs written before that field existed are read from what they did
record (``task``, an ``assistant`` bridge, a ``dual`` image-text folder)."""

from __future__ import annotations

from pathlib import Path

from mmfm.engine.checkpoint import read_state

# the kinds a command may dispatch on (a supervised run's kind is its task's name)
KINDS = ("pretrain", "image_text", "assistant", "classification", "segmentation", "promptable_segmentation",
         "detection", "registration", "report_generation", "vqa")


def run_kind(run: str | Path) -> str | None:
    """The kind of the run folder ``run``, or None where it is not a finished mmfm run (no checkpoint)."""
    run = Path(run)
    if (run / "dual").is_dir() or (run / "dual.json").is_file():      # image-text pretraining's towers
        return "image_text"
    ckpt = run / "checkpoints" / "last"
    if not (ckpt / "state.json").is_file():
        return None
    info = read_state(ckpt).get("run_info") or {}
    if info.get("kind"):
        return str(info["kind"])
    if info.get("assistant"):                  # report-gen / vqa with a language-model bridge
        return "assistant"
    return str(info["task"]) if info.get("task") else "pretrain"
