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
        # temperature scaling (mmfm.trust.temperature): predict() divides the logits by it. Not part of the
        # weights (checkpoints stay as trained); a run stores it in calibration.json and load_trained sets it.
        self.register_buffer("temperature", torch.ones(()), persistent=False)
        if freeze_encoder:
            self.encoder.requires_grad_(False)

    @property
    def takes_presence(self) -> bool:
        """Whether the encoder uses which modalities are present (late fusion); early fusion sees zeros."""
        return bool(getattr(self.encoder, "takes_presence", False))

    def logits(self, image: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
        feats = self.encoder(image, present) if (present is not None and self.takes_presence) else self.encoder(image)
        return self.head(feats["pooled"])  # (B, K)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        logits = self.logits(batch["image"], batch.get("present"))
        return {"loss": F.cross_entropy(logits, batch["label"]), "logits": logits}

    @torch.no_grad()
    def predict(self, image: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
        """Class probabilities (B, K), temperature-scaled; ``present`` (B, M): the modalities each sample has
        (late fusion)."""
        return (self.logits(image, present) / self.temperature).softmax(dim=-1)


@TASKS.register("classification")
def classification(encoder: dict[str, Any] | Encoder, num_classes: int, spatial_dims: int, in_channels: int,
                   freeze_encoder: bool = False) -> ClassificationTask:
    enc = encoder_from(encoder, spatial_dims, in_channels)
    return ClassificationTask(enc, num_classes, freeze_encoder)
