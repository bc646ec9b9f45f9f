"""Contrastive proxy tasks: SimCLR, MoCo, MICLe (same-patient positives) and PCL (slice-position positives).

Batches carry ``image`` (B, C, *s) and, for MICLe and PCL, ``patient`` (B,) ints and ``position`` (B,) floats
in [0, 1] (the slice's relative position in its volume). Views come from modality-aware augmentations.
References: Chen et al., SimCLR, 2020; He et al., MoCo, 2020; Azizi et al., MICLe, 2021; Zeng et al., PCL, 2021.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F

from mmfm.encoders import Encoder
from mmfm.errors import ConfigError
from mmfm.objectives.augment import augment
from mmfm.objectives.base import OBJECTIVES, Objective
from mmfm.objectives.heads import projection_head
from mmfm.objectives.losses import InfoNCELoss, MultiPositiveNCELoss, NTXentLoss


class SimCLR(Objective):
    couples_samples = True

    def __init__(self, encoder: Encoder, temperature: float = 0.1, proj_dim: int = 128, modality: str = "CT") -> None:
        super().__init__()
        self.encoder, self.modality = encoder, modality
        self.head = projection_head(encoder.out_dim, proj_dim)
        self.loss = NTXentLoss(temperature)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x)["pooled"])

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        x = batch["image"]
        z1, z2 = self.embed(augment(x, self.modality)), self.embed(augment(x, self.modality))
        return self.total({"contrast_loss": self.loss(z1, z2)})


class MoCo(Objective):
    """Query encoder + momentum key encoder (EMA) + a queue of keys as negatives (MoCo v2)."""
    couples_samples = True


    def __init__(self, encoder: Encoder, temperature: float = 0.2, proj_dim: int = 128, queue_size: int = 1024,
                 momentum: float = 0.99, modality: str = "CT") -> None:
        super().__init__()
        self.encoder, self.modality, self.momentum = encoder, modality, momentum
        self.head = projection_head(encoder.out_dim, proj_dim)
        self.key_encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.key_head = copy.deepcopy(self.head).requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(queue_size, proj_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.loss = InfoNCELoss(temperature)

    @torch.no_grad()
    def _momentum_update(self) -> None:
        for q, k in zip(list(self.encoder.parameters()) + list(self.head.parameters()),
                        list(self.key_encoder.parameters()) + list(self.key_head.parameters())):
            k.mul_(self.momentum).add_(q.detach(), alpha=1 - self.momentum)

    @torch.no_grad()
    def _enqueue(self, k: torch.Tensor) -> None:
        from mmfm.objectives.losses import gather_with_grad

        k = gather_with_grad(k)
        n, ptr = len(k), int(self.queue_ptr)
        idx = (torch.arange(n, device=k.device) + ptr) % len(self.queue)
        # under autocast the keys are bf16/fp16; the queue stays fp32 (the loss reads it in fp32)
        self.queue[idx] = F.normalize(k.float(), dim=1).to(self.queue.dtype)
        self.queue_ptr.fill_((ptr + n) % len(self.queue))

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        x = batch["image"]
        q = self.head(self.encoder(augment(x, self.modality))["pooled"])
        with torch.no_grad():
            self._momentum_update()
            k = self.key_head(self.key_encoder(augment(x, self.modality))["pooled"])
        loss = self.loss(q, k, self.queue.clone().detach())
        self._enqueue(k)
        return self.total({"contrast_loss": loss})


class GroupContrast(Objective):
    """One augmented view per image plus a second view; positives are views of images in the same group."""
    couples_samples = True


    group_key = ""

    def __init__(self, encoder: Encoder, temperature: float = 0.1, proj_dim: int = 128, modality: str = "CT") -> None:
        super().__init__()
        self.encoder, self.modality = encoder, modality
        self.head = projection_head(encoder.out_dim, proj_dim)
        self.loss = MultiPositiveNCELoss(temperature)

    def groups(self, batch: dict[str, Any]) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        if self.group_key not in batch:
            raise ConfigError(f"{type(self).__name__} needs '{self.group_key}' in each batch",
                              "pretrain on a dataset with patient ids and slice positions (e.g. mini slices2d)")
        x = batch["image"]
        g = self.groups(batch)
        z = self.head(self.encoder(torch.cat([augment(x, self.modality), augment(x, self.modality)]))["pooled"])
        return self.total({"contrast_loss": self.loss(z, torch.cat([g, g]))})


class MICLe(GroupContrast):
    """Multi-instance contrast: different images of the same patient (or study) are positives."""

    group_key = "patient"

    def groups(self, batch: dict[str, Any]) -> torch.Tensor:
        return batch["patient"].long()


class PCL(GroupContrast):
    """Positional contrast: slices at similar relative positions in their volumes (same of ``bins`` partitions)
    are positives, across patients; far-apart positions are negatives."""

    group_key = "position"

    def __init__(self, encoder: Encoder, temperature: float = 0.1, proj_dim: int = 128, modality: str = "CT",
                 bins: int = 4) -> None:
        super().__init__(encoder, temperature, proj_dim, modality)
        self.bins = bins

    def groups(self, batch: dict[str, Any]) -> torch.Tensor:
        return (batch["position"].float().clamp(0, 1 - 1e-6) * self.bins).long()


OBJECTIVES.register("simclr")(SimCLR)
OBJECTIVES.register("moco")(MoCo)
OBJECTIVES.register("micle")(MICLe)
OBJECTIVES.register("pcl")(PCL)
