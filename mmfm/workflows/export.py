"""`mmfm zoo export MODEL --format onnx OUT`: a promptable model (LiteMedSAM or a promptable training run) as ONNX
graphs other tools run (3D Slicer, OHIF plug-ins): the image encoder, the prompt encoder + mask decoder, and a
JSON with their inputs and outputs, the preprocessing and each file's SHA-256
(:func:`mmfm.tasks.promptable_onnx.export_onnx`).

OUT is a new or empty folder, or one this command wrote before (replaced with ``overwrite``); it is built beside
OUT and moved into place whole, so a failed export leaves nothing that looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from mmfm.errors import ConfigError
from mmfm.workflows.outputs import check_writable

FORMATS = ("onnx",)


def export_model(model: str, out: str | Path, fmt: str = "onnx", int8: bool = False, overwrite: bool = False
                 ) -> dict[str, Any]:
    """Export ``model`` (``litemedsam`` or a promptable run folder) to the folder ``out``; return the manifest."""
    from mmfm.tasks.promptable_onnx import MANIFEST, WRITTEN_BY, export_onnx, onnxruntime
    from mmfm.workflows.segment import load_model

    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt}: mmfm exports promptable models as {', '.join(FORMATS)}",
                          "use --format onnx")
    out = Path(out)
    check_writable(out)
    if out.exists():
        if not out.is_dir():
            raise ConfigError(f"{out} exists and is a file; mmfm does not overwrite it", "give a new folder as OUT")
        if any(out.iterdir()):
            try:
                ours = json.loads((out / MANIFEST).read_text()).get("written_by") == WRITTEN_BY
            except (OSError, ValueError, AttributeError):
                ours = False
            if not ours:
                raise ConfigError(f"{out} is not empty and was not written by mmfm zoo export; nothing was changed",
                                  "give a new or empty folder as OUT")
            if not overwrite:
                raise ConfigError(f"{out} holds an earlier export", "add --overwrite to replace it, or choose "
                                                                      "another OUT")
    onnxruntime()                                   # the check the graphs are run with; fail before the export
    net, facts, _ = load_model(model)
    from mmfm.tasks.promptable import for_inference

    tmp = out.with_name(f"{out.name}.partial-{os.getpid()}")
    tmp.mkdir(parents=True)
    try:
        manifest = export_onnx(for_inference(net), tmp, int8=int8, source=facts)
        if out.exists():
            shutil.rmtree(out)                      # empty, or our own earlier export (checked above)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest
