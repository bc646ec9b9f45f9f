"""A LLaVA-style bridge: an image encoder's tokens, projected into a language model's embedding space, read by the
language model before the prompt.

Any registry image encoder works, 2D or 3D: it returns ``tokens`` of shape (B, N, C) whatever its grid, and the
projector maps each token to the language model's width (LLaVA-1.5's two-layer MLP with GELU). The language
model's side (batches, loss, generation, closed-set answers, checkpoints) is :class:`mmfm.tasks.lm_bridge.LMBridge`.

LLaVA-Med's two stages: (1) feature alignment on image-caption pairs, the language model frozen (and by default
the image encoder too), only the projector learning; (2) instruction tuning, the projector and LoRA adapters on the
language model (``train.peft=lora`` on the module ``lm``: :mod:`mmfm.workflows.bridge`).

    Shape: image (B, C, *spatial) -> tokens (B, N, C_enc) -> projected (B, N, D)

Reference: Liu et al., Visual Instruction Tuning (LLaVA), NeurIPS 2023; Liu et al., Improved Baselines with Visual
Instruction Tuning (LLaVA-1.5), 2023; Li et al., LLaVA-Med, NeurIPS 2023.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mmfm.tasks.lm_bridge import CAPTION_PROMPT, IGNORE, LMBridge

__all__ = ["CAPTION_PROMPT", "IGNORE", "LlavaBridge"]


class LlavaBridge(LMBridge):
    """Image encoder -> two-layer GELU projector -> frozen causal language model."""

    def __init__(self, encoder: nn.Module, lm: Any, tokenizer: Any, freeze_encoder: bool = True,
                 prompt: str = CAPTION_PROMPT, max_len: int = 64) -> None:
        super().__init__(encoder, lm, tokenizer, freeze_encoder, prompt, max_len)
        self.projector = nn.Sequential(nn.Linear(int(encoder.out_dim), self.dim), nn.GELU(),
                                       nn.Linear(self.dim, self.dim))

    def project_image(self, image: torch.Tensor) -> torch.Tensor:
        """Shape: (B, C, *spatial) -> (B, N, D) image tokens in the language model's embedding space."""
        tokens = self.encoder(image)["tokens"]                     # [B, N, C_enc]
        return self.projector(tokens)                              # [B, N, D]
