"""Image registration, 2D and 3D: affine and deformable, by instance optimisation or by a learned network.

Convention (what ``affine.json`` holds). Fixed and moving images live in RAS millimetres, each on its own voxel grid
(their affines). The transform maps a point of the *fixed* image to the point of the *moving* image that lands
there (the "pull" convention of ITK/ANTs/MONAI resampling):

    x_moving = A @ [x_fixed + u(x_fixed); 1]

with ``A`` a 4x4 (3D) or 3x3 (2D, in-plane) matrix in world millimetres and ``u`` the deformable displacement in
millimetres (RAS), zero for ``mode=affine``. A moving image is resampled onto the fixed grid by sampling it at
``A(x + u(x))`` for every fixed voxel centre ``x``.

* :func:`register` optimises ``A`` (multi-resolution; translation initialised by centres of mass when that fits
  better than the scanner coordinates) and then ``u`` (a smooth field on a coarse control grid, regularised by
  MONAI's ``BendingEnergyLoss``), against MONAI's local normalised cross-correlation (``lncc``, same modality)
  or global mutual information (``mi``, across modalities).
* :class:`RegistrationTask` is VoxelMorph (MONAI's ``VoxelMorphUNet`` + ``DVF2DDF`` + ``Warp``): trained on pairs
  of images on one grid (each batch is paired with itself rolled by one), LNCC + bending energy (+ Dice of warped
  labels when masks are given).

Why the sampler is written here: MONAI's ``Warp`` applies a displacement within one voxel grid; fixed and moving
images here have different grids and orientations, so the composed mapping (deformation, affine, the moving
image's own grid) is sampled in one interpolation with ``grid_sample``. MONAI's ``Warp`` is used by the network.

References: Balakrishnan et al., VoxelMorph, IEEE TMI 2019; Avants et al., ANTs/SyN 2008 (instance optimisation);
Mattes et al., mutual information, IEEE TMI 2003.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import BendingEnergyLoss, DiceLoss, GlobalMutualInformationLoss, LocalNormalizedCrossCorrelationLoss
from torch import nn

from mmfm.errors import ConfigError
from mmfm.tasks import TASKS

SIMILARITIES = ("lncc", "mi")


def plane_affine(affine: np.ndarray, nd: int) -> np.ndarray:
    """The (nd+1) x (nd+1) voxel -> world matrix: the 4x4 itself in 3D, its in-plane part in 2D."""
    a = np.asarray(affine, dtype=np.float64)
    return a if nd == 3 else a[np.ix_([0, 1, 3], [0, 1, 3])]


def voxel_grid(shape: Sequence[int]) -> torch.Tensor:
    """(*shape, nd) voxel index coordinates (float64)."""
    axes = [torch.arange(n, dtype=torch.float64) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)


def apply(matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """points (..., nd) through an (nd+1) x (nd+1) matrix."""
    nd = points.shape[-1]
    return points @ matrix[:nd, :nd].T + matrix[:nd, nd]


def sample(image: torch.Tensor, voxels: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """image (C, *s) sampled at voxel coordinates (*t, nd) (index order i, j[, k]) -> (C, *t); zero outside."""
    size = torch.tensor(image.shape[1:], dtype=voxels.dtype, device=voxels.device)
    norm = 2 * voxels / (size - 1).clamp(min=1) - 1
    grid = norm.flip(-1)[None].to(image.dtype)                 # grid_sample wants (x, y[, z]) = reversed axes
    out = F.grid_sample(image[None], grid, mode=mode if mode != "linear" else "bilinear", padding_mode="zeros",
                        align_corners=True)
    return out[0]


@dataclass
class Transform:
    """The result: ``matrix`` (world, fixed -> moving), ``displacement`` (mm, RAS) on ``field_shape`` control points
    spanning the fixed image (None for affine only)."""

    matrix: np.ndarray
    displacement: np.ndarray | None = None
    history: dict[str, list[float]] = field(default_factory=dict)
    init: str = "scanner coordinates"


class _Affine(nn.Module):
    """x_m = c + (I + L)(x_f - c) + t (c: the fixed image's centre, mm); ``rigid`` keeps L a rotation."""

    def __init__(self, nd: int, centre: torch.Tensor, shift: torch.Tensor) -> None:
        super().__init__()
        self.nd, self.centre = nd, centre
        self.linear = nn.Parameter(torch.zeros(nd, nd, dtype=torch.float64))
        self.shift = nn.Parameter(shift.clone())

    def matrix(self) -> torch.Tensor:
        nd = self.nd
        lin = torch.eye(nd, dtype=torch.float64) + self.linear
        m = torch.eye(nd + 1, dtype=torch.float64)
        m = m.clone()
        m[:nd, :nd] = lin
        m[:nd, nd] = self.centre + self.shift - lin @ self.centre
        return m


def _similarity(name: str, nd: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if name == "lncc":
        return LocalNormalizedCrossCorrelationLoss(spatial_dims=nd, kernel_size=7)
    if name == "mi":
        return GlobalMutualInformationLoss(num_bins=32)
    raise ConfigError(f"similarity '{name}' is not known", f"use one of {SIMILARITIES} (mi across modalities)")


def _level_shape(shape: Sequence[int], spacing: Sequence[float], step_mm: float) -> tuple[int, ...]:
    return tuple(max(8, int(round(n * s / step_mm))) for n, s in zip(shape, spacing))


def _level_grid(fixed_shape: Sequence[int], level: Sequence[int]) -> torch.Tensor:
    """Fixed-voxel coordinates of a coarser grid spanning the same field of view (corner to corner)."""
    axes = [torch.linspace(0, n - 1, m, dtype=torch.float64) for n, m in zip(fixed_shape, level)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)


def _centre_of_mass(image: np.ndarray, affine: np.ndarray) -> np.ndarray:
    w = np.clip(image, 0, None)
    if w.sum() <= 0:
        w = np.ones_like(w)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in w.shape], indexing="ij"), -1).reshape(-1, w.ndim)
    vox = (idx * w.reshape(-1, 1)).sum(0) / w.sum()
    return apply(torch.from_numpy(affine), torch.from_numpy(vox[None]))[0].numpy()


def register(fixed: np.ndarray, fixed_affine: np.ndarray, moving: np.ndarray, moving_affine: np.ndarray,
             mode: str = "deformable", similarity: str = "lncc", steps: Sequence[float] = (8.0, 4.0, 2.0),
             iterations: int = 150, deform_iterations: int = 150, control_mm: float = 12.0,
             smoothness: float = 1.0, lr: float = 0.01, progress: Any = None, seed: int = 0) -> Transform:
    """Register ``moving`` to ``fixed`` (each (*s) intensities scaled to about [0, 1], with its voxel -> world
    matrix (nd+1 square)). ``steps``: the resolutions (mm per voxel) of the pyramid, coarse to fine."""
    if mode not in ("affine", "deformable"):
        raise ConfigError(f"registration mode '{mode}' is not known", "use affine or deformable")
    torch.manual_seed(seed)
    nd = fixed.ndim
    sim = _similarity(similarity, nd)
    fa, ma = torch.from_numpy(fixed_affine), torch.from_numpy(moving_affine)
    m_inv = torch.linalg.inv(ma)
    fixed_t = torch.from_numpy(np.ascontiguousarray(fixed, dtype=np.float32))[None]
    moving_t = torch.from_numpy(np.ascontiguousarray(moving, dtype=np.float32))[None]
    spacing = np.sqrt((fixed_affine[:nd, :nd] ** 2).sum(0))
    centre = apply(fa, torch.tensor([(n - 1) / 2 for n in fixed.shape], dtype=torch.float64)[None])[0]
    com_shift = torch.from_numpy(_centre_of_mass(moving, moving_affine) - _centre_of_mass(fixed, fixed_affine))

    def warped_at(matrix: torch.Tensor, grid_f: torch.Tensor, disp: torch.Tensor | None = None) -> torch.Tensor:
        world = apply(fa, grid_f)
        if disp is not None:
            world = world + disp
        return sample(moving_t, apply(m_inv @ matrix, world))

    def fixed_at(grid_f: torch.Tensor) -> torch.Tensor:
        return sample(fixed_t, grid_f)

    history: dict[str, list[float]] = {"affine": [], "deformable": []}
    # initial translation: the scanner coordinates, or the centres of mass, whichever matches better
    grid0 = _level_grid(fixed.shape, _level_shape(fixed.shape, spacing, steps[0]))
    f0 = fixed_at(grid0)
    scores = {}
    for name, shift in (("scanner coordinates", torch.zeros(nd, dtype=torch.float64)), ("centres of mass", com_shift)):
        with torch.no_grad():
            scores[name] = float(sim(warped_at(_Affine(nd, centre, shift).matrix(), grid0)[None], f0[None]))
    init = min(scores, key=scores.get)
    affine = _Affine(nd, centre, com_shift if init == "centres of mass" else torch.zeros(nd, dtype=torch.float64))
    scale = torch.tensor(float(np.mean(spacing * np.array(fixed.shape))) / 4, dtype=torch.float64)
    for step in steps:
        grid = _level_grid(fixed.shape, _level_shape(fixed.shape, spacing, step))
        target = fixed_at(grid)[None]
        opt = torch.optim.Adam([{"params": [affine.linear], "lr": lr},
                                {"params": [affine.shift], "lr": lr * float(scale) * 0.5}])
        for _ in range(iterations):
            loss = sim(warped_at(affine.matrix(), grid)[None], target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if progress is not None:
                progress.update(1)
        history["affine"].append(float(loss.detach()))
    matrix = affine.matrix().detach()
    if mode == "affine":
        return Transform(matrix.numpy(), None, history, init)
    # deformable: a displacement field (mm) on a coarse control grid over the fixed image, upsampled smoothly
    step = steps[-1]
    grid = _level_grid(fixed.shape, _level_shape(fixed.shape, spacing, step))
    control = tuple(max(4, int(round(n * s / control_mm))) for n, s in zip(fixed.shape, spacing))
    disp = torch.zeros(1, nd, *control, dtype=torch.float64, requires_grad=True)
    bending = BendingEnergyLoss()
    target = fixed_at(grid)[None]
    opt = torch.optim.Adam([disp], lr=0.2 * step)
    interp = "bilinear" if nd == 2 else "trilinear"
    for _ in range(deform_iterations):
        dense = F.interpolate(disp, size=tuple(grid.shape[:-1]), mode=interp, align_corners=True)
        d = torch.movedim(dense[0], 0, -1)
        with warnings.catch_warnings():   # MONAI's bending energy indexes with lists (a torch deprecation)
            warnings.simplefilter("ignore", UserWarning)
            reg = bending(disp / control_mm)
        loss = sim(warped_at(matrix, grid, d)[None], target) + smoothness * reg
        opt.zero_grad()
        loss.backward()
        opt.step()
        if progress is not None:
            progress.update(1)
    history["deformable"].append(float(loss.detach()))
    return Transform(matrix.numpy(), disp.detach()[0].numpy(), history, init)


def dense_displacement(t: Transform, fixed_shape: Sequence[int]) -> np.ndarray | None:
    """The displacement (mm, RAS) at every fixed voxel: (*fixed_shape, nd), or None for an affine transform."""
    if t.displacement is None:
        return None
    d = torch.from_numpy(t.displacement)[None]
    mode = "bilinear" if len(fixed_shape) == 2 else "trilinear"
    dense = F.interpolate(d, size=tuple(fixed_shape), mode=mode, align_corners=True)[0]
    return torch.movedim(dense, 0, -1).numpy()


def resample(moving: np.ndarray, moving_affine: np.ndarray, fixed_shape: Sequence[int], fixed_affine: np.ndarray,
             t: Transform, labels: bool = False) -> np.ndarray:
    """The moving image (C, *m) on the fixed grid (C, *fixed_shape): linear for images, nearest for labels."""
    grid = voxel_grid(fixed_shape)
    world = apply(torch.from_numpy(fixed_affine), grid)
    dense = dense_displacement(t, fixed_shape)
    if dense is not None:
        world = world + torch.from_numpy(dense)
    vox = apply(torch.linalg.inv(torch.from_numpy(moving_affine)) @ torch.from_numpy(t.matrix), world)
    image = torch.from_numpy(np.ascontiguousarray(moving, dtype=np.float32))
    return sample(image, vox, mode="nearest" if labels else "bilinear").numpy()


def folding_fraction(displacement_mm: np.ndarray | None, fixed_affine: np.ndarray) -> float:
    """Fraction of fixed voxels where the deformation x -> x + u(x) folds (Jacobian determinant <= 0)."""
    if displacement_mm is None:
        return 0.0
    nd = displacement_mm.shape[-1]
    lin = fixed_affine[:nd, :nd]
    u_vox = displacement_mm @ np.linalg.inv(lin).T                  # displacement in fixed voxel units
    jac = np.empty(u_vox.shape[:-1] + (nd, nd))
    for a in range(nd):
        grads = np.gradient(u_vox[..., a], axis=tuple(range(nd)))
        for b in range(nd):
            jac[..., a, b] = grads[b] + (1.0 if a == b else 0.0)
    return float((np.linalg.det(jac) <= 0).mean())


def label_dice(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Dice per label present in either map (background 0 left out)."""
    out = {}
    for c in sorted(set(np.unique(a).tolist()) | set(np.unique(b).tolist())):
        if c == 0:
            continue
        x, y = a == c, b == c
        out[str(int(c))] = float(2 * (x & y).sum() / max(1, x.sum() + y.sum()))
    return out


# ---- the learned path: VoxelMorph on MONAI's blocks ----------------------------------------------------------


class RegistrationTask(nn.Module):
    """forward(batch{"image": (B, 1, *s)[, "mask"]}) -> {"loss", "ddf"}: moving = the batch rolled by one."""

    def __init__(self, spatial_dims: int, in_channels: int = 1, similarity: str = "lncc", smoothness: float = 1.0,
                 label_weight: float = 1.0, channels: Sequence[int] = (16, 32, 32, 32),
                 integration_steps: int = 7) -> None:
        super().__init__()
        from monai.networks.blocks import DVF2DDF, Warp
        from monai.networks.nets import VoxelMorphUNet

        if in_channels != 1:
            raise ConfigError("registration takes 1-channel images", "set data.channels=1")
        self.spatial_dims = spatial_dims
        self.net = VoxelMorphUNet(spatial_dims=spatial_dims, in_channels=2, unet_out_channels=16,
                                  channels=tuple(channels), final_conv_channels=(16, 16), final_conv_act=None)
        last = self.net.get_submodule("net.1.final_conv_out.conv")   # the velocity field starts at ~0 (identity)
        nn.init.normal_(last.weight, std=1e-5)
        nn.init.zeros_(last.bias)
        self.dvf2ddf = DVF2DDF(num_steps=integration_steps, mode="bilinear", padding_mode="zeros")
        self.warp, self.warp_nn = Warp("bilinear", "border"), Warp("nearest", "border")
        self.sim, self.bending = _similarity(similarity, spatial_dims), BendingEnergyLoss()
        self.dice = DiceLoss(to_onehot_y=False, softmax=False)
        self.smoothness, self.label_weight = smoothness, label_weight

    def ddf(self, fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
        """(B, nd, *s) displacement in voxels (diffeomorphic: a velocity field integrated by scaling and
        squaring)."""
        return self.dvf2ddf(self.net(torch.cat([moving, fixed], dim=1)))

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        fixed = batch["image"]
        if fixed.shape[0] < 2:
            raise ConfigError("registration pairs images within a batch", "set train.batch_size >= 2")
        moving = fixed.roll(1, dims=0)
        ddf = self.ddf(fixed, moving)
        loss = self.sim(self.warp(moving, ddf), fixed) + self.smoothness * self.bending(ddf)
        if "mask" in batch and self.label_weight:
            m = batch["mask"].long()
            k = int(m.max()) + 1
            onehot = F.one_hot(m[:, 0], k).movedim(-1, 1).float()
            loss = loss + self.label_weight * self.dice(self.warp(onehot.roll(1, dims=0), ddf), onehot)
        return {"loss": loss, "ddf": ddf}


@TASKS.register("registration")
def registration(spatial_dims: int, in_channels: int, similarity: str = "lncc", smoothness: float = 1.0,
                 label_weight: float = 1.0, channels: Sequence[int] = (16, 32, 32, 32),
                 integration_steps: int = 7) -> RegistrationTask:
    """VoxelMorph (diffeomorphic), 2D or 3D: a U-Net of its own (the ``encoder`` section is not used)."""
    return RegistrationTask(spatial_dims, in_channels, similarity, smoothness, label_weight, channels,
                            integration_steps)
