"""Factored position embeddings: one learned table per axis (z, y, x), summed, for 2D and 3D grids alike."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def factored_pos_embed(tables: Sequence[torch.Tensor], grid: tuple[int, ...]) -> torch.Tensor:
    """``tables`` are the (z, y, x) tables, each (max_len, D); a 2D grid uses the last two. Shape: (N, D)."""
    axes = tables[3 - len(grid):]
    dim = tables[0].shape[1]
    pe = torch.zeros(*grid, dim, device=tables[0].device, dtype=tables[0].dtype)
    for a, (table, n) in enumerate(zip(axes, grid)):
        shape = [1] * len(grid) + [dim]
        shape[a] = n
        pe = pe + table[:n].view(shape)                     # broadcast along the other axes
    return pe.reshape(-1, dim)
