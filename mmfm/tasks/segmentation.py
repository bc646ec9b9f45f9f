"""Semantic segmentation (2D or 3D) with MONAI's BasicUNet and Dice + cross-entropy loss.

The U-Net here is a whole network; plugging a pretrained encoder into a decoder arrives with the vision
foundation-model work (its encoders expose multi-scale tokens).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.losses import DiceCELoss
from monai.networks.nets import BasicUNet
from torch import nn

from mmfm.tasks import TASKS


class SegmentationTask(nn.Module):
    """forward(batch{"image": (B, C, *s), "mask": (B, 1, *s) int}) -> {"loss", "logits": (B, K, *s)}."""

    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int,
                 features: Sequence[int] = (16, 16, 32, 64, 128, 16)) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.net = BasicUNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=num_classes,
                             features=tuple(features))
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        logits = self.net(batch["image"])
        return {"loss": self.loss(logits, batch["mask"]), "logits": logits}

    @torch.no_grad()
    def predict(self, image: torch.Tensor) -> torch.Tensor:
        """Label map (B, 1, *s)."""
        return self.net(image).argmax(dim=1, keepdim=True)


@TASKS.register("segmentation")
def segmentation(num_classes: int, spatial_dims: int, in_channels: int,
                 features: Sequence[int] = (16, 16, 32, 64, 128, 16), **_: Any) -> SegmentationTask:
    return SegmentationTask(spatial_dims, in_channels, num_classes, features)
