"""Late fusion in feature space (review Fig. 3): an image tower and a text tower projected into one embedding
space, as in CLIP. It knows no loss; objectives (CLIP, GLoRIA, MedCLIP) train it, tasks (zero-shot, retrieval)
use it.

    encode_image(x: (B, C, *s)) -> (B, E) L2-normalised;  encode_text(texts: list[str]) -> (B, E)
    logit_scale: log(1 / temperature), learnable (``learn_temperature``)
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmfm.encoders.base import Encoder
from mmfm.encoders.text.base import TextEncoder


class DualEncoder(nn.Module):
    def __init__(self, image: Encoder, text: TextEncoder, embed_dim: int = 128, temperature: float = 0.07,
                 learn_temperature: bool = True, max_length: int = 64) -> None:
        super().__init__()
        self.image, self.text, self.embed_dim, self.max_length = image, text, embed_dim, max_length
        self.image_proj = nn.Linear(image.out_dim, embed_dim, bias=False)
        self.text_proj = nn.Linear(text.out_dim, embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / temperature)), requires_grad=learn_temperature)

    def image_features(self, x: torch.Tensor, local: bool = False) -> dict[str, torch.Tensor]:
        """Projected, unnormalised: {"global": (B, E)} and with ``local`` {"local": (B, N, E)} (per token/region;
        only GLoRIA-style objectives need it, so CLIP does not pay for projecting every token)."""
        f = self.image(x)
        out = {"global": self.image_proj(f["pooled"])}
        if local:
            out["local"] = self.image_proj(f["tokens"])
        return out

    def text_features(self, texts: list[str] | dict[str, torch.Tensor], local: bool = False
                      ) -> dict[str, torch.Tensor]:
        """Projected, unnormalised: {"global": (B, E)} and with ``local`` {"local": (B, L, E), "mask": (B, L)}."""
        tok = self.text.tokenize(texts, self.max_length) if not isinstance(texts, dict) else texts
        f = self.text(**tok)
        out = {"global": self.text_proj(f["pooled"])}
        if local:
            out["local"], out["mask"] = self.text_proj(f["tokens"]), f["mask"]
        return out

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_features(x)["global"], dim=-1)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        return F.normalize(self.text_features(texts)["global"], dim=-1)

    def spec(self) -> dict[str, Any]:
        return {"embed_dim": self.embed_dim, "max_length": self.max_length}
