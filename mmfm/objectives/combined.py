"""Any objectives combined by weights on one shared encoder (config: ``objective: {name: combined, parts: [...]}``).

Loss keys are prefixed by the part's name (``mae.recon_loss``), scaled by its weight, and sum to ``loss``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmfm.encoders import Encoder
from mmfm.errors import ConfigError
from mmfm.objectives.base import OBJECTIVES, Objective


class Combined(Objective):
    def __init__(self, encoder: Encoder, parts: list[dict[str, Any]] | None = None, image_size: int = 32) -> None:
        super().__init__()
        if not parts:
            raise ConfigError("objective 'combined' needs parts", "e.g. parts: [{name: mae, weight: 1}, "
                                                                   "{name: simclr, weight: 0.5}]")
        self.encoder = encoder
        self.parts = nn.ModuleDict()
        self.weights: dict[str, float] = {}
        for p in parts:
            if "name" not in p:
                raise ConfigError("objective 'combined': a part has no name", "e.g. parts: [{name: mae}]")
            opts = {k: v for k, v in p.items() if k not in ("name", "weight")}
            self.parts[p["name"]] = OBJECTIVES.build_with(p["name"], opts, {"encoder": encoder,
                                                                            "image_size": image_size},
                                                          f"objective.parts.{p['name']}")
            self.weights[p["name"]] = float(p.get("weight", 1.0))

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        terms = {}
        for name, obj in self.parts.items():
            out = obj(batch)
            for k, v in out.items():
                if k.endswith("_loss"):
                    terms[f"{name}.{k}"] = self.weights[name] * v
        return self.total(terms)


OBJECTIVES.register("combined")(Combined)
