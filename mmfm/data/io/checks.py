"""File checks shared by every reader: exists, is a file, is not empty."""

from __future__ import annotations

import os
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


def check_shape(path: str | Path, shape: tuple[int, ...] | list[int], what: str = "image") -> None:
    """Reject degenerate shapes (a zero-length or negative dimension) before anything is allocated."""
    dims = [int(s) for s in shape]
    if not dims or any(s <= 0 for s in dims):
        raise InputFileError(path, f"the header declares the {what} shape {tuple(dims)}, which holds no voxels",
                             "the file is damaged or was written wrongly; export it again")


def check_promised_size(path: str | Path, promised: int, available: int, how: str = "") -> None:
    """The header promises ``promised`` bytes of voxel data; the file holds ``available``. A header that promises
    more than the file holds is truncated or crafted: refuse before allocating (no MemoryError, no garbage)."""
    if promised > available:
        raise InputFileError(path, f"the header promises {promised:,} bytes of voxel data but the file holds only "
                                   f"{available:,}{' ' + how if how else ''}",
                             "the file is truncated or its header is corrupt; copy or export it again")


def memory_limit() -> int:
    """Bytes of physical memory: a promise beyond it cannot be honoured whatever the compression."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 1 << 40
