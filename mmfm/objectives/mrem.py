"""MReM: masked record modelling - reconstruct masked image patches and masked report tokens together.

The image branch is SimMIM on the image tower (any encoder; high mask ratio). The report branch masks word
pieces (BERT's rule) and predicts them from the text tower's tokens plus the projected global feature of the
*masked* image, so the report restoration uses image information (the review's "combining the global feature
with the report tokens"). Loss = image_weight * L1 on masked pixels + text_weight * cross-entropy on masked
pieces. Reference: Zhou et al., Advancing radiograph representation learning with masked record modelling, ICLR 2023.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmfm.encoders import Encoder
from mmfm.encoders.text import TextEncoder
from mmfm.errors import ConfigError
from mmfm.objectives.base import OBJECTIVES, Objective
from mmfm.objectives.masked import SimMIM
from mmfm.objectives.report_text import MaskedLanguageModel


class MReM(Objective):
    inputs = ("image", "text")

    def __init__(self, encoder: Encoder, text_encoder: TextEncoder | None = None, mask_ratio: float = 0.75,
                 text_mask_prob: float = 0.3, image_weight: float = 1.0, text_weight: float = 1.0,
                 max_length: int = 64, image_size: int = 32, mask_patch: int = 4, masking: str = "random") -> None:
        super().__init__()
        if text_encoder is None:
            raise ConfigError("MReM needs a text tower", "set text_encoder.name (e.g. bert_tiny)")
        self.encoder, self.text_encoder = encoder, text_encoder
        self.mim = SimMIM(encoder, mask_ratio=mask_ratio, masking=masking, image_size=image_size,
                          mask_patch=mask_patch)
        self.fuse = nn.Linear(encoder.out_dim, text_encoder.out_dim)        # image global -> text space
        self.mlm = MaskedLanguageModel(text_encoder, text_mask_prob, max_length)
        self.image_weight, self.text_weight = image_weight, text_weight

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        x = batch["image"]
        grid = tuple(s // self.mim.patch for s in x.shape[2:])
        mask = self.mim.make_mask(x, grid)
        feats = self.mim.encode_masked(x, mask)                             # tokens (B, N, D), pooled (B, D)
        recon, _ = self.mim.reconstruction_loss(feats["tokens"], x, mask)
        mlm = self.mlm.mlm_loss(list(batch["text"]), condition=self.fuse(feats["pooled"]))  # image-informed
        return self.total({"image_loss": self.image_weight * recon, "text_loss": self.text_weight * mlm})


OBJECTIVES.register("mrem")(MReM)
