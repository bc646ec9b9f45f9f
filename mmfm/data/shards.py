"""WebDataset shards for corpora larger than memory: ``mmfm data shard`` writes them, every command streams them.

A shard folder holds ``<split>/<split>-NNNNNN.tar`` (WebDataset: one ``<key>.image.npy`` [+ ``<key>.mask.npy``]
+ ``<key>.json`` per sample, written by ``webdataset.ShardWriter``), ``shards.json`` (the index: every shard with
its sample count, bytes and SHA-256, the preprocessing the items went through, what the items carry) and the
data card (``card.json``, ``card.md``) of the source. Items are stored preprocessed (preset, channels, spacing,
size), so reading them costs no decoding of DICOM or NIfTI.

Reading (:class:`ShardDataset`) streams: shards are split across DDP ranks and then across DataLoader workers
(``webdataset.split_by_node`` / ``split_by_worker``), each shard is read by exactly one worker of one rank, so every
sample is seen once per pass; shard order and a buffer of samples are shuffled per epoch from the seed. Only the
shuffle buffer is in memory. A shard whose size differs from the index (truncated, replaced) is refused before
training, naming it; ``mmfm data shard --verify`` checks every SHA-256.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from mmfm.data import spec
from mmfm.data.card import card_markdown, user_card
from mmfm.data.shard_reader import INDEX, ShardDataset, _count, read_index, shard_path, verify_shards
from mmfm.data.sources.fetch import sha256
from mmfm.errors import ConfigError

__all__ = ["INDEX", "ShardDataset", "read_index", "shard_path", "verify_shards", "write_shards"]


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def write_shards(data: Any, out: str | Path, shard_size: int = 1000, progress: bool = True) -> dict[str, Any]:
    """Preprocess every split of ``data`` (the one data spec) into WebDataset shards under ``out``."""
    import webdataset as wds
    from tqdm import tqdm


    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / INDEX).exists():
        raise ConfigError(f"{out} exists and is not a shard folder mmfm wrote", "give a new or empty folder")
    if shard_size < 1:
        raise ConfigError(f"shard size {shard_size} must be at least 1")
    every = spec.all_samples(data)
    has_labels = every.labels is not None
    has_text = bool(every.records) and "report" in every.records[0]
    index: dict[str, Any] = {"format": "mmfm-webdataset-1", "source": spec.name(data), "splits": {},
                             "carries": ["image", "patient", "position"] + (["label"] if has_labels else [])
                             + (["text"] if has_text else []), "class_names": every.class_names}
    for split in spec.SPLITS:
        try:
            ds = spec.sample_dataset(data, split, label=has_labels, text=has_text, extras=True)
        except ConfigError:
            index["splits"][split] = []
            continue
        index["preprocessing"] = ds.preprocessing()
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob(f"{split}-*.tar"):   # only mmfm's own shards (the index proves the folder is ours)
            old.unlink()
        with wds.ShardWriter(str(folder / f"{split}-%06d.tar"), maxcount=shard_size, verbose=0) as sink:
            for i in tqdm(range(len(ds)), desc=f"shard {split}", disable=not progress):
                item = ds[i]
                meta = {"patient": int(item["patient"]), "position": float(item["position"])}
                if "label" in item:
                    meta["label"] = int(item["label"])
                if "text" in item:
                    meta["text"] = item["text"]
                sample = {"__key__": f"{split}{i:09d}", "image.npy": _npy(item["image"].numpy()),
                          "json": json.dumps(meta).encode()}
                if "mask" in item:
                    sample["mask.npy"] = _npy(item["mask"].numpy())
                sink.write(sample)
        shards = []
        for tar in sorted(folder.glob(f"{split}-*.tar")):
            n = _count(tar)
            shards.append({"file": f"{split}/{tar.name}", "samples": n, "bytes": tar.stat().st_size,
                           "sha256": sha256(tar)})
        index["splits"][split] = shards
    card = user_card(data)
    (out / "card.json").write_text(json.dumps(card, indent=1))
    (out / "card.md").write_text(card_markdown(card))
    tmp = out / (INDEX + ".tmp")
    tmp.write_text(json.dumps(index, indent=1))
    tmp.replace(out / INDEX)   # the index is written last: a folder without it is not a finished shard set
    return index
