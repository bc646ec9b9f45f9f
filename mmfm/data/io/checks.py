"""File checks shared by every reader: exists, is a file, is not empty; sizes promised by a header against what
the file holds and the pixel budget of the caller, before anything is decoded."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import numpy as np

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


# deflate (gzip, zlib) expands at most about 1032 to 1: a header promising more than that from the compressed bytes
# present is crafted or truncated, whatever the trailer says
DEFLATE_MAX_RATIO = 1032


def memory_limit() -> int:
    """Bytes of physical memory: a promise beyond it cannot be honoured whatever the compression."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 1 << 40


# A caller that reads files from strangers (``mmfm serve``) sets a tighter budget than the machine's memory: the
# readers check the pixel count every header declares against it before anything is decoded (a 79 KB PNG can
# declare 650 MB of pixels). A context variable, so that a budget set in one worker thread holds for that thread.
_BUDGET: ContextVar[tuple[int, int] | None] = ContextVar("mmfm_voxel_budget", default=None)


@contextmanager
def voxel_budget(pixels_2d: int, voxels_3d: int) -> Iterator[None]:
    """Within this block every reader refuses a 2D image of more than ``pixels_2d`` pixels or a volume of more than
    ``voxels_3d`` voxels (spatial positions; channels are at most 4 and multiply neither)."""
    token = _BUDGET.set((int(pixels_2d), int(voxels_3d)))
    try:
        yield
    finally:
        _BUDGET.reset(token)


def check_voxels(path: str | Path, spatial: tuple[int, ...] | list[int]) -> None:
    """Refuse a header whose spatial size is over the budget of :func:`voxel_budget` (no-op outside one)."""
    budget = _BUDGET.get()
    if budget is None:
        return
    dims = [int(s) for s in spatial if int(s) > 1] or [1]
    n = int(np.prod(dims, dtype=np.float64))
    limit = budget[0] if len(dims) <= 2 else budget[1]
    what = "pixels" if len(dims) <= 2 else "voxels"
    if n > limit:
        raise InputFileError(path, f"the header declares {' x '.join(map(str, dims))} = {n:,} {what}, over this "
                                   f"app's limit of {limit:,} {what}",
                             "crop or downsample the image first (the program reading it sets this limit)")
