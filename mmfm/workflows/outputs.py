"""Output files of one-shot commands (`mmfm segment`, `mmfm register`): checked before any work, written whole.

* :func:`check_writable` fails early (exit status 2) when ``--out`` cannot be written, before minutes of compute.
* :func:`check_ours` refuses to overwrite a file mmfm did not write (its JSON sidecar says who wrote it).
* :class:`Staged` writes every output under a temporary name beside its final one and renames them all only when
  every one was written, so an interrupted or failed run leaves nothing that looks complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import TracebackType

from mmfm.errors import ConfigError


def check_writable(path: Path, what: str = "--out") -> None:
    """``path`` (a file or folder to be created) can be written: its nearest existing ancestor is a writable
    folder."""
    probe = path.parent if not path.is_dir() else path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{what} {path}: {probe} is a file, not a folder", "choose an output path in a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path}: the folder {probe} cannot be written (permission denied)",
                          "choose an output path in a folder you can write")


def written_by(record: Path) -> str | None:
    """The command a JSON record says wrote it (``written_by``), or None."""
    if not record.is_file():
        return None
    try:
        return json.loads(record.read_text()).get("written_by")
    except (ValueError, OSError, AttributeError):
        return None


def check_ours(paths: list[Path], sidecar: Path, command: str, overwrite: bool) -> None:
    """Existing outputs may be replaced only when mmfm wrote them (``sidecar`` says so) and ``overwrite`` is set."""
    existing = [p for p in paths if p.exists()]
    if not existing:
        return
    if written_by(sidecar) != command:
        raise ConfigError(f"{existing[0]} exists and was not written by {command}; mmfm does not overwrite it",
                          "choose another --out")
    if not overwrite:
        raise ConfigError(f"{existing[0]} exists (from an earlier {command})",
                          "add --overwrite to replace it, or choose another --out")


class Staged:
    """``with Staged() as s: s.path(final)`` -> a temporary path to write ``final`` to; all renamed on success."""

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []

    def path(self, final: Path) -> Path:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.mmfm-partial")
        self._pending.append((tmp, final))
        return tmp

    def __enter__(self) -> Staged:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
                 ) -> None:
        if kind is None:
            for tmp, final in self._pending:
                os.replace(tmp, final)
        else:
            for tmp, _ in self._pending:
                tmp.unlink(missing_ok=True)
