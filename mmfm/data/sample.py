"""The one sample schema used everywhere in mmfm, for 2D and 3D alike.

A sample is a plain dict (so MONAI dictionary transforms keep image, mask and label in sync):

=================  ===============================================================================
key                value
=================  ===============================================================================
``images``         ``{modality: Image}``; each ``Image.array`` is channel-first ``(C, *spatial)``
                   with spatial axes in index order ``(i, j[, k])`` (i = column, j = row, k = slice,
                   as in ITK/MONAI/NIfTI) and its ``affine`` maps indices to RAS millimetres
``mask``           optional integer array ``(1, *spatial)`` on the grid of the images
``labels``         ``{name: int | float | list}``, e.g. ``{"tissue": 2, "lesion": 1}``
``report``         optional :class:`Report` (text split into indication / findings / impression)
``texts``          ``{name: str}`` other text fields: a VQA ``question``/``answer``, an NLI ``premise``/
                   ``hypothesis``, a ``caption``
``ids``            :class:`Ids` (patient, study, series, slice position): positives from the same patient
                   or neighbouring slices, and leak-free splits, are built from these
=================  ===============================================================================

Images of several modalities on one grid can be fused early (stacked as channels, :func:`early_fuse`);
late fusion happens in feature space (encoders, later issues).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import nibabel as nib
import numpy as np

from mmfm.data.modality import canonical_modality
from mmfm.errors import SampleError

MAX_REPORT_CHARS = 100_000


@dataclass
class Image:
    """One image: ``array`` is ``(C, *spatial)``; ``affine`` is 4x4 (index -> RAS mm)."""

    array: np.ndarray
    modality: str
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    meta: dict[str, Any] = field(default_factory=dict)  # de-identified reader metadata (never PHI)

    @property
    def spatial_dims(self) -> int:
        return self.array.ndim - 1

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.array.shape[1:])

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm along each spatial axis (from the affine)."""
        nd = self.spatial_dims
        return tuple(float(v) for v in np.sqrt((self.affine[:3, :nd] ** 2).sum(axis=0)))

    @property
    def orientation(self) -> str:
        """Anatomical direction of increasing index along each axis, e.g. ``'RAS'`` or ``'LP'``."""
        codes = nib.aff2axcodes(self.affine)
        return "".join(c or "?" for c in codes[: self.spatial_dims])


@dataclass
class Report:
    """A clinical report, whole and split into its sections."""

    text: str
    indication: str = ""
    findings: str = ""
    impression: str = ""
    sections: dict[str, str] = field(default_factory=dict)


@dataclass
class Ids:
    """Identifiers that later objectives and splits rely on. ``slice_index`` is the position in its volume."""

    sample_id: str
    patient_id: str = ""
    study_id: str = ""
    series_id: str = ""
    slice_index: float | None = None


def make_sample(images: dict[str, Image] | None = None, *, ids: Ids, mask: np.ndarray | None = None,
                labels: dict[str, Any] | None = None, report: Report | None = None,
                texts: dict[str, str] | None = None) -> dict[str, Any]:
    """Build and validate a sample dict (see the module docstring)."""
    sample = {"images": images or {}, "mask": mask, "labels": labels or {}, "report": report,
              "texts": texts or {}, "ids": ids}
    validate_sample(sample)
    return sample


def validate_sample(sample: dict[str, Any]) -> None:
    """Raise :class:`SampleError` naming the sample and the problem, or return None."""
    sid = sample["ids"].sample_id
    images: dict[str, Image] = sample["images"]
    if not images and sample.get("report") is None and not sample.get("texts"):
        raise SampleError(f"sample '{sid}' has neither an image nor text", "give at least one of them")
    shapes = set()
    for key, img in images.items():
        canonical_modality(img.modality)
        if img.array.ndim not in (3, 4):
            raise SampleError(f"sample '{sid}': image '{key}' has shape {img.array.shape}; expected (C, H, W) "
                              "or (C, D, H, W)", "add a channel axis first (e.g. array[None])")
        if not np.isfinite(img.array).all():
            n = int((~np.isfinite(img.array)).sum())
            raise SampleError(f"sample '{sid}': image '{key}' has {n} NaN/Inf pixels",
                              "fix or drop the image; mmfm never silently replaces them")
        shapes.add(img.spatial_shape)
    if len(shapes) > 1:
        raise SampleError(f"sample '{sid}': images of different modalities have different grids {sorted(shapes)}",
                          "resample them onto one grid before early fusion, or keep them as separate samples")
    mask = sample.get("mask")
    if mask is not None and images:
        (shape,) = shapes
        if tuple(mask.shape[1:]) != shape or mask.shape[0] != 1:
            raise SampleError(f"sample '{sid}': mask shape {tuple(mask.shape)} does not match image grid {shape}",
                              "mask must be (1, *spatial) on the image's grid; check that they belong together")
    report: Report | None = sample.get("report")
    if report is not None:
        if not report.text.strip():
            raise SampleError(f"sample '{sid}': the report is empty", "drop the sample or supply its report text")
        if len(report.text) > MAX_REPORT_CHARS:
            raise SampleError(f"sample '{sid}': the report has {len(report.text):,} characters "
                              f"(more than {MAX_REPORT_CHARS:,})", "is this a whole file or a concatenation of "
                              "reports? split it into one report per study")


def early_fuse(images: dict[str, Image], order: list[str]) -> np.ndarray:
    """Stack the images of ``order`` as channels (early fusion, review Fig. 3). Shape: (sum C, *spatial)."""
    missing = [m for m in order if m not in images]
    if missing:
        raise SampleError(f"missing modalities {missing} for early fusion (have {sorted(images)})",
                          "supply every modality listed in data.modalities for every sample, set "
                          f"data.modalities to the ones each sample has (e.g. {sorted(images)}), or set "
                          "data.missing_modalities=zero to fill absent ones with zeros (train with "
                          "data.modality_dropout so the model expects that)")
    return np.concatenate([images[m].array for m in order], axis=0)


def ids_to_dict(ids: Ids) -> dict[str, Any]:
    return asdict(ids)
