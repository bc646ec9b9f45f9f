"""Catalog entries are data (``datasets.yaml``); this module reads and validates them."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from mmfm.errors import UnknownNameError


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    table: str                 # "I" (text), "II" (image), "III" (image-text) of the review, or "mmfm"
    kind: str                  # text | image | image-text | vqa
    modalities: list[str]
    task: str
    size: str
    licence: str
    obtain: str                # how to get a local copy
    layout: str                # layout family -> loader in mmfm.data.catalog.loaders
    layout_notes: str = ""     # the expected folder layout
    reference: str = ""
    options: dict = field(default_factory=dict)  # default loader options for this dataset


@lru_cache(maxsize=1)
def load_catalog() -> dict[str, CatalogEntry]:
    raw = yaml.safe_load((Path(__file__).parent / "datasets.yaml").read_text())
    return {d["name"]: CatalogEntry(**d) for d in raw["datasets"]}


def get_entry(name: str) -> CatalogEntry:
    cat = load_catalog()
    lookup = {k.lower(): k for k in cat}
    if name.lower() not in lookup:
        raise UnknownNameError("dataset", name, cat)
    return cat[lookup[name.lower()]]
