"""The objective interface and registry."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmfm.encoders import Encoder
from mmfm.registry import Registry


class Objective(nn.Module):
    """forward(batch{"image": (B, C, *s), ...}) -> {"loss": scalar, "<term>_loss": scalar, ...}.

    ``encoder`` is the pretrained network; everything else (heads, decoders, queues) belongs to the objective.
    ``inputs`` names what its batches carry: ``("image",)`` for vision objectives, ``("image", "text")`` for
    image-text objectives (which also hold ``text_encoder`` and a :class:`~mmfm.encoders.dual.DualEncoder` as
    ``model``), ``("text",)`` for report-only objectives (whose ``encoder`` is the text tower).
    """

    encoder: Encoder
    inputs: tuple[str, ...] = ("image",)
    couples_samples: bool = False   # a sample's loss depends on the other samples of its batch (negatives)

    @staticmethod
    def total(terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"loss": sum(terms.values()), **terms}  # type: ignore[dict-item]


OBJECTIVES: Registry[Objective] = Registry("objective")


CONTEXT_KEYS = ("image_size", "text_encoder", "num_labels")  # what a workflow knows about the data and towers


def build_objective(name: str, encoder: Encoder, **kwargs: Any) -> Objective:
    """Options are checked against the objective's signature (a typo is an error with a hint); the context keys
    (``image_size``, ``text_encoder``, ``num_labels``) are passed only to objectives that take them."""
    context = {k: kwargs.pop(k) for k in CONTEXT_KEYS if k in kwargs}
    return OBJECTIVES.build_with(name, kwargs, {"encoder": encoder, **context}, "objective")
