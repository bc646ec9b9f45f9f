"""Masking: exact ratio, determinism under a seed, 2D and 3D; patchify round trip; strategy-specific behaviour."""

from __future__ import annotations

import pytest
import torch

from mmfm.objectives.masking import MASKINGS, make_mask, patchify, unpatchify


@pytest.mark.parametrize("strategy", MASKINGS.names())
@pytest.mark.parametrize("dims,grid", [(2, (8, 8)), (3, (4, 4, 4))])
def test_ratio_and_determinism(strategy, dims, grid):
    torch.manual_seed(0)
    x = torch.rand(3, 1, *[g * 4 for g in grid])
    kw = {"difficulty": torch.rand(3, 64)} if strategy == "anatomask" else {}
    m1 = make_mask(strategy, x, grid, 0.6, torch.Generator().manual_seed(7), **kw)
    m2 = make_mask(strategy, x, grid, 0.6, torch.Generator().manual_seed(7), **kw)
    m3 = make_mask(strategy, x, grid, 0.6, torch.Generator().manual_seed(8), **kw)
    assert m1.shape == (3, 64) and m1.dtype == torch.bool
    assert (m1.sum(1) == round(0.6 * 64)).all()
    assert torch.equal(m1, m2) and not torch.equal(m1, m3)


@pytest.mark.parametrize("dims", [2, 3])
def test_patchify_roundtrip(dims):
    x = torch.randn(2, 3, *[8] * dims)
    t = patchify(x, 4)
    assert t.shape == (2, 2 ** dims, 4 ** dims * 3)
    assert torch.equal(unpatchify(t, 4, (2,) * dims, 3), x)
    # patch 1 is grid cell (0, ..., 0, 1): the last axis' second block, laid out as (p, ..., p, C)
    cell = x[(0, slice(None), *[slice(0, 4)] * (dims - 1), slice(4, 8))]          # (C, p, ..., p)
    assert torch.equal(t[0, 1], cell.permute(*range(1, dims + 1), 0).reshape(-1))


def test_anatomask_takes_the_hardest():
    difficulty = torch.zeros(1, 64)
    difficulty[0, :10] = torch.arange(10, 0, -1).float()
    m = make_mask("anatomask", torch.rand(1, 1, 32, 32), (8, 8), 0.5, torch.Generator().manual_seed(0),
                  difficulty=difficulty, hard_fraction=0.25)
    assert m[0, :8].all()  # 25% of 32 masked = 8 hardest, the rest random


def test_block_masks_whole_blocks():
    m = make_mask("block", torch.rand(4, 1, 32, 32), (8, 8), 0.5, torch.Generator().manual_seed(0), block=2)
    blocks = m.view(4, 4, 2, 4, 2).permute(0, 1, 3, 2, 4).reshape(4, 16, 4).sum(-1)
    assert ((blocks == 0) | (blocks == 4)).all()


def test_entropy_prefers_textured_patches():
    x = torch.zeros(1, 1, 32, 32)
    x[..., :, 16:] = torch.rand(1, 1, 32, 16)  # right half textured, left half flat
    counts = torch.zeros(64)
    for s in range(20):
        counts += make_mask("entropy", x, (8, 8), 0.25, torch.Generator().manual_seed(s))[0].float()
    grid = counts.view(8, 8)
    assert grid[:, 4:].sum() > 3 * grid[:, :4].sum()


def test_superpixel_masks_whole_segments():
    import torch.nn.functional as F
    from skimage.segmentation import slic

    torch.manual_seed(0)
    x = torch.rand(1, 1, 32, 32) * 0.1
    x[..., :16, :16] += 1.0
    x[..., 16:, 20:] += 0.5
    m = make_mask("superpixel", x, (8, 8), 0.5, torch.Generator().manual_seed(0), n_segments=6)[0]
    seg = slic(x[0, 0].numpy(), n_segments=6, compactness=0.1, channel_axis=None, start_label=0)
    patch_seg = F.interpolate(torch.from_numpy(seg).float()[None, None], size=(8, 8), mode="nearest").reshape(-1)
    partial = [s for s in patch_seg.unique() if 0 < m[patch_seg == s].float().mean() < 1]
    assert len(partial) <= 1  # every superpixel is masked whole, but the one cut to hit the exact ratio
