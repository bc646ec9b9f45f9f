"""The one atomic JSON writer, shared by every layer (as ``errors.py`` and ``registry.py``): a results file, a
status file or the user's zoo is written whole under a temporary name and renamed, so a crash never leaves half a
file where a reader (a resumed run, ``mmfm report``, the zoo) would find it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` (parents created), whole or not at all; values JSON does not know
    (paths, numpy scalars) are written as their ``str``. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)
    return path


def write_jsonl_atomic(path: str | Path, rows: list[Any]) -> Path:
    """Write ``rows`` as JSON lines to ``path`` (parents created), whole or not at all. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r, default=str) + "\n" for r in rows))
    os.replace(tmp, path)
    return path
