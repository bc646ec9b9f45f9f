"""HD95 and normalised surface Dice against hand-computed cases, with the declared policy for empty masks."""

from __future__ import annotations

import math

import pytest
import torch

from mmfm.evaluation.metrics.surface import surface_rows


def square(offset: int = 0, size: int = 32, side: int = 8) -> torch.Tensor:
    m = torch.zeros(1, 1, size, size, dtype=torch.long)
    m[..., 10 + offset:10 + offset + side, 10:10 + side] = 1
    return m


def test_a_shift_of_three_pixels_is_three_mm_and_scales_with_spacing():
    hd, nsd = surface_rows(square(3), square(0), 2)
    assert hd.item() == pytest.approx(3.0)
    hd2, _ = surface_rows(square(3), square(0), 2, spacing=(2.0, 1.0))   # the shift is along the 2 mm axis
    assert hd2.item() == pytest.approx(6.0)
    assert 0.0 < nsd.item() < 1.0                       # the shifted edges lie 3 mm apart, beyond 2 mm


def test_identical_masks_are_perfect_and_a_one_pixel_shift_is_within_tolerance():
    hd, nsd = surface_rows(square(0), square(0), 2)
    assert hd.item() == 0.0 and nsd.item() == pytest.approx(1.0)
    _, nsd1 = surface_rows(square(1), square(0), 2, tolerance_mm=1.0)
    assert nsd1.item() == pytest.approx(1.0)


def test_empty_masks_follow_the_declared_policy():
    empty = torch.zeros(1, 1, 32, 32, dtype=torch.long)
    hd, nsd = surface_rows(empty, square(0), 2)          # structure missed: the worst values
    assert hd.item() == pytest.approx(math.sqrt(2) * 32) and nsd.item() == 0.0
    hd, nsd = surface_rows(square(0), empty, 2)          # nothing to find: ignored for this image
    assert math.isnan(hd.item()) and math.isnan(nsd.item())
