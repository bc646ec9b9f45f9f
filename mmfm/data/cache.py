"""A disk cache of preprocessed items, keyed by the preprocessing and by each source file's identity.

This is MONAI's ``PersistentDataset`` idea (hash the item, store the result of the deterministic transforms) with
two differences that are why it is written here: items are stored as ``.npz`` without pickle (MONAI stores them
with ``torch.save``, and loading a pickle can run code), and the key includes each file's size and modification
time, so an edited or replaced file is read again instead of served stale. A change of presets, size, spacing or
channels changes the cache folder's key, so stale items are never mixed with fresh ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


class PreprocessedCache:
    def __init__(self, folder: str | Path, preprocessing: dict[str, Any]) -> None:
        key = hashlib.sha256(json.dumps(preprocessing, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.folder = Path(folder) / key
        self.folder.mkdir(parents=True, exist_ok=True)
        marker = self.folder / "preprocessing.json"
        if not marker.exists():
            marker.write_text(json.dumps(preprocessing, indent=1, default=str))
        self.hits = self.misses = 0

    def _path(self, item_key: str) -> Path:
        # the file name is a hash: no file name or path of the user's (possibly identifying) ends up in the cache
        h = hashlib.sha256(item_key.encode()).hexdigest()
        return self.folder / h[:2] / f"{h}.npz"

    def get(self, item_key: str) -> dict[str, np.ndarray] | None:
        p = self._path(item_key)
        if not p.exists():
            self.misses += 1
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                out = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError):  # a damaged cache file is rebuilt, never trusted
            p.unlink(missing_ok=True)
            self.misses += 1
            return None
        self.hits += 1
        return out

    def put(self, item_key: str, arrays: dict[str, np.ndarray]) -> None:
        p = self._path(item_key)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})
            os.replace(tmp, p)   # atomic: a reader (another worker) sees the whole item or none
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
