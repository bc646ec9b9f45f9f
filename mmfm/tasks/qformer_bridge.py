"""A MedBLIP-style bridge: a Q-Former's learned queries read the image encoder's tokens (2D or 3D), and only the
queries' outputs, projected to the language model's width, go before the prompt.

Where LLaVA's projector hands the language model every image token (N of them: 64 for a 32x32 slice through a
ResNet, hundreds for a 3D ViT), the Q-Former hands it a fixed number (``num_queries``) whatever the image's size
or dimensionality, which is how MedBLIP and BLIP-2 put 3D volumes in front of a frozen language model. Each layer:
self-attention among the queries, cross-attention from the queries to the image tokens, an MLP (pre-norm, as in
ViTs). The language model's side is :class:`mmfm.tasks.lm_bridge.LMBridge`.

    Shape: image (B, C, *spatial) -> tokens (B, N, C_enc) -> queries (B, Q, d) -> projected (B, Q, D)

Reference: Li et al., BLIP-2, ICML 2023; Chen et al., MedBLIP: bootstrapping language-image pre-training from 3D
medical images and texts, ACCV 2023.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmfm.tasks.lm_bridge import CAPTION_PROMPT, LMBridge


class QFormerLayer(nn.Module):
    """Queries attend to each other, then to the image tokens, then an MLP; each step pre-norm and residual."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm_self, self.norm_cross, self.norm_mlp = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, q: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Shape: q (B, Q, d), image (B, N, d) -> (B, Q, d)."""
        h = self.norm_self(q)
        q = q + self.self_attn(h, h, h, need_weights=False)[0]                           # [B, Q, d]
        q = q + self.cross_attn(self.norm_cross(q), image, image, need_weights=False)[0]  # [B, Q, d]
        return q + self.mlp(self.norm_mlp(q))


class QFormer(nn.Module):
    """``num_queries`` learned queries over the image encoder's tokens. Shape: (B, N, C_enc) -> (B, Q, dim)."""

    def __init__(self, encoder_dim: int, dim: int = 256, num_queries: int = 32, depth: int = 2, heads: int = 8
                 ) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(1, num_queries, dim) * 0.02)
        self.image_in = nn.Linear(encoder_dim, dim)
        self.layers = nn.ModuleList([QFormerLayer(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        image = self.image_in(tokens)                                  # [B, N, d]
        q = self.queries.expand(tokens.shape[0], -1, -1)               # [B, Q, d]
        for layer in self.layers:
            q = layer(q, image)
        return self.norm(q)


class QFormerBridge(LMBridge):
    """Image encoder -> Q-Former (learned queries) -> linear projection -> frozen causal language model."""

    def __init__(self, encoder: nn.Module, lm: Any, tokenizer: Any, freeze_encoder: bool = True,
                 prompt: str = CAPTION_PROMPT, max_len: int = 64, num_queries: int = 32, depth: int = 2,
                 width: int = 256) -> None:
        super().__init__(encoder, lm, tokenizer, freeze_encoder, prompt, max_len)
        self.qformer = QFormer(int(encoder.out_dim), width, num_queries, depth)
        self.projector = nn.Linear(width, self.dim)

    def project_image(self, image: torch.Tensor) -> torch.Tensor:
        """Shape: (B, C, *spatial) -> (B, Q, D): ``num_queries`` tokens whatever the image's size."""
        tokens = self.encoder(image)["tokens"]                     # [B, N, C_enc]
        return self.projector(self.qformer(tokens))                # [B, Q, D]
