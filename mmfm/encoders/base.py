"""The encoder interface and registry."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmfm.errors import ConfigError
from mmfm.registry import Registry


class Encoder(nn.Module):
    """Features only. Subclasses set ``out_dim``, ``spatial_dims``, ``in_channels`` and implement ``forward``.

    forward(x: (B, C, *spatial)) -> {"tokens": (B, N, D), "pooled": (B, D)}

    ``contract`` is the preprocessing contract: the modality preset, input size and spacing the encoder's weights
    expect (empty for an encoder trained from scratch); it is stored with every checkpoint.
    """

    out_dim: int
    spatial_dims: int
    in_channels: int
    contract: dict[str, Any] = {}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # pragma: no cover - interface
        raise NotImplementedError

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Intermediate feature maps (B, C_l, *grid_l), shallow to deep, for U-Net-like decoders (UNETR, Swin
        UNETR). Hierarchical encoders halve the grid from one level to the next; a ViT gives its hidden states on
        the one token grid. Encoders without intermediate features raise."""
        raise ConfigError(f"the {type(self).__name__} exposes no intermediate features",
                          "use task.decoder=token, or an encoder with a pyramid (vit_*, swin_*, resnet*)")

    def set_grad_checkpointing(self, enable: bool = True) -> bool:
        """Recompute each block's activations in the backward pass instead of keeping them (``train.
        grad_checkpointing``: far less activation memory for large models and 3D, about one more forward of
        compute). Returns whether this encoder supports it; those that do override this."""
        return False


ENCODERS: Registry[Encoder] = Registry("encoder")


def enable_grad_checkpointing(model: nn.Module) -> list[str]:
    """Switch on gradient checkpointing in every encoder (image or text) inside ``model`` that supports it;
    return the names of the modules that took it."""
    from mmfm.encoders.text.base import TextEncoder

    return [name or type(model).__name__ for name, m in model.named_modules()
            if isinstance(m, (Encoder, TextEncoder)) and callable(getattr(m, "set_grad_checkpointing", None))
            and m.set_grad_checkpointing(True)]


def swap_class(root: nn.Module, old: type, new: type) -> None:
    """Give every module of exactly class ``old`` inside ``root`` the subclass ``new`` (same parameters and
    buffers, another ``forward``): how mmfm puts fused attention into a library's modules without copying them."""
    for m in root.modules():
        if type(m) is old:
            m.__class__ = new


def build_encoder(name: str, **kwargs: Any) -> Encoder:
    return ENCODERS.build(name, **kwargs)


def encoder_from(encoder: dict[str, Any] | Encoder, spatial_dims: int, in_channels: int) -> Encoder:
    """A task's encoder: built from its config section, or one already built (a pretrained encoder), which must
    take inputs of this dimensionality and channel count."""
    if isinstance(encoder, nn.Module):
        have = (getattr(encoder, "spatial_dims", spatial_dims), getattr(encoder, "in_channels", in_channels))
        if have != (spatial_dims, in_channels):
            raise ConfigError(f"the encoder takes {have[0]}D images with {have[1]} channel(s), the data is "
                              f"{spatial_dims}D with {in_channels}", "use data of the encoder's kind (data.size, "
                                                                     "data.channels), or another encoder")
        return encoder
    if "name" not in encoder:
        raise ConfigError("the encoder section has no name", "set encoder.name (e.g. vit_mini), or encoder.weights")
    return build_encoder(encoder["name"], spatial_dims=spatial_dims, in_channels=in_channels,
                         **{k: v for k, v in encoder.items() if k != "name"})


def adapt_input_channels(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Pretrained first-layer weights (D, C, *k) for another number of input channels, as timm does
    (sum RGB into 1 channel; repeat and rescale for more)."""
    from timm.models import adapt_input_conv

    if weight.shape[1] == in_channels:
        return weight
    if weight.ndim == 4:
        return adapt_input_conv(in_channels, weight)
    d, c = weight.shape[:2]  # N-D kernels: the same rule, by hand (timm's helper is 2D only)
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = -(-in_channels // c)
    return weight.repeat(1, reps, *([1] * (weight.ndim - 2)))[:, :in_channels] * (c / in_channels)


def to_channels_last(model: nn.Module) -> nn.Module:
    """Convolution weights (4D, 5D) in channels-last order; a convolution then also returns channels-last
    activations, which oneDNN and cuDNN run faster (no layout conversions around each convolution).
    ``Tensor.to`` rather than ``contiguous``: a 1x1 or depthwise kernel counts as contiguous in both layouts, and
    ``contiguous`` would keep its ambiguous strides, which send oneDNN down the slow path (20% slower LiteMedSAM)."""
    for p in model.parameters():
        if p.dim() == 4:
            p.data = p.data.to(memory_format=torch.channels_last)
        elif p.dim() == 5:
            p.data = p.data.to(memory_format=torch.channels_last_3d)
    return model
