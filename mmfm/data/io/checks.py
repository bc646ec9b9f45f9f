"""File checks shared by every reader: exists, is a file, is not empty."""

from __future__ import annotations

from pathlib import Path

from mmfm.errors import InputFileError


def check_file(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise InputFileError(p, "file not found", "check the path (relative paths are taken from the current "
                                                   "directory or the dataset root)")
    if p.is_dir():
        raise InputFileError(p, "is a folder, expected a file")
    if p.stat().st_size == 0:
        raise InputFileError(p, "file is empty (0 bytes)", "the copy or download was probably interrupted; "
                                                            "copy the file again")
    return p
