"""GLoRIA: global CLIP alignment plus local word-to-region alignment.

The image tower's tokens are its regions; the text tower's word pieces (special tokens and padding excluded) are
its words; both are projected by the dual encoder's projections. Loss = global_weight * eq. (6) +
local_weight * local loss (:class:`~mmfm.objectives.losses.GloriaLocalLoss`).
Reference: Huang et al., GLoRIA, ICCV 2021.
"""

from __future__ import annotations

from typing import Any

import torch

from mmfm.encoders import Encoder
from mmfm.encoders.text import TextEncoder
from mmfm.objectives.base import OBJECTIVES
from mmfm.objectives.clip import ImageTextObjective
from mmfm.objectives.losses import ClipLoss, GloriaLocalLoss, local_scores


class GLoRIA(ImageTextObjective):
    def __init__(self, encoder: Encoder, text_encoder: TextEncoder | None = None, local_weight: float = 1.0,
                 global_weight: float = 1.0, temp_attention: float = 4.0, temp_word: float = 5.0,
                 temp_local: float = 10.0,
                 embed_dim: int = 128, temperature: float = 0.07,
                 learn_temperature: bool = True, max_length: int = 64, freeze_text: bool = False) -> None:
        super().__init__(encoder, text_encoder, embed_dim, temperature, learn_temperature, max_length, freeze_text)
        self.local_weight, self.global_weight = local_weight, global_weight
        self.global_loss = ClipLoss()
        self.local_loss = GloriaLocalLoss(temp_attention, temp_word, temp_local)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        img = self.model.image_features(batch["image"], local=True)        # global (B, E), local (B, N, E)
        txt = self.model.text_features(self.texts(batch), local=True)      # global (B, E), local (B, L, E)
        return self.total({
            "global_loss": self.global_weight * self.global_loss(img["global"], txt["global"], self.model.logit_scale),
            "local_loss": self.local_weight * self.local_loss(img["local"], txt["local"], txt["mask"]),
        })

    @torch.no_grad()
    def attention_maps(self, image: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """Word-to-region attention of each text over its own image, (B, L, N) (for interpretability)."""
        img = self.model.image_features(image, local=True)
        txt = self.model.text_features(texts, local=True)
        _, attn = local_scores(img["local"], txt["local"], txt["mask"], self.local_loss.ta, self.local_loss.tw)
        idx = torch.arange(len(image))
        return attn[idx, idx]                                              # (B, L, N)


OBJECTIVES.register("gloria")(GLoRIA)
