"""Encoders return features and nothing else: ``{"tokens": (B, N, D), "pooled": (B, D)}``.

Every encoder has ``out_dim``, ``spatial_dims`` and ``in_channels`` and is built by name from :data:`ENCODERS`.
"""

from mmfm.encoders import cnn, fusion, litemedsam, merlin, open_clip_tower, swin, vit  # noqa: F401  (register the encoders)
from mmfm.encoders.base import ENCODERS, Encoder, adapt_input_channels, build_encoder, encoder_from

__all__ = ["ENCODERS", "Encoder", "adapt_input_channels", "build_encoder", "encoder_from"]
