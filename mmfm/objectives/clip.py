"""Image-text contrastive pretraining: CLIP (review eq. 6) and MedCLIP's soft semantic targets.

Batches carry ``image`` (B, C, *s) and ``text`` (B strings); for label-based soft targets also ``labels``
(B, K) multi-hot or ``label`` (B,) ints. Both towers come from the registries; the
:class:`~mmfm.encoders.dual.DualEncoder` holds the projections and the learnable temperature.
References: Radford et al., CLIP, 2021; Wang et al., MedCLIP, EMNLP 2022.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from mmfm.encoders import Encoder
from mmfm.encoders.dual import DualEncoder
from mmfm.encoders.text import TextEncoder
from mmfm.errors import ConfigError
from mmfm.objectives.base import OBJECTIVES, Objective
from mmfm.objectives.losses import ClipLoss
from mmfm.objectives.text_masking import text_groups


class ImageTextObjective(Objective):
    couples_samples = True

    inputs = ("image", "text")

    def __init__(self, encoder: Encoder, text_encoder: TextEncoder | None = None, embed_dim: int = 128,
                 temperature: float = 0.07, learn_temperature: bool = True, max_length: int = 64,
                 freeze_text: bool = False) -> None:
        super().__init__()
        if text_encoder is None:
            raise ConfigError(f"{type(self).__name__} needs a text tower", "set text_encoder.name (e.g. minilm)")
        self.encoder, self.text_encoder = encoder, text_encoder
        self.model = DualEncoder(encoder, text_encoder, embed_dim, temperature, learn_temperature, max_length)
        self.freeze_text = freeze_text
        if freeze_text:  # a locked pretrained text tower (only its projection learns), as in LiT with roles swapped
            text_encoder.requires_grad_(False)

    def train(self, mode: bool = True) -> ImageTextObjective:
        super().train(mode)
        if self.freeze_text:
            self.text_encoder.eval()  # a locked tower keeps its dropout off
        return self

    @staticmethod
    def texts(batch: dict[str, Any]) -> list[str]:
        if "text" not in batch:
            raise ConfigError("image-text objectives need 'text' in each batch",
                              "pretrain on image-text pairs (data.set with captions or reports)")
        return list(batch["text"])


class CLIP(ImageTextObjective):
    """``duplicates``: "negative" (eq. 6 as written: every other pair is a negative) or "positive" (pairs whose
    texts are identical share the target)."""

    def __init__(self, encoder: Encoder, text_encoder: TextEncoder | None = None, duplicates: str = "negative",
                 embed_dim: int = 128, temperature: float = 0.07,
                 learn_temperature: bool = True, max_length: int = 64, freeze_text: bool = False) -> None:
        super().__init__(encoder, text_encoder, embed_dim, temperature, learn_temperature, max_length, freeze_text)
        if duplicates not in ("negative", "positive"):
            raise ConfigError(f"duplicates='{duplicates}'", "use negative or positive")
        self.duplicates = duplicates
        self.loss = ClipLoss()

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        texts = self.texts(batch)
        v = self.model.image_features(batch["image"])["global"]          # (B, E)
        t = self.model.text_features(texts)["global"]                    # (B, E)
        groups = text_groups(texts).to(v.device) if self.duplicates == "positive" else None
        return self.total({"clip_loss": self.loss(v, t, self.model.logit_scale, groups=groups)})


class MedCLIP(ImageTextObjective):
    """Soft targets from semantic similarity (MedCLIP's knowledge-driven matching):

    * ``semantic="labels"``   the batch's multi-hot ``labels`` (or one-hot ``label`` with ``num_labels`` classes);
    * ``semantic="findings"`` finding labels extracted from each report by the rule-based labeller (with a
      "no finding" column), as MedCLIP extracts entities from reports;
    * ``semantic="text"``     hashed bag-of-words vectors of the texts, so identical and near-duplicate reports
      share the target mass. (Not the text tower's own embeddings: at initialisation they make every pair look
      alike and the targets uniform.)
    """

    def __init__(self, encoder: Encoder, text_encoder: TextEncoder | None = None, semantic: str = "labels",
                 soft_temperature: float = 0.1, num_labels: int = 0,
                 embed_dim: int = 128, temperature: float = 0.07,
                 learn_temperature: bool = True, max_length: int = 64, freeze_text: bool = False) -> None:
        super().__init__(encoder, text_encoder, embed_dim, temperature, learn_temperature, max_length, freeze_text)
        if semantic not in ("labels", "findings", "text"):
            raise ConfigError(f"semantic='{semantic}'", "use labels, findings or text")
        self.semantic, self.num_labels = semantic, num_labels
        self.loss = ClipLoss(soft_temperature=soft_temperature)

    def semantic_features(self, batch: dict[str, Any], t: torch.Tensor) -> torch.Tensor:
        if self.semantic == "text":
            return bag_of_words(self.texts(batch)).to(t.device)
        if self.semantic == "findings":
            from mmfm.data.labeller import label_matrix

            found = torch.from_numpy(label_matrix(self.texts(batch))).float()
            return torch.cat([found, (found.sum(1, keepdim=True) == 0).float()], dim=1).to(t.device)
        if "labels" in batch:
            return batch["labels"].float()
        if "label" in batch and self.num_labels:
            return F.one_hot(batch["label"].long(), self.num_labels).float()
        raise ConfigError("MedCLIP with semantic=labels needs 'labels' (multi-hot) or 'label' plus num_labels",
                          "set objective.semantic=text, or pretrain on data with labels")

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        v = self.model.image_features(batch["image"])["global"]
        t = self.model.text_features(self.texts(batch))["global"]
        sem = self.semantic_features(batch, t)                             # (B, K)
        return self.total({"clip_loss": self.loss(v, t, self.model.logit_scale, semantic=sem)})


def bag_of_words(texts: list[str], dims: int = 2048) -> torch.Tensor:
    """(B, dims) word counts hashed with CRC-32 (the same in every process)."""
    import re
    import zlib

    out = torch.zeros(len(texts), dims)
    for i, t in enumerate(texts):
        for w in re.findall(r"[a-z0-9]+", t.lower()):
            out[i, zlib.crc32(w.encode()) % dims] += 1.0
    return out



OBJECTIVES.register("clip")(CLIP)
OBJECTIVES.register("medclip")(MedCLIP)
