"""Catalog datasets and folders (and a DICOMweb query, cached as a folder): every sample scanned once per process,
split 70/15/15 by patient (or by image: every slice of a volume stays in one split) with ``data.split_seed`` or as
``data.splits_file`` lists, volumes sliced along their last axis when ``data.size`` is 2D, and the
:class:`~mmfm.data.datasets.SampleDataset` that preprocesses each item. :mod:`mmfm.data.source` builds the catalog
source on these; :mod:`mmfm.data.card` counts with them."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from mmfm.data.catalog.entries import get_entry
from mmfm.data.catalog.loaders import SampleList, load_dataset
from mmfm.data.datasets import SampleDataset
from mmfm.data.presets import Preset, get_preset
from mmfm.data.splits import group_split
from mmfm.errors import ConfigError

log = logging.getLogger(__name__)

SPLITS = {"train": 0.7, "val": 0.15, "test": 0.15}
DEFAULT_SIZE = (64, 64)                 # files without data.size: 2D, volumes sliced
_LOADED: dict[str, SampleList] = {}     # one scan of a folder per process, whatever the number of splits
_SAID: set[str] = set()


def say(message: str) -> None:
    """Print a data decision once per process (on the main rank)."""
    import torch.distributed as dist

    main_rank = not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
    if message not in _SAID and main_rank:
        _SAID.add(message)
        log.info(message)


def grid_size(data: Any) -> list[int]:
    """The grid items are resized to: ``data.size``, or 64x64 when it is not set (files; volumes are then sliced).
    mini is used at its stored size unless ``data.size`` is set (:func:`mini_arrays`)."""
    return [int(v) for v in data.size] or list(DEFAULT_SIZE)



# -- catalog datasets and folders ------------------------------------------------------------------------------
def all_samples(data: Any) -> SampleList:
    """Every sample of a catalog dataset or folder (scanned once per process), before the split."""
    entry = get_entry(data.dataset)
    if data.root is None:
        raise ConfigError(f"data.root is required for {data.dataset}", f"how to get it: {entry.obtain}")
    options = dict(data.options)
    outside = bool(getattr(data, "allow_outside_root", False))   # a typed key of its own, for every layout
    key = json.dumps([entry.name, str(Path(data.root).resolve()), options, outside], sort_keys=True, default=str)
    if key not in _LOADED:
        samples = load_dataset(data.dataset, data.root, outside, **options)
        scan = samples.scan
        if scan.get("skipped"):
            say(f"{len(scan['skipped'])} file(s) in data.root could not be read and are skipped (listed by "
                f"`mmfm data prepare folder`), e.g. {scan['skipped'][0]['file']}: {scan['skipped'][0]['reason']}")
        if scan.get("unmasked"):
            say(f"{scan['masks']} image(s) of data.root have masks: it is read as a segmentation set, and the "
                f"{scan['unmasked']} image(s) without a mask are left out")
        _LOADED[key] = samples
    return _LOADED[key]


def split_samples(data: Any, split: str) -> SampleList:
    """One split of a catalog dataset or folder; volumes sliced when ``data.size`` is 2D."""
    entry = get_entry(data.dataset)
    if entry.layout == "medmnist_npz":
        if data.root is None:
            raise ConfigError(f"data.root is required for {data.dataset}", f"how to get it: {entry.obtain}")
        samples = load_dataset(data.dataset, data.root, split=split, **data.options)
    else:
        every = all_samples(data)
        if split == "all":
            samples = every
        else:
            assign = assign_splits(data, every)
            samples = every.subset([i for i, a in enumerate(assign) if a in split.split("+")])  # a+b: union
    grid = data.patch or grid_size(data)
    if len(grid) == 3 and samples.records and all("spatial_dims" in r for r in samples.records):
        flat = [i for i, r in enumerate(samples.records) if r["spatial_dims"] == 2]
        if flat:   # a 2D image cannot feed a 3D model: left out, and said (a folder may mix both)
            say(f"{len(flat)} 2D image(s) of {data.dataset} are left out: data.{'patch' if data.patch else 'size'} "
                "is 3D")
            samples = samples.subset([i for i in range(len(samples)) if i not in set(flat)])
    if len(grid) == 2 and len(samples) and _has_volumes(samples):
        samples = samples.slices(data.slice_stride)
        say(f"data.size is 2D: 3D volumes are used as 2D slices along their last axis (every "
            f"{data.slice_stride}{'st' if data.slice_stride == 1 else 'th'} slice; data.slice_stride), each slice "
            f"resized to {grid_size(data)}")
    return samples


def assign_splits(data: Any, every: SampleList) -> list[str]:
    """Each record's split: from ``data.splits_file`` when given (names of cases, or of files inside data.root;
    a record it does not list is in no split), else 70/15/15 by patient (or image) with ``data.split_seed``."""
    if data.splits_file:
        path = Path(data.splits_file)
        try:
            listed = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"data.splits_file {path}: cannot read it ({type(e).__name__})",
                              'write JSON like {"train": ["case01", ...], "val": [...], "test": [...]}') from None
        where = {str(n): s for s, names in listed.items() for n in names}
        keys = [str(r.get("case") or r.get("name") or "") for r in every.records]
        missing = sorted(set(where) - set(keys))
        if missing:
            raise ConfigError(f"data.splits_file names {len(missing)} case(s) not in data.root, e.g. {missing[:3]}",
                              f"names are case ids or paths inside data.root, e.g. {keys[:3]}")
        return [where.get(k, "") for k in keys]
    groups = [r.get("patient") or r.get("case") or str(i) for i, r in enumerate(every.records)]
    return group_split(groups, SPLITS, seed=data.split_seed)


def _has_volumes(samples: SampleList) -> bool:
    r = samples.records[0]
    if "spatial_dims" in r:
        return any(rec["spatial_dims"] == 3 for rec in samples.records)
    from mmfm.data.io import image_info

    path = r.get("path") or r.get("image")
    return path is not None and image_info(path, r.get("series_uid"))["spatial_dims"] == 3


def presets(data: Any) -> dict[str, Preset]:
    """``data.presets`` (modality -> preset name); images whose modality their format does not record get the
    modality-agnostic ``percentile`` preset unless the user names one (said in the log)."""
    chosen = {m: get_preset(p) for m, p in data.presets.items()}
    if "unknown" not in chosen:
        chosen["unknown"] = get_preset("percentile")
    return chosen


def sample_dataset(data: Any, split: str, *, label: bool = False, text: bool = False, extras: bool = False,
                   train: bool = False) -> SampleDataset:
    samples = split_samples(data, split)
    if len(samples) == 0:
        raise ConfigError(f"{data.dataset}: split '{split}' is empty ({len(all_samples(data))} samples in all)",
                          "add data, or evaluate on fewer splits (data.eval_splits)")
    named = data.options.get("modality") or data.options.get("modality_columns")
    if not data.presets.get("unknown") and not named:
        say("images whose format does not record the modality (NIfTI, MetaImage, NRRD, PNG, ...) get the preset "
            "'percentile' (0.5-99.5th percentiles -> [0, 1]); set data.options.modality=CT (or data.presets."
            "unknown=<preset>) to use a modality's own")
    channels = data.channels
    counts = {r["channels"] for r in samples.records if "channels" in r}
    if not channels and len(counts) > 1:
        channels = 1
        say(f"the images hold {sorted(counts)} channels: all are brought to 1 (colour -> luminance); set "
            "data.channels=3 to keep colour (grey is then repeated)")
    ds = SampleDataset(samples, data.modalities, grid_size(data), data.label if label else None, presets(data),
                       channels=channels, spacing=data.spacing, text=text, extras=extras,
                       cache=data.cache or None, skip_unreadable=train, patch=data.patch, random_patches=train,
                       patches_per_volume=data.patches_per_volume, missing=data.missing_modalities,
                       drop=data.drop_modalities)
    return ds
