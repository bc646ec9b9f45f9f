"""A LLaVA-style bridge: an image encoder's tokens, projected into a language model's embedding space, read by the
language model before the prompt.

Any registry image encoder works, 2D or 3D: it returns ``tokens`` of shape (B, N, C) whatever its grid, and the
projector maps each token to the language model's width (LLaVA-1.5's two-layer MLP with GELU). The image tokens
are prepended to the prompt's token embeddings and the language model reads them through ``inputs_embeds``.

Stage 1 of LLaVA-Med (feature alignment on image-caption pairs): the language model is frozen (and by default the
image encoder too); only the projector learns, by next-token cross-entropy on the caption tokens alone (image and
prompt positions are labelled -100, transformers' ignore index; the loss itself is transformers' causal-LM loss).

    Shape: image (B, C, *spatial) -> tokens (B, N, C_enc) -> projected (B, N, D) ; prompt+caption (B, L)
           -> inputs_embeds (B, N + L, D)

Reference: Liu et al., Visual Instruction Tuning (LLaVA), NeurIPS 2023; Liu et al., Improved Baselines with Visual
Instruction Tuning (LLaVA-1.5), 2023; Li et al., LLaVA-Med, NeurIPS 2023.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

IGNORE = -100          # transformers' ignore index for the causal-LM loss
CAPTION_PROMPT = "Describe the image."


class LlavaBridge(nn.Module):
    """Image encoder -> projector -> frozen causal language model (``lm``: a transformers ``*ForCausalLM``,
    ``tokenizer``: its tokenizer with a chat template)."""

    vision = True

    def __init__(self, encoder: nn.Module, lm: Any, tokenizer: Any, freeze_encoder: bool = True) -> None:
        super().__init__()
        self.encoder, self.lm, self.tokenizer = encoder, lm, tokenizer
        dim = int(lm.config.hidden_size)
        self.projector = nn.Sequential(nn.Linear(int(encoder.out_dim), dim), nn.GELU(), nn.Linear(dim, dim))
        self.lm.requires_grad_(False)
        if freeze_encoder:
            self.encoder.requires_grad_(False)

    def project_image(self, image: torch.Tensor) -> torch.Tensor:
        """Shape: (B, C, *spatial) -> (B, N, D) image tokens in the language model's embedding space."""
        tokens = self.encoder(image)["tokens"]                     # [B, N, C_enc]
        return self.projector(tokens)                              # [B, N, D]

    def prompt_ids(self, prompt: str = CAPTION_PROMPT) -> list[int]:
        """The chat template around ``prompt``, ending where the assistant's answer begins."""
        chat = [{"role": "user", "content": prompt}]
        return list(self.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True,
                                                       return_dict=True)["input_ids"])

    def batch(self, captions: Sequence[str], prompt: str = CAPTION_PROMPT) -> dict[str, torch.Tensor]:
        """Prompt + caption + end token per sample, right-padded; labels only on the caption and end token.
        Shape: input_ids, attention_mask, labels (B, L)."""
        tok = self.tokenizer
        head = self.prompt_ids(prompt)
        rows = [(head, tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]) for c in captions]
        length = max(len(h) + len(c) for h, c in rows)
        ids = torch.full((len(rows), length), int(tok.pad_token_id), dtype=torch.long)
        labels = torch.full_like(ids, IGNORE)
        mask = torch.zeros_like(ids)
        for i, (h, c) in enumerate(rows):
            n = len(h) + len(c)
            ids[i, :n] = torch.tensor(h + c)
            labels[i, len(h):n] = torch.tensor(c)
            mask[i, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def embed(self, image: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Image tokens before the text's embeddings. Shape: (B, N + L, D) embeddings and (B, N + L) mask."""
        img = self.project_image(image)                            # [B, N, D]
        text = self.lm.get_input_embeddings()(input_ids)           # [B, L, D]
        ones = torch.ones(img.shape[:2], dtype=attention_mask.dtype, device=attention_mask.device)
        return torch.cat([img.to(text.dtype), text], 1), torch.cat([ones, attention_mask], 1)

    def forward(self, image: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Stage-1 loss: next-token cross-entropy on the caption tokens only (image positions ignored)."""
        embeds, mask = self.embed(image, input_ids, attention_mask)
        ignore = labels.new_full((labels.shape[0], embeds.shape[1] - labels.shape[1]), IGNORE)   # [B, N]
        out = self.lm(inputs_embeds=embeds, attention_mask=mask, labels=torch.cat([ignore, labels], 1))
        return {"loss": out.loss}

    @torch.no_grad()
    def generate(self, image: torch.Tensor, prompt: str = CAPTION_PROMPT, **generate_kwargs: Any) -> list[str]:
        """Answers to ``prompt`` about each image (greedy unless the keywords say otherwise)."""
        head = torch.tensor([self.prompt_ids(prompt)] * image.shape[0], device=image.device)   # [B, L]
        embeds, mask = self.embed(image, head, torch.ones_like(head))
        kw = {"max_new_tokens": 32, "do_sample": False, "pad_token_id": self.tokenizer.pad_token_id,
              **generate_kwargs}
        out = self.lm.generate(inputs_embeds=embeds, attention_mask=mask, **kw)  # new tokens only
        return [self.tokenizer.decode(o, skip_special_tokens=True).strip() for o in out]
