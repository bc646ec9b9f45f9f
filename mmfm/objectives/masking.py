"""Masking strategies for masked image modelling, 2D and 3D.

Every strategy returns a boolean mask ``(B, N)`` over the patch grid (True = masked) with exactly
``round(ratio * N)`` masked patches per sample, and is deterministic under a ``torch.Generator`` seed.

* ``random``      uniform (MAE).                                    He et al., 2022
* ``block``       whole blocks of patches (grid masking in the spirit of GMIM, review ref. [108]; GMIM is
                  Qi et al., Comput. Biol. Med. 2024 — the review's reference list prints another paper,
                  Wang et al., CVPR 2023, under that number).
* ``entropy``     sampled in proportion to each patch's intensity entropy, so informative regions are masked
                  more often (Uni4Eye++).                            Cai et al., IEEE TMI 2024
* ``anatomask``   reconstruction-guided: the patches the model currently reconstructs worst (``difficulty``,
                  given by the objective) are masked first, mixed with random ones (AnatoMask). Li et al., 2024
* ``superpixel``  whole SLIC superpixels (scikit-image) until the ratio is reached (autoSMIM, without its
                  Bayesian search over SLIC settings). Wang, Lyu & Tang, IEEE TMI 2023 (review ref. [106])
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from mmfm.errors import ConfigError, unknown_option
from mmfm.registry import Registry

MASKINGS: Registry[Callable[..., torch.Tensor]] = Registry("masking strategy")


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, *s) -> (B, N, p^d * C), patches in row-major grid order (as the patch embedding)."""
    b, c, *s = x.shape
    d = len(s)
    g = [n // p for n in s]
    x = x.reshape(b, c, *[v for n in g for v in (n, p)])          # (B, C, g1, p, g2, p[, g3, p])
    grid_axes = [2 + 2 * i for i in range(d)]
    patch_axes = [3 + 2 * i for i in range(d)]
    x = x.permute(0, *grid_axes, *patch_axes, 1)                    # (B, g..., p..., C)
    return x.reshape(b, int(np.prod(g)), p ** d * c)


def unpatchify(t: torch.Tensor, p: int, grid: tuple[int, ...], channels: int) -> torch.Tensor:
    """Inverse of :func:`patchify`: (B, N, p^d * C) -> (B, C, *grid * p)."""
    b, d = t.shape[0], len(grid)
    x = t.reshape(b, *grid, *([p] * d), channels)
    order = [0, 2 * d + 1] + [v for i in range(d) for v in (1 + i, 1 + d + i)]
    x = x.permute(*order)
    return x.reshape(b, channels, *[n * p for n in grid])


def _top_k_mask(scores: torch.Tensor, n_mask: int) -> torch.Tensor:
    idx = scores.argsort(dim=1, descending=True)[:, :n_mask]
    mask = torch.zeros_like(scores, dtype=torch.bool)
    return mask.scatter_(1, idx, True)


@MASKINGS.register("random")
def random_mask(images: torch.Tensor, grid: tuple[int, ...], ratio: float,
                generator: torch.Generator | None = None) -> torch.Tensor:
    b, n = images.shape[0], int(np.prod(grid))
    noise = torch.rand(b, n, generator=generator).to(images.device)   # [B, N]; large is masked
    return _top_k_mask(noise, round(ratio * n))


@MASKINGS.register("block")
def block_mask(images: torch.Tensor, grid: tuple[int, ...], ratio: float, generator: torch.Generator | None = None,
               block: int = 2) -> torch.Tensor:
    """Random blocks of ``block^d`` patches (a coarse grid), then exact-count top-up at random."""
    b, n = images.shape[0], int(np.prod(grid))
    coarse = [max(1, g // block) for g in grid]
    score = torch.rand(b, 1, *coarse, generator=generator)            # one score per block
    score = F.interpolate(score, size=grid, mode="nearest").reshape(b, n)
    score = score + 1e-3 * torch.rand(b, n, generator=generator)     # ties broken inside a block
    return _top_k_mask(score, round(ratio * n)).to(images.device)


@MASKINGS.register("entropy")
def entropy_mask(images: torch.Tensor, grid: tuple[int, ...], ratio: float, generator: torch.Generator | None = None,
                 bins: int = 16, temperature: float = 1.0) -> torch.Tensor:
    """Sample without replacement with probability ~ exp(entropy / T) (Gumbel top-k)."""
    p = images.shape[2] // grid[0]
    patches = patchify(images.detach().float().cpu(), p)              # (B, N, P)
    lo, hi = patches.amin(dim=(1, 2), keepdim=True), patches.amax(dim=(1, 2), keepdim=True)
    q = ((patches - lo) / (hi - lo + 1e-8) * (bins - 1)).round().long()
    hist = F.one_hot(q, bins).float().mean(dim=2)                     # (B, N, bins)
    ent = -(hist * (hist + 1e-12).log()).sum(-1)                      # (B, N)
    u = torch.rand(ent.shape, generator=generator).clamp_(1e-9, 1 - 1e-9)
    gumbel = -torch.log(-torch.log(u))
    return _top_k_mask(ent / temperature + gumbel, round(ratio * ent.shape[1])).to(images.device)


@MASKINGS.register("anatomask")
def anatomask(images: torch.Tensor, grid: tuple[int, ...], ratio: float, generator: torch.Generator | None = None,
              difficulty: torch.Tensor | None = None, hard_fraction: float = 0.5) -> torch.Tensor:
    """Mask the hardest ``hard_fraction`` of the budget by ``difficulty`` (B, N), the rest at random."""
    if difficulty is None:
        return random_mask(images, grid, ratio, generator)
    b, n = difficulty.shape
    n_mask = round(ratio * n)
    n_hard = round(hard_fraction * n_mask)
    hard = _top_k_mask(difficulty.detach().cpu().float(), n_hard)
    noise = torch.rand(b, n, generator=generator)
    noise[hard] = 2.0                                                  # keep the hard ones, fill at random
    return _top_k_mask(noise, n_mask).to(images.device)


@MASKINGS.register("superpixel")
def superpixel_mask(images: torch.Tensor, grid: tuple[int, ...], ratio: float,
                    generator: torch.Generator | None = None, n_segments: int = 24) -> torch.Tensor:
    """Mask whole SLIC superpixels (in random order) at patch level, then trim/top up to the exact count."""
    from skimage.segmentation import slic

    b, n = images.shape[0], int(np.prod(grid))
    n_mask = round(ratio * n)
    out = torch.zeros(b, n, dtype=torch.bool)
    for i in range(b):
        img = images[i, 0].detach().float().cpu().numpy()
        seg = slic(img, n_segments=n_segments, compactness=0.1, channel_axis=None, start_label=0)
        seg_t = torch.from_numpy(seg).float()[None, None]
        patch_seg = F.interpolate(seg_t, size=grid, mode="nearest").reshape(n).long()  # superpixel at patch centre
        order = torch.randperm(int(patch_seg.max()) + 1, generator=generator)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(len(order))
        score = -rank[patch_seg].float() + 0.5 * torch.rand(n, generator=generator)    # earlier segments first
        out[i] = _top_k_mask(score[None], n_mask)[0]
    return out.to(images.device)


def make_mask(strategy: str, images: torch.Tensor, grid: tuple[int, ...], ratio: float,
              generator: torch.Generator | None = None, **kw: object) -> torch.Tensor:
    check_mask_ratio(ratio)
    return MASKINGS.get(strategy)(images, grid, ratio, generator, **kw)


def check_masking(strategy: str, options: dict[str, object], ratio: float) -> None:
    """Validate a masking configuration when an objective is built (not at the first training step)."""
    check_mask_ratio(ratio)
    runtime = ("images", "grid", "ratio", "generator", "difficulty")  # given by the objective at each step
    tunable = [o for o in MASKINGS.options(strategy) if o not in runtime]
    for key in options:
        if key not in tunable:
            raise unknown_option(f"objective.masking_options.{key}", key, tunable, f"masking '{strategy}'")


def check_mask_ratio(ratio: float, where: str = "objective.mask_ratio") -> None:
    if not 0.0 < ratio < 1.0:
        raise ConfigError(f"{where}={ratio}: a mask ratio must lie strictly between 0 and 1",
                          "e.g. 0.75 for MAE, 0.6 for SimMIM")
