"""One data-source interface: what a command may ask of the data it reads, whatever kind it is.

:func:`source` turns a data spec (``data.dataset`` + ``data.root`` + options) into a :class:`DataSource`, the one
place that looks at the kind: the built-in ``mini`` corpus (:class:`MiniSource`), a shard folder `mmfm data shard`
wrote (:class:`ShardSource`) and every catalog layout, a user's folder and a DICOMweb query (cached as a folder by
the config, :func:`mmfm.workflows.config.load_config`) (:class:`CatalogSource`). Commands and :mod:`mmfm.data.spec`
ask the source's properties (:attr:`~DataSource.preprocessed`, :attr:`~DataSource.streamed`, ...) and methods
(samples per split, class names, the data card, the preprocessing contract, the datasets), never which kind it is.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np

from mmfm.data import catalog_data as cat
from mmfm.data.card import user_card
from mmfm.data.catalog.entries import get_entry
from mmfm.data.datasets import ArrayDataset, PairDataset, ReportDataset, SampleDataset
from mmfm.data.io.npz import read_medmnist_npz
from mmfm.data.samplelist import SampleList
from mmfm.data.shard_reader import INDEX, ShardDataset, read_index
from mmfm.data.sources.mini_reader import class_names as mini_class_names
from mmfm.data.sources.mini_reader import load_mini_arrays, mini_root, report_rows
from mmfm.errors import ConfigError, InputFileError

MINI_FILES = ("slices2d.npz", "patches2d.npz", "crops3d.npz", "reports.jsonl")


class DataSource(Protocol):
    """What every kind of data answers. ``data``: the data spec it was made from.

    * ``name``: how results name the data (``mini/<set>``, the catalog name, ``folder``, ``shards:<source>``);
    * ``preprocessed``: items arrive already preprocessed at the source's own size and spacing (a built corpus,
      shards), so a command does not bring them to an encoder's grid; else they are preprocessed as read, at
      ``data.size``/``data.patch`` and ``data.spacing`` (:meth:`contract` says which);
    * ``streamed``: a stream without random access (no label budgets for fine-tuning, no split into sites);
    * ``fixed_splits``: the files fix the splits (:meth:`split_sizes` counts them without scanning images);
    * ``synthetic_text``: the texts are generated from labels (said in every report; real reports are a set
      of their own, ``text_only``);
    * ``text_only``: the data holds reports alone, no images.
    """

    data: Any

    @property
    def name(self) -> str: ...
    @property
    def preprocessed(self) -> bool: ...
    @property
    def streamed(self) -> bool: ...
    @property
    def fixed_splits(self) -> bool: ...
    @property
    def synthetic_text(self) -> bool: ...
    @property
    def text_only(self) -> bool: ...

    def split_sizes(self, parts: Iterable[str], field: str | None = None, used: Iterable[str] = ()
                    ) -> tuple[dict[str, int], dict[int, str]]: ...
    def pretraining_split(self) -> str: ...
    def class_names(self) -> list[str]: ...
    def card(self) -> dict[str, Any]: ...
    def contract(self, ds: Any = None) -> dict[str, Any]: ...
    def site_fields(self, split: str) -> dict[str, np.ndarray] | None: ...
    def unlabelled(self, split: str = "train") -> Any: ...
    def labelled(self, split: str, task: str, train: bool = False) -> tuple[Any, list[str]]: ...
    def pairs(self, split: str = "train") -> Any: ...
    def reports(self, split: str = "train") -> ReportDataset: ...


def source(data: Any) -> DataSource:
    """The :class:`DataSource` of a data spec: the one place that asks which kind of data it is."""
    if data.dataset == "mini":
        return MiniSource(data)
    if data.dataset == "shards":
        return ShardSource(data)
    return CatalogSource(data)


def recorded_card(data: dict[str, Any]) -> dict[str, Any] | None:
    """The data card of a run's recorded ``data`` section (its ``config.yaml`` read as plain YAML, so untrusted)
    for a source that keeps its card outside the run -- mini, under its root -- narrowed to the run's set; None
    for any other kind or a card that cannot be read (a run that wrote its own ``card.json`` does not need it)."""
    if data.get("dataset", "mini") != "mini":
        return None
    path = Path(str(data.get("root") or mini_root())) / "card.json"
    try:
        full = json.loads(path.read_text(errors="replace")) if path.is_file() else None
    except (OSError, ValueError):
        return None
    if not isinstance(full, dict):
        return None
    sets: dict[Any, Any] = full["sets"] if isinstance(full.get("sets"), dict) else {}
    chosen = sets.get(data.get("set")) if isinstance(data.get("set"), str) else None
    return {k: v for k, v in full.items() if k != "sets"} | (
        {"set": data.get("set"), "counts": chosen.get("counts") if isinstance(chosen, dict) else None}
        if data.get("set") else {})


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
    return "shards" if (p / INDEX).is_file() else "folder"


def _values(found: Any, values: dict[int, str], part: str) -> None:
    if found is not None and len(found):
        for v in np.unique(np.asarray(found)).astype(int).tolist():
            values.setdefault(int(v), part)


def _catalog_reports(data: Any, split: str) -> ReportDataset:
    every = cat.all_samples(data)
    assign = cat.assign_splits(data, every)
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


# -- the built-in corpus ---------------------------------------------------------------------------------------
def _mini_root(data: Any) -> Path:
    return Path(data.root) if data.root else mini_root()


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


class MiniSource:
    """The built-in ``mini`` corpus: set ``data.set``, arrays stored preprocessed (resized to ``data.size`` when it
    is set), splits fixed by the build, captions generated from the labels, the IU reports as set ``reports``."""

    preprocessed, streamed, fixed_splits, synthetic_text = True, False, True, True

    def __init__(self, data: Any) -> None:
        self.data = data

    @property
    def name(self) -> str:
        return f"mini/{self.data.set}"

    @property
    def text_only(self) -> bool:
        return self.data.set == "reports"

    def split_sizes(self, parts: Iterable[str], field: str | None = None, used: Iterable[str] = ()
                    ) -> tuple[dict[str, int], dict[int, str]]:
        """(samples per split, {value of ``field`` (``mask``, ``label``): first split holding it}) of the ``used``
        splits."""
        sizes: dict[str, int] = {}
        values: dict[int, str] = {}
        for part in sorted(parts):
            d = mini_arrays(self.data, part)
            sizes[part] = len(d.get("image", ()))
            found = d.get(field if field != "label" else self.data.label) if field and part in used else None
            _values(found, values, part)
        return sizes, values

    def pretraining_split(self) -> str:
        return self.data.train_split

    def class_names(self) -> list[str]:
        return mini_class_names(_mini_root(self.data), self.data.set, self.data.label)

    def card(self) -> dict[str, Any]:
        return mini_card(self.data)

    def contract(self, ds: Any = None) -> dict[str, Any]:
        card = mini_card(self.data)
        shape = list(card["sets"][self.data.set]["shape"])
        return {"presets": card.get("presets", {}), "applied": "when the mini corpus was built",
                "shape": shape[:1] + [int(v) for v in self.data.size] if self.data.size else shape,
                "data": self.name}

    def site_fields(self, split: str) -> dict[str, np.ndarray] | None:
        return mini_arrays(self.data, split)

    def unlabelled(self, split: str = "train") -> ArrayDataset:
        d = mini_arrays(self.data, split)
        patients, patient_idx = np.unique(d["patient_id"], return_inverse=True)
        pos = np.zeros(len(patient_idx), np.float32)
        for p in range(len(patients)):
            sel = patient_idx == p
            z = d["slice_index"][sel].astype(np.float32)
            pos[sel] = (z - z.min()) / max(float(z.max() - z.min()), 1.0)
        return ArrayDataset(d["image"], extras={"patient": patient_idx.astype(np.int64), "position": pos})

    def labelled(self, split: str, task: str, train: bool = False) -> tuple[Any, list[str]]:
        data = self.data
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

    def pairs(self, split: str = "train") -> PairDataset:
        d = mini_arrays(self.data, split)
        label = d[self.data.label] if self.data.label in d else None
        return PairDataset(d["image"], [str(c) for c in d["caption"]], label)

    def reports(self, split: str = "train") -> ReportDataset:
        return ReportDataset(report_rows(Path(self.data.root) if self.data.root else None, split,
                                         require=("findings", "impression")))


# -- shards ----------------------------------------------------------------------------------------------------
class ShardSource:
    """A shard folder `mmfm data shard` wrote: items stored preprocessed, streamed, splits fixed by the index."""

    preprocessed, streamed, fixed_splits, synthetic_text, text_only = True, True, True, False, False

    def __init__(self, data: Any) -> None:
        self.data = data

    @property
    def name(self) -> str:
        return f"shards:{read_index(self.data.root).get('source', '?')}"

    def _shards(self, split: str, train: bool | None = None, **kw: Any) -> ShardDataset:
        """A split; ``train``: streamed for training (shuffled, split across ranks), else read in the order the
        shards were written, which is the source's order (``None``: training when ``split`` is
        ``data.train_split``)."""
        data = self.data
        if data.root is None:
            raise ConfigError("data.root is required for shards", "point it at a folder `mmfm data shard` wrote")
        train = split == data.train_split if train is None else train
        return ShardDataset(data.root, split, shuffle=train, seed=data.split_seed, split_ranks=train, **kw)

    def split_sizes(self, parts: Iterable[str], field: str | None = None, used: Iterable[str] = ()
                    ) -> tuple[dict[str, int], dict[int, str]]:
        """Counts from ``shards.json``; no values: reading them would read every shard."""
        index = read_index(self.data.root)
        return {p: sum(int(s["samples"]) for s in index["splits"].get(p, [])) for p in sorted(parts)}, {}

    def pretraining_split(self) -> str:
        return self.data.train_split

    def class_names(self) -> list[str]:
        return list(read_index(self.data.root).get("class_names") or [])

    def card(self) -> dict[str, Any]:
        return json.loads((Path(self.data.root) / "card.json").read_text())

    def contract(self, ds: Any = None) -> dict[str, Any]:
        return {**read_index(self.data.root).get("preprocessing", {}), "applied": "when the shards were written",
                "data": self.name}

    def site_fields(self, split: str) -> dict[str, np.ndarray] | None:
        return None

    def unlabelled(self, split: str = "train") -> ShardDataset:
        return self._shards(split, label=False)

    def labelled(self, split: str, task: str, train: bool = False) -> tuple[Any, list[str]]:
        ds = self._shards(split, train=train, label=task == "classification")   # evaluation reads train in order
        return ds, ds.class_names if task == "classification" else []            # too: label budgets index it

    def pairs(self, split: str = "train") -> ShardDataset:
        return self._shards(split, text=True)

    def reports(self, split: str = "train") -> ReportDataset:
        return _catalog_reports(self.data, split)


# -- catalog datasets, folders (and DICOMweb queries, cached as folders) ----------------------------------------
class CatalogSource:
    """A catalog dataset or a user's folder: samples scanned once, split by patient (or as ``data.splits_file``
    lists; a MedMNIST file fixes its own), each item preprocessed as read at ``data.size`` and ``data.spacing``."""

    preprocessed, streamed, synthetic_text, text_only = False, False, False, False

    def __init__(self, data: Any) -> None:
        self.data = data

    @property
    def name(self) -> str:
        return self.data.dataset

    @property
    def fixed_splits(self) -> bool:
        return get_entry(self.data.dataset).layout in ("medmnist_npz",)

    def split_sizes(self, parts: Iterable[str], field: str | None = None, used: Iterable[str] = ()
                    ) -> tuple[dict[str, int], dict[int, str]]:
        """Per split: from the file for a MedMNIST ``.npz`` (a split the run does not use may be absent; values
        of single labels only), else the split of the scanned samples (no values)."""
        sizes: dict[str, int] = {}
        values: dict[int, str] = {}
        if not self.fixed_splits:
            assign = cat.assign_splits(self.data, cat.all_samples(self.data))
            return {p: sum(1 for a in assign if a == p) for p in sorted(parts)}, {}
        for part in sorted(parts):
            try:
                images, labels = read_medmnist_npz(Path(self.data.root), part)
            except InputFileError:
                if part in used:
                    raise
                continue
            sizes[part] = len(images)
            single = field == "label" and part in used and labels.ndim == 2 and labels.shape[1] == 1
            _values(labels if single else None, values, part)
        return sizes, values

    def pretraining_split(self) -> str:
        """``all`` for a folder without labels and without a splits file (nothing is held out for a later
        evaluation on it, so every image is used, said in the log), else ``data.train_split``."""
        data = self.data
        if data.dataset == "folder" and not data.splits_file and data.train_split == "train":
            every = cat.all_samples(data)
            if every.labels is None and not every.scan.get("captions"):   # pairs are split: retrieval holds out
                cat.say(f"pretraining on all {len(every)} images or volumes of the folder: it has no labels.csv, so "
                        "no validation or test images are held out (to hold some out, list the splits in "
                        "data.splits_file)")
                return "all"
        return data.train_split

    def class_names(self) -> list[str]:
        return cat.all_samples(self.data).class_names

    def card(self) -> dict[str, Any]:
        return user_card(self.data)

    def contract(self, ds: Any = None) -> dict[str, Any]:
        data = self.data
        return {"presets": {m: p.to_dict() for m, p in cat.presets(data).items()},
                "modalities": list(data.modalities), "size": cat.grid_size(data), "spacing": list(data.spacing),
                "channels": data.channels, "applied": "by mmfm.data.datasets.SampleDataset", "data": self.name}

    def site_fields(self, split: str) -> dict[str, np.ndarray] | None:
        return None

    def unlabelled(self, split: str = "train") -> SampleDataset:
        return cat.sample_dataset(self.data, split, extras=True, train=True)

    def labelled(self, split: str, task: str, train: bool = False) -> tuple[Any, list[str]]:
        data = self.data
        ds = cat.sample_dataset(data, split, label=task == "classification", train=train)
        names = cast(SampleList, ds.samples).class_names if task in ("classification", "detection") else []
        if task == "classification" and ds.labels is None and not names:
            raise ConfigError(f"{data.dataset} at data.root has no class labels",
                              "add a labels.csv (image,label) to the folder, or use `mmfm pretrain` for unlabelled "
                              "images")
        return ds, names

    def pairs(self, split: str = "train") -> SampleDataset:
        data = self.data
        ds = cat.sample_dataset(data, split, text=True, train=split == data.train_split)
        if not any(t.strip() for t in ds.texts):
            raise ConfigError(f"{data.dataset} at data.root has no report or caption text",
                              "image-text objectives need pairs: a folder with captions.csv (image,text), "
                              "image_text_csv, iu_xray or a CSV of reports")
        return ds

    def reports(self, split: str = "train") -> ReportDataset:
        return _catalog_reports(self.data, split)
