"""MedMNIST-format ``.npz``: ``{train,val,test}_images`` (N, H, W[, 3]) or (N, D, H, W) and ``*_labels`` (N, K)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from mmfm.data.io.checks import check_file, check_promised_size, check_shape
from mmfm.errors import InputFileError

SPLITS = ("train", "val", "test")


def _check_members(p: Path) -> None:
    """Each array's header (shape, dtype) against the bytes its zip member holds, before loading any."""
    try:
        with zipfile.ZipFile(p) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                        np.lib.format.read_array_header_2_0
                    shape, _, dtype = read(f)
                    header = f.tell()
                if dtype.hasobject:
                    raise InputFileError(p, f"array {info.filename} holds Python objects",
                                         "mmfm reads numeric arrays only (no pickles)")
                if len(shape) > 1:
                    check_shape(p, shape[1:], f"'{info.filename[:-4]}' sample")
                promised = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
                check_promised_size(p, header + promised, info.file_size, f"in member {info.filename}")
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise InputFileError(p, f"cannot read as .npz ({type(e).__name__}: {e})", "the file is truncated") from None


def read_medmnist_npz(path: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(images, labels)`` of one split. images: (N, C, *spatial) float32 in 0-255; labels: (N, K) int."""
    p = check_file(path)
    _check_members(p)
    try:
        with np.load(p, allow_pickle=False) as z:
            keys = set(z.files)
            ik, lk = f"{split}_images", f"{split}_labels"
            if ik not in keys or lk not in keys:
                raise InputFileError(p, f"has no '{ik}'/'{lk}' arrays (found: {sorted(keys)})",
                                     "a MedMNIST file has train_/val_/test_images and _labels")
            images, labels = z[ik], z[lk]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, MemoryError) as e:
        raise InputFileError(p, f"cannot read as .npz ({type(e).__name__}: {e})", "the file is truncated") from None
    if len(images) != len(labels):
        raise InputFileError(p, f"{split}: {len(images)} images but {len(labels)} labels")
    images = images.astype(np.float32)
    # 2D grey (N,H,W) -> (N,1,H,W); 2D RGB (N,H,W,3) -> (N,3,H,W); 3D (N,D,H,W) -> (N,1,D,H,W)
    if images.ndim == 4 and images.shape[-1] == 3:
        images = np.moveaxis(images, -1, 1)
    else:
        images = images[:, None]
    width = int(np.prod(labels.shape[1:])) if labels.ndim > 1 else 1    # an empty split keeps its label width
    return images, labels.reshape(len(labels), width).astype(np.int64)
