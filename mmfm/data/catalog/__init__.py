"""The dataset catalog: every dataset of the review's Tables I-III, and loaders for their layout families."""

from mmfm.data.catalog import folder as _folder  # noqa: F401  (registers the `folder` layout)
from mmfm.data.catalog.entries import CatalogEntry, get_entry, load_catalog
from mmfm.data.catalog.loaders import LAYOUTS, load_dataset

__all__ = ["CatalogEntry", "get_entry", "load_catalog", "LAYOUTS", "load_dataset"]
