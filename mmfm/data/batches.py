"""Images in batches from either a tensor held in memory or a dataset of ``{"image", ...}`` items (read by
DataLoader workers when the dataset decodes files), so evaluation never needs a whole corpus in memory."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset


class ImagesOnly(Dataset):
    """The ``image`` of each item of a dataset (what ``update_bn`` and plain loaders expect)."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.ds[i]["image"]


def loader_workers(ds: object) -> int:
    """Worker processes for an evaluation pass: some for map-style datasets that decode files; none for a
    stream (several workers would interleave its items in an order that depends on the batch size)."""
    if isinstance(ds, torch.utils.data.IterableDataset):
        return 0
    return min(4, max(1, (torch.get_num_threads() or 1) // 2)) if getattr(ds, "reads_files", False) else 0


def image_batches(images: torch.Tensor | Dataset, batch_size: int = 64) -> Iterator[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        for i in range(0, len(images), batch_size):
            yield images[i:i + batch_size]
        return
    if isinstance(images, torch.utils.data.IterableDataset):
        for batch in DataLoader(images, batch_size=batch_size, num_workers=0):
            yield batch["image"]
        return
    yield from DataLoader(ImagesOnly(images), batch_size=batch_size, num_workers=loader_workers(images))


def first_item(ds: Dataset) -> dict:
    """The first item of a map-style or streaming dataset."""
    if isinstance(ds, torch.utils.data.IterableDataset):
        return next(iter(ds))
    return ds[0]


def iter_items(ds: Dataset) -> Iterator[dict]:
    if isinstance(ds, torch.utils.data.IterableDataset):
        yield from ds
    else:
        for i in range(len(ds)):  # type: ignore[arg-type]
            yield ds[i]
