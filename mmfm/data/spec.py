"""One data spec for every command: ``data.dataset`` + ``data.root`` (+ options) -> the datasets a command needs.

Every workflow (`pretrain`, `train`, `evaluate`, `zeroshot`, `retrieve`, `report-gen`) asks this module, never a
loader directly, so a user's folder, a catalog dataset and the built-in ``mini`` corpus go through the same path:

* :func:`unlabelled`  images (+ ``patient``, ``position``) for the proxy tasks of vision pretraining;
* :func:`labelled`    images with a class (``classification``) or a mask (``segmentation``) and the class names;
* :func:`pairs`       images with their report or caption (``text``) for the image-text objectives and tasks;
* :func:`reports`     report sections alone for the report-side objectives and section matching.

Each function asks the data's :class:`~mmfm.data.source.DataSource` (:func:`~mmfm.data.source.source`), never
which kind of data it is. Catalog and folder data are split by patient (or by image: every slice of a volume stays
in one split) 70/15/15 with ``data.split_seed``; volumes are sliced along their last axis when ``data.size`` is 2D.
"""

from __future__ import annotations

from typing import Any

from mmfm.data.catalog_data import (  # noqa: F401  (the data spec's helpers, re-exported for commands and tests)
    _LOADED,
    _SAID,
    DEFAULT_SIZE,
    SPLITS,
    all_samples,
    assign_splits,
    grid_size,
    presets,
    sample_dataset,
    say,
    split_samples,
)
from mmfm.data.datasets import ArrayDataset, PairDataset, ReportDataset, SampleDataset
from mmfm.data.generated_text import generated_vqa, label_captions  # noqa: F401  (for commands)
from mmfm.data.source import MINI_FILES, DataSource, dataset_at, mini_arrays, mini_card, source  # noqa: F401


# -- what each command needs -----------------------------------------------------------------------------------
def pretraining_split(data: Any) -> str:
    """The split vision pretraining reads: ``all`` for a folder without labels and without a splits file (nothing
    is held out for a later evaluation on it, so every image is used, said in the log), else ``data.train_split``."""
    return source(data).pretraining_split()


def name(data: Any) -> str:
    """How results name the data: ``mini/<set>``, the catalog name (``folder`` for a user's directory), or
    ``shards:<source>``."""
    return source(data).name


def unlabelled(data: Any, split: str = "train") -> ArrayDataset | SampleDataset:
    """Images with ``patient`` (int) and ``position`` (relative slice position) for MICLe/PCL."""
    return source(data).unlabelled(split)


def labelled(data: Any, split: str, task: str, train: bool = False) -> tuple[Any, list[str]]:
    """(dataset, class names): ``{"image", "label"}`` for classification, ``{"image", "mask"}`` for segmentation."""
    return source(data).labelled(split, task, train)


def class_names(data: Any) -> list[str]:
    return source(data).class_names()


def pairs(data: Any, split: str = "train") -> PairDataset | SampleDataset:
    """Image-text pairs: each image with its report or caption (and, for mini, its ``data.label`` class)."""
    return source(data).pairs(split)


def reports(data: Any, split: str = "train") -> ReportDataset:
    """Reports with findings and impression (the sections the report-side objectives pair)."""
    return source(data).reports(split)


def contract(data: Any, ds: Any = None) -> dict[str, Any]:
    """What a model trained on this data expects as input; stored with its weights."""
    return source(data).contract(ds)
