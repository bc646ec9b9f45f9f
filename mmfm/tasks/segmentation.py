"""Semantic segmentation (2D or 3D) with Dice + cross-entropy loss (MONAI's ``DiceCELoss``).

Two networks, chosen by ``task.network``:

* ``encoder`` (default): the configured registry encoder (``encoder.name``; ViT, Swin, ResNet, LiteMedSAM, ...)
  with a light progressive-upsampling decoder over its tokens (SETR-PUP style) and one full-resolution skip
  from the input, so that a pretrained encoder is what is being adapted.
* ``basicunet``: MONAI's BasicUNet trained from scratch, a whole network of its own; the ``encoder`` section is
  not used (said in the log).

Reference: Zheng et al., SETR, CVPR 2021; Falk et al., U-Net, 2019 (MONAI BasicUNet).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from monai.networks.blocks import Convolution
from monai.networks.nets import BasicUNet
from torch import nn

from mmfm.encoders import Encoder, encoder_from
from mmfm.errors import ConfigError
from mmfm.tasks import TASKS

NETWORKS = ("encoder", "basicunet")


def token_grid(n_tokens: int, spatial: Sequence[int]) -> tuple[int, ...]:
    """The grid (per axis) that ``n_tokens`` tokens of an input of ``spatial`` size lie on, for an encoder with
    one stride on every axis (ceil division, as strided convolutions with padding give)."""
    for stride in (1, 2, 4, 8, 16, 32, 64):
        grid = tuple(math.ceil(s / stride) for s in spatial)
        if math.prod(grid) == n_tokens:
            return grid
    raise ConfigError(f"cannot place {n_tokens} encoder tokens on a grid for an input of size {tuple(spatial)}",
                      "use an encoder whose tokens form a regular grid (ViT, Swin, ResNet), or task.network=basicunet")


class TokenDecoder(nn.Module):
    """tokens (B, N, D) on a grid -> logits (B, K, *s): 1x1 projection, then x2 upsampling + conv until the
    input size, concatenated with a conv of the input image (the one skip), then a 1x1 head."""

    def __init__(self, spatial_dims: int, in_channels: int, token_dim: int, num_classes: int,
                 channels: int = 64) -> None:
        super().__init__()
        norm = ("group", {"num_groups": 8})  # works on a 1-voxel grid too (instance norm does not)
        conv = lambda i, o: Convolution(spatial_dims, i, o, kernel_size=3, norm=norm, act="relu")  # noqa: E731
        self.proj = Convolution(spatial_dims, token_dim, channels, kernel_size=1, norm=norm, act="relu")
        self.up = conv(channels, channels)
        self.skip = conv(in_channels, channels // 2)
        self.fuse = conv(channels + channels // 2, channels)
        self.head = Convolution(spatial_dims, channels, num_classes, kernel_size=1, conv_only=True)

    def forward(self, tokens: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        spatial = tuple(image.shape[2:])
        grid = token_grid(tokens.shape[1], spatial)
        x = self.proj(tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid))  # (B, C, *g)
        while any(g < s for g, s in zip(x.shape[2:], spatial)):
            size = tuple(min(2 * g, s) for g, s in zip(x.shape[2:], spatial))
            x = self.up(F.interpolate(x, size=size, mode="nearest"))                         # (B, C, *2g)
        return self.head(self.fuse(torch.cat([x, self.skip(image)], dim=1)))                 # (B, K, *s)


class SegmentationTask(nn.Module):
    """forward(batch{"image": (B, C, *s), "mask": (B, 1, *s) int}) -> {"loss", "logits": (B, K, *s)}."""

    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int,
                 features: Sequence[int] = (16, 16, 32, 64, 128, 16), encoder: Encoder | None = None,
                 decoder_channels: int = 64) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.encoder = encoder
        if encoder is None:
            self.net: nn.Module = BasicUNet(spatial_dims=spatial_dims, in_channels=in_channels,
                                            out_channels=num_classes, features=tuple(features))
        else:
            self.net = TokenDecoder(spatial_dims, in_channels, encoder.out_dim, num_classes, decoder_channels)
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True)

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        if self.encoder is None:
            return self.net(image)
        return self.net(self.encoder(image)["tokens"], image)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        logits = self.logits(batch["image"])
        return {"loss": self.loss(logits, batch["mask"]), "logits": logits}

    @torch.no_grad()
    def predict(self, image: torch.Tensor) -> torch.Tensor:
        """Label map (B, 1, *s)."""
        return self.logits(image).argmax(dim=1, keepdim=True)


@TASKS.register("segmentation")
def segmentation(num_classes: int, spatial_dims: int, in_channels: int,
                 encoder: dict[str, Any] | Encoder | None = None,
                 network: str = "encoder", features: Sequence[int] = (16, 16, 32, 64, 128, 16),
                 decoder_channels: int = 64, freeze_encoder: bool = False) -> SegmentationTask:
    if network not in NETWORKS:
        raise ConfigError(f"task.network='{network}' is not a segmentation network", f"use one of {NETWORKS}")
    if network == "basicunet":
        return SegmentationTask(spatial_dims, in_channels, num_classes, features)
    if encoder is None or (isinstance(encoder, dict) and "name" not in encoder):
        raise ConfigError("segmentation with task.network=encoder needs an encoder", "set encoder.name, e.g. "
                          "vit_mini, encoder.weights=<pretrain run>, or task.network=basicunet")
    enc = encoder_from(encoder, spatial_dims, in_channels)
    if freeze_encoder:
        enc.requires_grad_(False)
    return SegmentationTask(spatial_dims, in_channels, num_classes, encoder=enc, decoder_channels=decoder_channels)
