"""Reading WebDataset shards that `mmfm data shard` wrote (:mod:`mmfm.data.shards` writes them): the index
``shards.json`` checked as hostile input, shard paths confined to the folder, SHA-256 verification and the
streaming :class:`ShardDataset`. See :mod:`mmfm.data.shards` for the folder's format."""

from __future__ import annotations

import io
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmfm.data.sources.fetch import sha256
from mmfm.errors import ConfigError, InputFileError

INDEX = "shards.json"


def _count(tar: Path) -> int:
    import tarfile

    with tarfile.open(tar) as tf:
        return sum(1 for m in tf.getmembers() if m.name.endswith(".json"))


def read_index(root: str | Path) -> dict[str, Any]:
    """``shards.json``, checked: a downloaded shard folder is hostile input, and every shard it names is opened by
    WebDataset, which would run ``pipe:`` names as shell commands and fetch URLs. So every shard must be a relative
    path that resolves (symlinks followed) to a file inside the folder; see :func:`shard_path`."""
    root = Path(root)
    if not (root / INDEX).exists():
        raise InputFileError(root, f"no {INDEX}: not a finished shard folder",
                             "write shards with `mmfm data shard SRC OUT` (an interrupted run leaves no index)")
    bad = "copy the shard folder again, or write the shards again with `mmfm data shard`"
    if not _inside(root / INDEX, root):
        raise InputFileError(root, f"{INDEX} is a symlink to a file outside the shard folder", bad)
    try:
        index = json.loads((root / INDEX).read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise InputFileError(root, f"{INDEX} is not valid JSON ({type(e).__name__})", bad) from None
    splits = index.get("splits") if isinstance(index, dict) else None
    if not isinstance(splits, dict) or not all(isinstance(v, list) for v in splits.values()):
        raise InputFileError(root, f"{INDEX} has no 'splits' mapping each split to a list of shards", bad)
    for shards in splits.values():
        for s in shards:
            if not (isinstance(s, dict) and isinstance(s.get("file"), str) and isinstance(s.get("samples"), int)
                    and isinstance(s.get("bytes"), int) and isinstance(s.get("sha256", ""), str)):
                raise InputFileError(root, f"{INDEX} lists a shard without a file name, sample count and size", bad)
            shard_path(root, s["file"])
    return index


def _inside(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def shard_path(root: str | Path, name: str) -> Path:
    """The resolved path of the shard ``name`` listed in ``shards.json``, or a clear error: only a relative path of
    plain names (no ``:``, so no ``pipe:`` or URL scheme or drive, no ``..``, not absolute) that resolves inside
    ``root`` once symlinks are followed. The error quotes the name (shortened), never where a link points."""
    root = Path(root)
    shown = repr(name[:60])
    hint = "a shard folder lists its own files only (split/split-NNNNNN.tar): write the shards again"
    parts = name.replace("\\", "/").split("/")
    if (not name or len(name) > 255 or ":" in name or "\x00" in name or name.startswith(("/", "\\", "~"))
            or any(p in ("..", "") for p in parts)):
        raise InputFileError(root, f"{INDEX} lists the shard {shown}, which is not a relative path inside the "
                                   "folder (no URL, pipe:, absolute path or '..' is opened)", hint)
    path = root / name
    if not _inside(path, root):
        raise InputFileError(root, f"{INDEX} lists the shard {shown}, a symlink to a file outside the shard folder",
                             hint)
    return path.resolve()


def verify_shards(root: str | Path) -> list[str]:
    """Every shard's SHA-256 against the index; returns the shards that differ."""
    root = Path(root)
    bad = []
    for shards in read_index(root)["splits"].values():
        for s in shards:
            p = shard_path(root, s["file"])
            if not p.is_file() or sha256(p) != s["sha256"]:
                bad.append(s["file"])
    return bad


class ShardDataset(torch.utils.data.IterableDataset):
    """Stream one split of a shard folder: ``{"image", "mask"?, "label"?, "text"?, "patient", "position"}``."""

    reads_files = True

    def __init__(self, root: str | Path, split: str, shuffle: bool = True, seed: int = 0, buffer: int = 256,
                 label: bool = True, text: bool = False, split_ranks: bool = True, keys: bool = False) -> None:
        self.root, self.split, self.shuffle, self.seed, self.buffer = Path(root), split, shuffle, seed, buffer
        self.index = read_index(self.root)
        shards = self.index["splits"].get(split) or []
        if not shards:
            raise ConfigError(f"the shard folder {self.root} has no split '{split}'",
                              f"splits: {[s for s, v in self.index['splits'].items() if v]}")
        for s in shards:
            p, shown = shard_path(self.root, s["file"]), self.root / s["file"]
            if not p.is_file():
                raise InputFileError(shown, "shard listed in shards.json is missing", "copy the shard folder again")
            if p.stat().st_size != s["bytes"]:
                raise InputFileError(shown, f"shard holds {p.stat().st_size:,} bytes, the index says {s['bytes']:,} "
                                            "(truncated or replaced)", "copy it again, or write the shards again")
        self.shards, self.with_label, self.text, self.epoch = shards, label, text, 0
        self.split_ranks, self.keys = split_ranks, keys   # evaluation on one rank reads every shard
        self._cols: dict[str, list[Any]] | None = None
        self.class_names = list(self.index.get("class_names") or [])

    def __len__(self) -> int:
        return sum(s["samples"] for s in self.shards)

    def _columns(self) -> dict[str, list[Any]]:
        """Labels and texts of the split in stream order (one pass in this process, no shuffling), for commands
        that need them up front (a vocabulary, a retrieval gallery, label budgets). Evaluation streams in one
        process too (:func:`mmfm.data.batches.loader_workers`), so its order is this order."""
        if getattr(self, "_cols", None) is None:
            # every shard, in index order, in this process: the canonical order (a training stream's shuffled,
            # rank-split order is not needed for a vocabulary, and would differ between ranks)
            canonical = ShardDataset(self.root, self.split, shuffle=False, label=True, text=True, split_ranks=False)
            cols: dict[str, list[Any]] = {"label": [], "text": []}
            for item in canonical:
                if "label" in item:
                    cols["label"].append(int(item["label"]))
                if "text" in item:
                    cols["text"].append(item["text"])
            self._cols = cols
            return cols
        return self._cols  # type: ignore[return-value]  # set by the branch above

    @property
    def texts(self) -> list[str]:
        texts = self._columns()["text"]
        if not texts:
            raise ConfigError(f"the shards of {self.root} carry no texts", "write them from image-text pairs")
        return texts

    @property
    def labels(self) -> np.ndarray | None:
        lab = self._columns()["label"] if (self.with_label and not self.shuffle) else []   # order: eval only
        return np.asarray(lab, dtype=np.int64) if lab else None

    @property
    def label(self) -> torch.Tensor | None:
        lab = self.labels
        return None if lab is None else torch.from_numpy(lab)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _urls(self) -> list[str]:
        # absolute resolved paths checked by shard_path: WebDataset opens them as plain files (no scheme), and a
        # list is passed so no brace or environment expansion applies
        urls = [str(shard_path(self.root, s["file"])) for s in self.shards]
        if self.shuffle:
            random.Random(self.seed * 100_003 + self.epoch).shuffle(urls)
        return urls

    def __iter__(self) -> Iterator[dict[str, Any]]:
        import webdataset as wds

        nodes = wds.split_by_node if self.split_ranks else (lambda src, group=None: src)
        stream = wds.WebDataset(self._urls(), shardshuffle=False, nodesplitter=nodes,
                                workersplitter=wds.split_by_worker, empty_check=False)
        items = (self._decode(s) for s in self._guard(stream))
        if not self.shuffle:
            yield from items
            return
        info = torch.utils.data.get_worker_info()
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        rng = random.Random(hash((self.seed, self.epoch, rank, info.id if info else 0)))
        buf: list[dict[str, Any]] = []
        for item in items:
            buf.append(item)
            if len(buf) >= self.buffer:
                yield buf.pop(rng.randrange(len(buf)))
        rng.shuffle(buf)
        yield from buf

    def _guard(self, stream: Any) -> Iterator[dict[str, Any]]:
        try:
            yield from stream
        except Exception as e:  # tarfile / webdataset raise many types on a damaged shard
            raise InputFileError(self.root, f"a shard of split '{self.split}' cannot be read ({type(e).__name__}: "
                                            f"{str(e)[:200]})", "run `mmfm data shard --verify` on the folder; "
                                                                "write the shards again") from None

    def _decode(self, s: dict[str, Any]) -> dict[str, Any]:
        try:
            return self._decode_sample(s)
        except (KeyError, ValueError, TypeError, EOFError) as e:   # a hostile or damaged member: named, no traceback
            raise InputFileError(self.root, f"a sample of split '{self.split}' cannot be decoded ({type(e).__name__})",
                                 "run `mmfm data verify` on the folder; write the shards again") from None

    def _decode_sample(self, s: dict[str, Any]) -> dict[str, Any]:
        meta = json.loads(s["json"])
        out: dict[str, Any] = {"image": torch.from_numpy(np.load(io.BytesIO(s["image.npy"]), allow_pickle=False)),
                               "patient": torch.as_tensor(meta["patient"]),
                               "position": torch.as_tensor(meta["position"], dtype=torch.float32)}
        if "mask.npy" in s:
            out["mask"] = torch.from_numpy(np.load(io.BytesIO(s["mask.npy"]), allow_pickle=False)).long()
        if self.with_label and "label" in meta:
            out["label"] = torch.as_tensor(meta["label"])
        if self.text and "text" in meta:
            out["text"] = meta["text"]
        if self.keys:
            out["key"] = s["__key__"]
        return out
