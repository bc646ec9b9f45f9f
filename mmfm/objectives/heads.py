"""Heads that objectives own: projection MLPs and a pixel decoder that works for any encoder with a token grid."""

from __future__ import annotations

import math

import torch
from torch import nn

from mmfm.encoders import Encoder
from mmfm.objectives.masking import unpatchify


def projection_head(in_dim: int, out_dim: int = 128, hidden: int = 512) -> nn.Module:
    """SimCLR/MoCo v2 projection MLP."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))


@torch.no_grad()
def token_stride(encoder: Encoder, image_size: int) -> int:
    """Pixels per token along each axis, from a dry run on a zero image of side ``image_size``."""
    was = encoder.training
    encoder.eval()
    x = torch.zeros(1, encoder.in_channels, *[image_size] * encoder.spatial_dims)
    n = encoder(x)["tokens"].shape[1]
    encoder.train(was)
    return round((image_size ** encoder.spatial_dims / n) ** (1 / encoder.spatial_dims))


class PixelDecoder(nn.Module):
    """tokens (B, N, D) on a grid -> image (B, C, *s): one linear map per token to its stride^d * C pixels
    (SimMIM's light decoder)."""

    def __init__(self, dim: int, channels: int, stride: int, spatial_dims: int) -> None:
        super().__init__()
        self.channels, self.stride = channels, stride
        self.proj = nn.Linear(dim, stride ** spatial_dims * channels)

    def forward(self, tokens: torch.Tensor, image_shape: tuple[int, ...]) -> torch.Tensor:
        grid = tuple(v // self.stride for v in image_shape[2:])
        if math.prod(grid) != tokens.shape[1]:
            raise ValueError(f"{tokens.shape[1]} tokens do not tile an image of {image_shape[2:]} at stride "
                             f"{self.stride}; pretrain at the image size the objective was built for")
        return unpatchify(self.proj(tokens), self.stride, grid, self.channels)   # (B, C, *s)
