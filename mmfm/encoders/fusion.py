"""Late fusion (review Fig. 3): one encoder per modality, features fused in feature space.

Early fusion stacks the modalities as input channels of one encoder (``data.modalities``, the default). Late
fusion gives each modality its own encoder (same architecture, own weights) and averages their pooled features
over the modalities *present* in each sample, so any subset of modalities gives a valid feature (any-subset
inference; with ``data.missing_modalities=zero`` the data layer says which are present in ``item["present"]``;
without it, a modality whose channels are all zero counts as absent, which is how mmfm fills a missing one).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmfm.encoders.base import ENCODERS, Encoder, build_encoder
from mmfm.errors import ConfigError


class LateFusionEncoder(Encoder):
    """forward(x (B, sum(groups), *spatial), present (B, M) or None) -> {"pooled": (B, D), "tokens": (B, M, D)}.

    ``tokens`` are the per-modality features (absent ones included, weighted out of ``pooled``)."""

    takes_presence = True

    def __init__(self, branches: list[Encoder], groups: list[int]) -> None:
        super().__init__()
        dims = {b.out_dim for b in branches}
        if len(dims) != 1:
            raise ConfigError(f"late fusion needs branches with one feature size, got {sorted(dims)}",
                              "use the same encoder for every modality")
        self.branches, self.groups = nn.ModuleList(branches), list(groups)
        self.out_dim, self.spatial_dims, self.in_channels = dims.pop(), branches[0].spatial_dims, sum(groups)

    def _weights(self, x: torch.Tensor, present: torch.Tensor | None) -> torch.Tensor:
        """(B, M) weight of each modality: ``present``, else whether its channels hold anything (mmfm fills a
        missing modality with zeros); a sample with none is averaged over all."""
        if present is None:
            present = torch.stack([c.flatten(1).abs().sum(1) > 0 for c in torch.split(x, self.groups, dim=1)], 1)
        w = present.to(x.dtype)
        return torch.where(w.sum(1, keepdim=True) > 0, w, torch.ones_like(w))

    @staticmethod
    def _mean(feats: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """feats (B, M, ...) averaged over M with weights w (B, M)."""
        shape = (*w.shape, *([1] * (feats.ndim - 2)))
        return (feats * w.reshape(shape)).sum(1) / w.sum(1).reshape(-1, *([1] * (feats.ndim - 2)))

    def forward(self, x: torch.Tensor, present: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if x.shape[1] != self.in_channels:
            raise ConfigError(f"late fusion expects {self.in_channels} channels {self.groups}, got {x.shape[1]}")
        feats = torch.stack([b(c)["pooled"] for b, c in zip(self.branches, torch.split(x, self.groups, dim=1))], 1)
        return {"pooled": self._mean(feats, self._weights(x, present)), "tokens": feats}

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each level averaged over the modalities present (segmentation with U-Net-like decoders); the branches
        must have pyramids."""
        levels = [b.pyramid(c) for b, c in zip(self.branches, torch.split(x, self.groups, dim=1))]
        w = self._weights(x, None)
        return [self._mean(torch.stack([lv[i] for lv in levels], 1), w) for i in range(len(levels[0]))]

    def set_grad_checkpointing(self, enable: bool = True) -> bool:
        return any([b.set_grad_checkpointing(enable) for b in self.branches])


@ENCODERS.register("late_fusion")
def late_fusion(spatial_dims: int = 2, in_channels: int = 2, branch: dict[str, Any] | None = None,
                modalities: int = 2, groups: list[int] | None = None) -> LateFusionEncoder:
    """``branch``: the per-modality encoder's config (default resnet_tiny); ``groups``: channels per modality in
    input order (default: ``in_channels`` split evenly over ``modalities``)."""
    branch = dict(branch or {"name": "resnet_tiny"})
    if "name" not in branch:
        raise ConfigError("encoder.branch needs a name", "e.g. encoder.branch={name: resnet_small}")
    if not groups:
        if modalities < 1 or in_channels % modalities:
            raise ConfigError(f"{in_channels} input channels do not split evenly over {modalities} modalities",
                              "set encoder.groups (channels per modality, in data.modalities order)")
        groups = [in_channels // modalities] * modalities
    if sum(groups) != in_channels:
        raise ConfigError(f"encoder.groups {groups} sum to {sum(groups)}, the data has {in_channels} channels",
                          "list each modality's channel count in data.modalities order")
    name = branch.pop("name")
    return LateFusionEncoder([build_encoder(name, spatial_dims=spatial_dims, in_channels=g, **branch)
                              for g in groups], groups)
