"""CNN encoders: MONAI's ResNet (2D or 3D by ``spatial_dims``), returning its last feature map as tokens."""

from __future__ import annotations

from typing import Any

import torch
from monai.networks.nets import ResNet

from mmfm.encoders.base import ENCODERS, Encoder


class ResNetEncoder(Encoder):
    """MONAI ResNet without its classifier.

    Shape: x (B, C, *spatial) -> tokens (B, N, D) from the last stage (N = prod of its spatial size),
    pooled (B, D) = mean over tokens.
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, layers: tuple[int, ...] = (1, 1, 1, 1),
                 widths: tuple[int, ...] = (32, 64, 128, 256), norm: Any = "batch") -> None:
        super().__init__()
        self.spatial_dims, self.in_channels, self.out_dim = spatial_dims, in_channels, widths[-1]
        if norm in ("instance", "group"):  # MONAI's ResNet initialises norm weights, so they must be affine
            norm = ("instance", {"affine": True}) if norm == "instance" else ("group", {"num_groups": 8})
        self.net = ResNet("basic", list(layers), list(widths), spatial_dims=spatial_dims,
                          n_input_channels=in_channels, conv1_t_size=3 if spatial_dims == 3 else 7,
                          conv1_t_stride=1 if spatial_dims == 3 else 2, feed_forward=False, norm=norm)
        del self.net.fc  # features only; a head belongs to a task or objective

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        tokens = self.pyramid(x)[-1].flatten(2).transpose(1, 2)   # (B, N, D) from the last stage
        return {"tokens": tokens, "pooled": tokens.mean(dim=1)}

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The outputs of the four stages (B, widths[l], *grid_l)."""
        n = self.net
        x = n.act(n.bn1(n.conv1(x)))
        if not n.no_max_pool:
            x = n.maxpool(x)
        out = []
        for layer in (n.layer1, n.layer2, n.layer3, n.layer4):
            x = layer(x)
            out.append(x)
        return out


@ENCODERS.register("resnet10")
def resnet10(spatial_dims: int = 2, in_channels: int = 1, norm: Any = "batch") -> ResNetEncoder:
    return ResNetEncoder(spatial_dims, in_channels, (1, 1, 1, 1), (64, 128, 256, 512), norm)


@ENCODERS.register("resnet_small")
def resnet_small(spatial_dims: int = 2, in_channels: int = 1, norm: Any = "batch") -> ResNetEncoder:
    return ResNetEncoder(spatial_dims, in_channels, (1, 1, 1, 1), (32, 64, 128, 256), norm)


@ENCODERS.register("resnet_tiny")
def resnet_tiny(spatial_dims: int = 2, in_channels: int = 1, norm: Any = "instance") -> ResNetEncoder:
    """For tests: 4 stages of 8-32 channels."""
    return ResNetEncoder(spatial_dims, in_channels, (1, 1, 1, 1), (8, 16, 16, 32), norm)
