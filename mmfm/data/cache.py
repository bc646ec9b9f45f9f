"""A disk cache of preprocessed items, keyed by the preprocessing and by the identity of every file an item reads.

This is MONAI's ``PersistentDataset`` idea (hash the item, store the result of the deterministic transforms) with
three differences that are why it is written here:

* items are stored as ``.npz`` without pickle (MONAI stores them with ``torch.save``, and loading a pickle can run
  code);
* an item's key holds the resolved path, size and ``mtime_ns`` of *every* file it reads (:func:`files_read`: a
  MetaImage/NRRD header and its detached data, every file of a DICOM series folder, label maps), so an edited,
  replaced or rewritten file is read again instead of served stale, and two datasets whose roots are written the
  same way (relative paths) never share items; the cache folder's key holds every preprocessing option;
* every entry carries a manifest (each array's shape, dtype and SHA-256) that is checked on load, together with
  the caller's own check of the shapes it expects; a truncated, damaged or altered entry is deleted and rebuilt,
  never used and never a crash.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = 2           # what an entry holds; a new format never reads the old one's entries
MANIFEST = "__manifest__"


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _detached(header: Path) -> list[Path]:
    """The data file(s) a ``.mhd``/``.nhdr`` header names (the reader's own parsing), else every other file
    beside the header (a superset: an edit there rebuilds more items than needed, never fewer)."""
    try:
        from mmfm.data.io.itk import read_itk_header

        return list(read_itk_header(header).data_files)
    except Exception:  # noqa: BLE001  (a header the reader refuses: reading the item will say why)
        return [p for p in header.parent.iterdir() if p.is_file() and p != header]


def _tree(folder: Path) -> list[os.DirEntry]:
    """Every file under ``folder``, as a DICOM series read takes them (``rglob``: links to files followed, links to
    folders not); ``os.scandir`` because this runs for every item (pathlib's rglob + resolve cost ~20 ms per item
    on a 100-slice series)."""
    out, stack = [], [str(folder)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for e in entries:
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                elif e.is_file():
                    out.append(e)
    return sorted(out, key=lambda e: e.path)


def files_read(path: Path) -> list[Path]:
    """Every file reading ``path`` touches: a folder's files (a DICOM series, read recursively), a detached
    header's data file(s), or the file itself."""
    if path.is_dir():
        return [Path(e.path) for e in _tree(path)]
    if path.suffix.lower() in (".mhd", ".nhdr"):
        return [path, *_detached(path)]
    return [path]


def file_identity(paths: Iterable[Path]) -> list[list[Any]] | None:
    """[resolved path, size, mtime_ns] of every file the paths read (a link: also its target); None when one is
    missing (not cacheable: the reader reports it)."""
    out: list[list[Any]] = []
    try:
        for p in paths:
            p = Path(p).resolve()
            if p.is_dir():
                for e in _tree(p):
                    st = e.stat()
                    out.append([e.path, st.st_size, st.st_mtime_ns, os.readlink(e.path) if e.is_symlink() else ""])
                continue
            for f in files_read(p):
                f = f.resolve()
                st = f.stat()
                out.append([str(f), st.st_size, st.st_mtime_ns, ""])
    except OSError:
        return None
    return out


class PreprocessedCache:
    """``get``/``put`` of ``{name: array}`` items under ``folder/<hash of preprocessing>/``."""

    def __init__(self, folder: str | Path, preprocessing: dict[str, Any]) -> None:
        options = {"format": FORMAT, **preprocessing}
        key = hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.folder = Path(folder) / key
        self.folder.mkdir(parents=True, exist_ok=True)
        marker = self.folder / "preprocessing.json"
        if not marker.exists():
            marker.write_text(json.dumps(options, indent=1, default=str))
        self.hits = self.misses = self.rebuilt = 0

    def _path(self, item_key: str) -> Path:
        # the file name is a hash: no file name or path of the user's (possibly identifying) ends up in the cache
        h = hashlib.sha256(item_key.encode()).hexdigest()
        return self.folder / h[:2] / f"{h}.npz"

    def get(self, item_key: str, check: Callable[[dict[str, np.ndarray]], str | None] | None = None
            ) -> dict[str, np.ndarray] | None:
        """The item, or None (a miss) when it is not there or fails a check: the manifest (names, shapes, dtypes,
        checksums) or ``check`` (the caller's expected shapes: a reason string when wrong)."""
        p = self._path(item_key)
        if not p.exists():
            self.misses += 1
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                out = {k: z[k] for k in z.files}
            bad = self._verify(out) or (check(out) if check is not None else None)
        except Exception as e:  # noqa: BLE001  (a truncated zip raises BadZipFile, zlib.error, EOFError, ...)
            bad = type(e).__name__
        if bad:
            p.unlink(missing_ok=True)   # rebuilt by the caller's put, never trusted
            self.misses += 1
            self.rebuilt += 1
            return None
        out.pop(MANIFEST)
        self.hits += 1
        return out

    @staticmethod
    def _verify(arrays: dict[str, np.ndarray]) -> str | None:
        if MANIFEST not in arrays:
            return "no manifest"
        manifest = json.loads(bytes(arrays[MANIFEST]).decode())
        names = set(arrays) - {MANIFEST}
        if set(manifest) != names:
            return "arrays differ from the manifest"
        for k, m in manifest.items():
            a = arrays[k]
            if list(a.shape) != m["shape"] or a.dtype.str != m["dtype"] or _digest(a) != m["sha256"]:
                return f"{k} differs from the manifest"
        return None

    def put(self, item_key: str, arrays: dict[str, np.ndarray]) -> None:
        arrays = {k: np.asarray(v) for k, v in arrays.items()}
        named: dict[str, Any] = arrays   # np.savez's stubs type **kwds like its allow_pickle flag
        manifest = {k: {"shape": list(a.shape), "dtype": a.dtype.str, "sha256": _digest(a)} for k, a in arrays.items()}
        arrays[MANIFEST] = np.frombuffer(json.dumps(manifest).encode(), np.uint8)
        p = self._path(item_key)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **named)
            os.replace(tmp, p)   # atomic: a reader (another worker) sees the whole item or none
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
