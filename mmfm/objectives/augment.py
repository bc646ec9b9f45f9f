"""Modality-aware batch augmentations for contrastive views (torch ops, 2D and 3D, global RNG so that a resumed
run replays them exactly).

CT and MRI are greyscale with a physical meaning: no colour jitter, only a small brightness/contrast change
(a window shift of a few HU for windowed CT), noise, flips and a random resized crop. RGB modalities (fundus,
dermatoscopy, pathology) also get per-channel colour jitter.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

GREY = {"CT", "MR", "XR", "US", "MG", "PT", "NM", "OCT"}


def random_resized_crop(x: torch.Tensor, scale: tuple[float, float] = (0.5, 1.0)) -> torch.Tensor:
    b, _, *s = x.shape
    out = []
    for i in range(b):
        f = float(torch.empty(1).uniform_(*scale)) ** (1 / len(s))
        size = [max(2, int(round(n * f))) for n in s]
        start = [int(torch.randint(0, n - m + 1, (1,))) for n, m in zip(s, size)]
        crop = x[i:i + 1][(slice(None), slice(None), *[slice(a, a + m) for a, m in zip(start, size)])]
        out.append(F.interpolate(crop, size=s, mode="bilinear" if len(s) == 2 else "trilinear", align_corners=False))
    return torch.cat(out)


def augment(x: torch.Tensor, modality: str = "CT", strength: float = 1.0) -> torch.Tensor:
    """One random view of a batch (B, C, *s)."""
    x = random_resized_crop(x)
    b, c, *s = x.shape
    for axis in range(2, 2 + len(s)):
        flip = torch.rand(b, device=x.device) < 0.5
        x = torch.where(flip.view(-1, *[1] * (x.ndim - 1)), x.flip(axis), x)
    shape = (b,) + (1,) * (x.ndim - 1)
    contrast = 1 + strength * 0.2 * (torch.rand(shape, device=x.device) - 0.5)
    bright = strength * 0.1 * (torch.rand(shape, device=x.device) - 0.5)
    mean = x.mean(dim=tuple(range(1, x.ndim)), keepdim=True)
    x = (x - mean) * contrast + mean + bright
    if modality not in GREY and c == 3:  # colour jitter only where colour means something
        x = x * (1 + strength * 0.2 * (torch.rand(b, c, *[1] * len(s), device=x.device) - 0.5))
    return x + strength * 0.02 * torch.randn_like(x)
