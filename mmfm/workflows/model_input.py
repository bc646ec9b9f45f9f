"""An image as a trained run's image encoder sees it: the run's intensity preset, the slice a 2D model takes from a
volume, its channels and its input size. Shared by `mmfm explain`, zero-shot prediction and the app's image-text
panel (one definition: a model must see an image the same way in each)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mmfm.errors import ConfigError


def contract_preset(img: Any, contract: dict[str, Any], given: str | None) -> Any:
    """The intensity preset for ``img`` under a run's contract (:func:`mmfm.data.presets.choose_preset`)."""
    from mmfm.data.presets import image_preset

    return image_preset(img, given, contract.get("presets"))[0]


def model_input(img: Any, dims: int, channels: int, size: Sequence[int], preset: Any, slice_index: int | None
                ) -> tuple[torch.Tensor, int | None]:
    """(x (1, C, *size), the slice taken or None) from the image as the model was trained to see it: the preset,
    the middle (or given) slice of a volume for a 2D model, channels averaged for a 1-channel model, resized."""
    arr = preset(img.array.astype(np.float32))                      # (C, *spatial)
    k = None
    if dims == 2 and img.spatial_dims == 3:
        k = arr.shape[3] // 2 if slice_index is None else slice_index
        if not 0 <= k < arr.shape[3]:
            raise ConfigError(f"--slice {k} is outside the volume (0..{arr.shape[3] - 1})", "give a slice inside it")
        arr = arr[..., k]
    elif dims != img.spatial_dims:
        raise ConfigError(f"the model takes {dims}D input, the image is {img.spatial_dims}D",
                          "give a volume to a 3D model and an image or volume to a 2D model")
    if arr.shape[0] != channels:
        if channels == 1:
            arr = arr.mean(0, keepdims=True)
        else:
            raise ConfigError(f"the model takes {channels} channels, the image has {arr.shape[0]}",
                              "give an image with as many channels as the model was trained on")
    x = torch.from_numpy(np.ascontiguousarray(arr))[None]
    mode = "trilinear" if dims == 3 else "bilinear"
    return F.interpolate(x, size=tuple(size), mode=mode, align_corners=False), k


def dual_input(img: Any, spec: dict[str, Any], preset: str | None = None, slice_index: int | None = None
               ) -> tuple[torch.Tensor, int | None]:
    """(x (1, C, *size), slice or None) for the image tower of an image-text run (``spec`` from
    :func:`mmfm.workflows.towers.load_dual`)."""
    im, contract = spec["image"], spec.get("contract", {})
    size = contract["shape"][1:] if contract.get("shape") else [64] * im["spatial_dims"]
    return model_input(img, im["spatial_dims"], im["in_channels"], size, contract_preset(img, contract, preset),
                       slice_index)
