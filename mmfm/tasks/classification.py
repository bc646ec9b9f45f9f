"""Image classification: a linear head on an encoder's pooled features."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmfm.encoders import Encoder, encoder_from
from mmfm.tasks import TASKS


class ClassificationTask(nn.Module):
    """forward(batch{"image": (B, C, *spatial), "label": (B,)}) -> {"loss", "logits": (B, K)}."""

    def __init__(self, encoder: Encoder, num_classes: int, freeze_encoder: bool = False) -> None:
        super().__init__()
        self.encoder, self.num_classes = encoder, num_classes
        self.head = nn.Linear(encoder.out_dim, num_classes)
        if freeze_encoder:
            self.encoder.requires_grad_(False)

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(image)["pooled"])  # (B, K)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        logits = self.logits(batch["image"])
        return {"loss": F.cross_entropy(logits, batch["label"]), "logits": logits}

    @torch.no_grad()
    def predict(self, image: torch.Tensor) -> torch.Tensor:
        """Class probabilities (B, K)."""
        return self.logits(image).softmax(dim=-1)


@TASKS.register("classification")
def classification(encoder: dict[str, Any] | Encoder, num_classes: int, spatial_dims: int, in_channels: int,
                   freeze_encoder: bool = False) -> ClassificationTask:
    enc = encoder_from(encoder, spatial_dims, in_channels)
    return ClassificationTask(enc, num_classes, freeze_encoder)
