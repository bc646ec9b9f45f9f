"""Modality presets: named, documented intensity preprocessing that is stored with a model checkpoint.

A preset is plain data (``Preset.to_dict`` / ``Preset.from_dict``) so that a trained model always gets the input
it was trained on. The arithmetic is MONAI's (``ScaleIntensityRange``, ``ScaleIntensityRangePercentiles``,
``NormalizeIntensity``); mmfm only names and records the settings.

CT windows follow the usual radiology convention (window width W, level L -> HU range [L - W/2, L + W/2]).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from monai.transforms import NormalizeIntensity, ScaleIntensityRange, ScaleIntensityRangePercentiles

from mmfm.data.modality import canonical_modality
from mmfm.errors import ConfigError, UnknownNameError


@dataclass(frozen=True)
class Preset:
    """Intensity preprocessing for one modality.

    kind:
      ``window``      clip to [low, high] (e.g. HU) and scale to [0, 1];
      ``percentile``  clip to the [low, high] percentiles of the image and scale to [0, 1];
      ``zscore``      zero mean, unit variance (over non-zero voxels if ``nonzero``);
      ``rgb``         divide 8-bit colour by 255, then subtract ``mean`` and divide by ``std`` per channel.
    """

    name: str
    modality: str
    kind: str
    low: float = 0.0
    high: float = 1.0
    nonzero: bool = False
    mean: tuple[float, ...] = field(default_factory=tuple)
    std: tuple[float, ...] = field(default_factory=tuple)
    description: str = ""

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Apply to a channel-first array ``(C, *spatial)``; returns float32 of the same shape."""
        x = np.asarray(image, dtype=np.float32)
        if self.kind == "window":
            out = ScaleIntensityRange(self.low, self.high, 0.0, 1.0, clip=True)(x)
        elif self.kind == "percentile":
            out = ScaleIntensityRangePercentiles(self.low, self.high, 0.0, 1.0, clip=True, channel_wise=True)(x)
        elif self.kind == "zscore":
            out = NormalizeIntensity(nonzero=self.nonzero, channel_wise=True)(x)
        elif self.kind == "rgb":
            out = x / 255.0
            if self.mean:
                shape = (-1,) + (1,) * (x.ndim - 1)
                out = (out - np.asarray(self.mean, np.float32).reshape(shape)) / np.asarray(
                    self.std, np.float32
                ).reshape(shape)
        else:
            raise ConfigError(f"preset '{self.name}' has unknown kind '{self.kind}'",
                              "use one of window, percentile, zscore, rgb")
        return np.asarray(out, dtype=np.float32)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preset:
        d = dict(d)
        d["mean"], d["std"] = tuple(d.get("mean", ())), tuple(d.get("std", ()))
        return cls(**d)


def _ct(name: str, width: float, level: float, what: str) -> Preset:
    return Preset(name, "CT", "window", level - width / 2, level + width / 2,
                  description=f"CT {what} window W{width:g}/L{level:g} HU -> [0, 1]")


_IMAGENET: dict[str, Any] = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))

PRESETS: dict[str, Preset] = {p.name: p for p in [
    _ct("ct_abdomen", 400, 40, "abdomen / soft tissue"),
    _ct("ct_lung", 1500, -600, "lung"),
    _ct("ct_bone", 1800, 400, "bone"),
    _ct("ct_brain", 80, 40, "brain"),
    Preset("mri_zscore", "MR", "zscore", nonzero=True,
           description="MRI z-score over non-zero (foreground) voxels; scanner units are arbitrary"),
    Preset("mri_percentile", "MR", "percentile", 0.5, 99.5,
           description="MRI clipped to its 0.5-99.5th percentiles and scaled to [0, 1]"),
    Preset("xray", "XR", "percentile", 0.5, 99.5,
           description="radiograph clipped to its 0.5-99.5th percentiles (after MONOCHROME1 inversion) -> [0, 1]"),
    Preset("mammography", "MG", "percentile", 0.5, 99.5, description="mammogram, percentile scaling to [0, 1]"),
    Preset("ultrasound", "US", "percentile", 0.0, 100.0, description="ultrasound min-max scaled to [0, 1]"),
    Preset("pet", "PT", "percentile", 0.0, 99.9, description="PET uptake, clipped at the 99.9th percentile"),
    Preset("fundus", "fundus", "rgb", **_IMAGENET, description="8-bit RGB fundus, ImageNet mean/std"),
    Preset("dermatoscopy", "dermatoscopy", "rgb", **_IMAGENET, description="8-bit RGB skin, ImageNet mean/std"),
    Preset("pathology", "pathology", "rgb", **_IMAGENET, description="8-bit RGB H&E/IHC, ImageNet mean/std"),
    Preset("oct", "OCT", "percentile", 0.5, 99.5, description="OCT B-scan, percentile scaling to [0, 1]"),
    Preset("rgb_unit", "pathology", "rgb", description="8-bit RGB divided by 255, no mean/std"),
    Preset("unit", "unknown", "window", 0.0, 1.0,
           description="values already scaled to [0, 1] (data exported after preprocessing): kept, clipped to [0, 1]"),
    Preset("percentile", "unknown", "percentile", 0.5, 99.5,
           description="any modality: clipped to its 0.5-99.5th percentiles and scaled to [0, 1] (for files that "
                       "do not record their modality; name a modality or preset to use its own)"),
]}

DEFAULT_PRESET = {"CT": "ct_abdomen", "MR": "mri_percentile", "XR": "xray", "MG": "mammography",
                  "US": "ultrasound", "PT": "pet", "NM": "pet", "fundus": "fundus", "OCT": "oct",
                  "dermatoscopy": "dermatoscopy", "pathology": "pathology"}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise UnknownNameError("preset", name, PRESETS)
    return PRESETS[name]


UNKNOWN_MODALITY_REASON = "the file does not record its modality (give --modality or --preset)"


def choose_preset(modality: str, given: str | None = None, run_presets: Mapping[str, Any] | None = None,
                  colour: bool = False) -> tuple[Preset, str]:
    """The intensity preset an image gets at inference, and why, by the one rule every command and the app follow:
    the preset ``given`` (by name); else the one a training run recorded for ``modality`` (``run_presets``: modality
    -> name or :meth:`Preset.to_dict`); else ``rgb_unit`` for a ``colour`` image (a 2D image with 3 or more
    channels); else the modality's default (:func:`default_preset`); else, the modality being unknown,
    ``percentile``. (Training takes its presets from the data config, :class:`mmfm.data.datasets.SampleDataset`.)"""
    if given:
        return get_preset(given), "given"
    if run_presets and modality in run_presets:
        p = run_presets[modality]
        return (Preset.from_dict(p) if isinstance(p, dict) else get_preset(str(p))), "the run's"
    if colour:
        return get_preset("rgb_unit"), "colour image"
    if modality != "unknown":
        return default_preset(modality), f"default for {modality}"
    return get_preset("percentile"), UNKNOWN_MODALITY_REASON


def image_preset(img: Any, given: str | None = None, run_presets: Mapping[str, Any] | None = None
                 ) -> tuple[Preset, str]:
    """:func:`choose_preset` for an :class:`~mmfm.data.sample.Image`: its modality, and colour when it is a 2D
    image with 3 or more channels."""
    return choose_preset(img.modality, given, run_presets, colour=img.array.shape[0] >= 3 and img.spatial_dims == 2)


def default_preset(modality: str) -> Preset:
    """The documented default preset for a modality (``CT`` -> ``ct_abdomen``, ...)."""
    canon = canonical_modality(modality).split(":")[0]   # MR:T1 -> MR's preset (data.presets can name MR:T1)
    if canon == "unknown":
        raise ConfigError("the modality of these images is unknown: their file format does not record it",
                          "say which it is (data.options.modality=CT in a config, --modality CT on the command "
                          "line), so that the right intensity preset is applied")
    if canon not in DEFAULT_PRESET:
        raise UnknownNameError("modality with a preset", modality, DEFAULT_PRESET)
    return PRESETS[DEFAULT_PRESET[canon]]
