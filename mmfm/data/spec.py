"""One data spec for every command: ``data.dataset`` + ``data.root`` (+ options) -> the datasets a command needs.

Every workflow (`pretrain`, `train`, `evaluate`, `zeroshot`, `retrieve`, `report-gen`) asks this module, never a
loader directly, so a user's folder, a catalog dataset and the built-in ``mini`` corpus go through the same path:

* :func:`unlabelled`  images (+ ``patient``, ``position``) for the proxy tasks of vision pretraining;
* :func:`labelled`    images with a class (``classification``) or a mask (``segmentation``) and the class names;
* :func:`pairs`       images with their report or caption (``text``) for the image-text objectives and tasks;
* :func:`reports`     report sections alone for the report-side objectives and section matching.

Catalog and folder data are split by patient (or by image: every slice of a volume stays in one split) 70/15/15
with ``data.split_seed``; volumes are sliced along their last axis when ``data.size`` is 2D.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mmfm.data.catalog.entries import get_entry
from mmfm.data.catalog.loaders import SampleList, load_dataset
from mmfm.data.datasets import ArrayDataset, PairDataset, ReportDataset, SampleDataset
from mmfm.data.presets import Preset, get_preset
from mmfm.data.sources.mini_reader import class_names as mini_class_names
from mmfm.data.sources.mini_reader import load_mini_arrays, mini_root, report_rows
from mmfm.data.splits import group_split
from mmfm.errors import ConfigError, InputFileError

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
        print(f"[mmfm] {message}", flush=True)


def is_mini(data: Any) -> bool:
    return data.dataset == "mini"


def is_shards(data: Any) -> bool:
    return data.dataset == "shards"


MINI_FILES = ("slices2d.npz", "patches2d.npz", "crops3d.npz", "reports.jsonl")


def dataset_at(root: str | Path | None) -> str:
    """The ``data.dataset`` a root holds when the user names none (``--data-root DIR`` without ``--dataset``):
    ``mini`` without a root or for a built mini corpus (its card says so, or it holds the mini files),
    ``shards`` for a folder `mmfm data shard` wrote (its index), ``folder`` for any other directory. The one
    place this is decided, for every command that takes ``--data-root``."""
    if root is None:
        return "mini"
    p = Path(root)
    if not p.is_dir():
        raise InputFileError(p, "is not a folder" if p.exists() else "not found",
                             "give --data-root a folder of images (with labels.csv for labels), a mini corpus or "
                             "shards; or name the dataset with --dataset")
    try:
        card = json.loads((p / "card.json").read_text())
    except (OSError, ValueError):
        card = None
    if (isinstance(card, dict) and card.get("name") == "mini") or any((p / f).is_file() for f in MINI_FILES):
        return "mini"
    from mmfm.data.shards import INDEX

    return "shards" if (p / INDEX).is_file() else "folder"


def _shards(data: Any, split: str, train: bool | None = None, **kw: Any) -> Any:
    """A split of a shard folder; ``train``: streamed for training (shuffled, split across ranks), else read in
    the order the shards were written, which is the source's order (``None``: training when ``split`` is
    ``data.train_split``)."""
    from mmfm.data.shards import ShardDataset

    if data.root is None:
        raise ConfigError("data.root is required for shards", "point it at a folder `mmfm data shard` wrote")
    train = split == data.train_split if train is None else train
    return ShardDataset(data.root, split, shuffle=train, seed=data.split_seed, split_ranks=train, **kw)


def name(data: Any) -> str:
    """How results name the data: ``mini/<set>``, the catalog name (``folder`` for a user's directory), or
    ``shards:<source>``."""
    if is_shards(data):
        from mmfm.data.shards import read_index

        return f"shards:{read_index(data.root).get('source', '?')}"
    return f"mini/{data.set}" if is_mini(data) else data.dataset


# -- the built-in corpus ---------------------------------------------------------------------------------------
def _mini_root(data: Any) -> Path:
    return Path(data.root) if data.root else mini_root()


def grid_size(data: Any) -> list[int]:
    """The grid items are resized to: ``data.size``, or 64x64 when it is not set (files; volumes are then sliced).
    mini is used at its stored size unless ``data.size`` is set (:func:`mini_arrays`)."""
    return [int(v) for v in data.size] or list(DEFAULT_SIZE)


def mini_arrays(data: Any, split: str) -> dict[str, np.ndarray]:
    """Arrays of one split of mini set ``data.set``, restricted to ``data.options`` (field == value), resized to
    ``data.size`` when it is set (images: area interpolation, masks: nearest, MONAI ``Resize`` as for files)."""
    d = load_mini_arrays(_mini_root(data), data.set, split)
    keep = np.ones(len(d["split"]), bool)
    for key, value in data.options.items():
        if key not in d:
            raise ConfigError(f"data.options.{key}: mini/{data.set} has no field '{key}'", f"fields: {sorted(d)}")
        keep &= d[key] == value
    d = {k: v[keep] for k, v in d.items()}
    size = [int(v) for v in data.size]
    if size and "image" in d and list(d["image"].shape[2:]) != size:
        if len(size) != d["image"].ndim - 2:
            raise ConfigError(f"data.size {size} is {len(size)}D but mini/{data.set} is {d['image'].ndim - 2}D",
                              f"set data.size to {d['image'].ndim - 2} numbers, or leave it unset (stored size "
                              f"{list(d['image'].shape[2:])})")
        from monai.transforms import Resize

        flat = lambda a: a.reshape(-1, *a.shape[2:])   # noqa: E731  (N, C, *s) -> (N*C, *s): Resize is per channel
        n, c = d["image"].shape[:2]
        img = Resize(size, mode="area" if len(size) == 2 else "trilinear")(flat(d["image"].astype(np.float32)))
        d["image"] = np.asarray(img, np.float32).reshape(n, c, *size)
        if "mask" in d:
            m = Resize(size, mode="nearest")(flat(d["mask"]).astype(np.float32))
            d["mask"] = np.asarray(m).astype(d["mask"].dtype).reshape(n, -1, *size)
    return d


def mini_card(data: Any) -> dict[str, Any]:
    return json.loads((_mini_root(data) / "card.json").read_text())


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


# -- what each command needs -----------------------------------------------------------------------------------
def pretraining_split(data: Any) -> str:
    """The split vision pretraining reads: ``all`` for a folder without labels and without a splits file (nothing
    is held out for a later evaluation on it, so every image is used, said in the log), else ``data.train_split``."""
    if data.dataset == "folder" and not data.splits_file and data.train_split == "train":
        every = all_samples(data)
        if every.labels is None:
            say(f"pretraining on all {len(every)} images or volumes of the folder: it has no labels.csv, so no "
                "validation or test images are held out (to hold some out, list the splits in data.splits_file)")
            return "all"
    return data.train_split


def unlabelled(data: Any, split: str = "train") -> ArrayDataset | SampleDataset:
    """Images with ``patient`` (int) and ``position`` (relative slice position) for MICLe/PCL."""
    if is_shards(data):
        return _shards(data, split, label=False)
    if not is_mini(data):
        return sample_dataset(data, split, extras=True, train=True)
    d = mini_arrays(data, split)
    patients, patient_idx = np.unique(d["patient_id"], return_inverse=True)
    pos = np.zeros(len(patient_idx), np.float32)
    for p in range(len(patients)):
        sel = patient_idx == p
        z = d["slice_index"][sel].astype(np.float32)
        pos[sel] = (z - z.min()) / max(float(z.max() - z.min()), 1.0)
    return ArrayDataset(d["image"], extras={"patient": patient_idx.astype(np.int64), "position": pos})


def labelled(data: Any, split: str, task: str, train: bool = False) -> tuple[Any, list[str]]:
    """(dataset, class names): ``{"image", "label"}`` for classification, ``{"image", "mask"}`` for segmentation."""
    if is_shards(data):   # evaluation reads the training split in order too: label budgets index it
        ds = _shards(data, split, train=train, label=task == "classification")
        return ds, ds.class_names if task == "classification" else []
    if not is_mini(data):
        ds = sample_dataset(data, split, label=task == "classification", train=train)
        names = ds.samples.class_names if task in ("classification", "detection") else []
        if task == "classification" and ds.labels is None and not names:
            raise ConfigError(f"{data.dataset} at data.root has no class labels",
                              "add a labels.csv (image,label) to the folder, or use `mmfm pretrain` for unlabelled "
                              "images")
        return ds, names
    d = mini_arrays(data, split)
    card = mini_card(data)
    if task == "classification":
        if data.label not in d:
            raise ConfigError(f"data.label '{data.label}' is not a label of mini/{data.set}",
                              f"labels: {list(card['sets'][data.set]['labels'])}")
        return ArrayDataset(d["image"], d[data.label]), card["sets"][data.set]["labels"][data.label]
    if "mask" not in d:
        raise ConfigError(f"mini/{data.set} has no masks", "use set slices2d or crops3d for segmentation")
    return ArrayDataset(d["image"], mask=d["mask"]), []


def class_names(data: Any) -> list[str]:
    if is_shards(data):
        from mmfm.data.shards import read_index

        return list(read_index(data.root).get("class_names") or [])
    if is_mini(data):
        return mini_class_names(_mini_root(data), data.set, data.label)
    return all_samples(data).class_names


def pairs(data: Any, split: str = "train") -> PairDataset | SampleDataset:
    """Image-text pairs: each image with its report or caption (and, for mini, its ``data.label`` class)."""
    if is_shards(data):
        return _shards(data, split, text=True)
    if not is_mini(data):
        ds = sample_dataset(data, split, text=True, train=split == data.train_split)
        texts = ds.texts
        if not any(t.strip() for t in texts):
            raise ConfigError(f"{data.dataset} at data.root has no report or caption text",
                              "image-text objectives need pairs: use image_text_csv, iu_xray or a CSV of reports")
        return ds
    d = mini_arrays(data, split)
    label = d[data.label] if data.label in d else None
    return PairDataset(d["image"], [str(c) for c in d["caption"]], label)


def reports(data: Any, split: str = "train") -> ReportDataset:
    """Reports with findings and impression (the sections the report-side objectives pair)."""
    if is_mini(data):
        return ReportDataset(report_rows(Path(data.root) if data.root else None, split,
                                         require=("findings", "impression")))
    every = all_samples(data)
    assign = assign_splits(data, every)
    rows = []
    for rec, a in zip(every.records, assign):
        if a != split:
            continue
        rep = rec.get("report")
        if rep is None:
            rep = every._read(rec).get("report")
        if rep is not None and rep.findings and rep.impression:
            rows.append({"findings": rep.findings, "impression": rep.impression})
    if not rows:
        raise ConfigError(f"{data.dataset}: no report of split '{split}' has both findings and impression",
                          "the report objectives pair sections: give reports with FINDINGS and IMPRESSION")
    return ReportDataset(rows)


def contract(data: Any, ds: Any) -> dict[str, Any]:
    """What a model trained on this data expects as input; stored with its weights."""
    if is_shards(data):
        from mmfm.data.shards import read_index

        return {**read_index(data.root).get("preprocessing", {}), "applied": "when the shards were written",
                "data": name(data)}
    if is_mini(data):
        card = mini_card(data)
        shape = list(card["sets"][data.set]["shape"])
        return {"presets": card.get("presets", {}), "applied": "when the mini corpus was built",
                "shape": shape[:1] + [int(v) for v in data.size] if data.size else shape, "data": name(data)}
    return {"presets": {m: p.to_dict() for m, p in presets(data).items()}, "modalities": list(data.modalities),
            "size": grid_size(data), "spacing": list(data.spacing), "channels": data.channels,
            "applied": "by mmfm.data.datasets.SampleDataset", "data": name(data)}
