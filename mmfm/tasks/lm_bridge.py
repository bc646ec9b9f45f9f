"""What every vision-language bridge into a causal language model shares: the language model's side.

A bridge turns an image into a few vectors in the language model's embedding space (:meth:`LMBridge.project_image`,
the one thing a subclass defines: LLaVA's projector, MedBLIP's Q-Former); they are read before the chat-templated
prompt through ``inputs_embeds``. This module does the rest, the same for every bridge:

* **training batches** (:meth:`LMBridge.forward`, the Trainer's interface): report generation pairs
  ``{"image", "text"}`` are answered to a fixed prompt, VQA triples ``{"image", "question", "answer"}`` to their
  question; the loss is transformers' causal-LM cross-entropy on the answer tokens and the end token alone (image,
  prompt and padding positions are labelled -100);
* **generation** (:meth:`generate`, :meth:`answer`: greedy by default, left-padded batches) and **closed-set
  answers** (:meth:`choose`: the candidate with the highest log-likelihood, as generative VQA models answer
  yes/no questions);
* **what a checkpoint holds**: everything but the language model's own weights, which come from the zoo and are
  identified by their SHA-256 (the run records it). LoRA adapters on the language model (stage 2, ``train.peft``)
  are kept, so a stage-2 checkpoint is the bridge, the image encoder and the adapters.

    Shape: image (B, C, *spatial) -> image tokens (B, N, D) ; prompt + answer (B, L) -> inputs_embeds (B, N + L, D)

Reference: Liu et al., LLaVA, NeurIPS 2023; Li et al., LLaVA-Med, NeurIPS 2023.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

IGNORE = -100          # transformers' ignore index for the causal-LM loss
CAPTION_PROMPT = "Describe the image."
SCORE_CHUNK = 16       # images scored per forward pass in choose() (the logits are B x L x vocabulary)


class LMBridge(nn.Module):
    """Image encoder -> bridge -> causal language model (``lm``: a transformers ``*ForCausalLM``, frozen;
    ``tokenizer``: its tokenizer with a chat template). Subclasses define ``project_image``."""

    vision = True

    def __init__(self, encoder: nn.Module, lm: Any, tokenizer: Any, freeze_encoder: bool = True,
                 prompt: str = CAPTION_PROMPT, max_len: int = 64) -> None:
        super().__init__()
        self.encoder, self.lm, self.tokenizer = encoder, lm, tokenizer
        self.prompt, self.max_len = prompt, int(max_len)
        self.dim = int(lm.config.hidden_size)
        self.lm.requires_grad_(False)
        if freeze_encoder:
            self.encoder.requires_grad_(False)

    def project_image(self, image: torch.Tensor) -> torch.Tensor:
        """Shape: (B, C, *spatial) -> (B, N, D) image tokens in the language model's embedding space."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return self.lm.get_input_embeddings().weight.device

    # -- text ---------------------------------------------------------------------------------------------------
    def prompt_ids(self, prompt: str | None = None) -> list[int]:
        """The chat template around ``prompt``, ending where the assistant's answer begins."""
        chat = [{"role": "user", "content": self.prompt if prompt is None else prompt}]
        return list(self.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True,
                                                       return_dict=True)["input_ids"])

    def batch(self, answers: Sequence[str], prompts: str | Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """Prompt + answer (at most ``max_len`` tokens) + end token per sample, right-padded; labels only on the
        answer and the end token. Shape: input_ids, attention_mask, labels (B, L)."""
        tok = self.tokenizer
        if prompts is None or isinstance(prompts, str):
            prompts = [prompts or self.prompt] * len(answers)
        rows = [(self.prompt_ids(p), tok(a, add_special_tokens=False)["input_ids"][:self.max_len]
                 + [tok.eos_token_id]) for p, a in zip(prompts, answers)]
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
        image, input_ids, attention_mask = (t.to(self.device) for t in (image, input_ids, attention_mask))
        img = self.project_image(image)                            # [B, N, D]
        text = self.lm.get_input_embeddings()(input_ids)           # [B, L, D]
        ones = torch.ones(img.shape[:2], dtype=attention_mask.dtype, device=attention_mask.device)
        return torch.cat([img.to(text.dtype), text], 1), torch.cat([ones, attention_mask], 1)

    # -- training -----------------------------------------------------------------------------------------------
    def loss(self, image: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
             labels: torch.Tensor) -> torch.Tensor:
        """Next-token cross-entropy on the answer tokens only (image and prompt positions ignored)."""
        embeds, mask = self.embed(image, input_ids, attention_mask)
        labels = labels.to(self.device)
        ignore = labels.new_full((labels.shape[0], embeds.shape[1] - labels.shape[1]), IGNORE)   # [B, N]
        return self.lm(inputs_embeds=embeds, attention_mask=mask, labels=torch.cat([ignore, labels], 1)).loss

    def forward(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """A report-generation batch {image, text} (answered to ``self.prompt``) or a VQA batch {image, question,
        answer}. Returns {"loss", "lm_loss"}."""
        image = batch["image"]
        if "answer" in batch:
            enc = self.batch(list(batch["answer"]), list(batch["question"]))
        else:
            enc = self.batch(list(batch["text"]))
        loss = self.loss(image, **enc)
        return {"loss": loss, "lm_loss": loss}

    # -- inference ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, image: torch.Tensor, prompts: str | Sequence[str] | None = None,
                 **generate_kwargs: Any) -> list[str]:
        """The answer to each image's prompt (default ``self.prompt``); greedy, at most ``max_len`` new tokens,
        unless the keywords (transformers ``generate``'s) say otherwise. Prompts of different lengths are
        left-padded (masked; positions follow the mask), so a batch answers as each image would alone."""
        if prompts is None or isinstance(prompts, str):
            prompts = [prompts or self.prompt] * image.shape[0]
        heads = [self.prompt_ids(p) for p in prompts]
        length = max(len(h) for h in heads)
        ids = torch.full((len(heads), length), int(self.tokenizer.pad_token_id), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, h in enumerate(heads):
            ids[i, length - len(h):] = torch.tensor(h)
            mask[i, length - len(h):] = 1
        embeds, full_mask = self.embed(image, ids, mask)
        kw = {"max_new_tokens": self.max_len, "do_sample": False, "temperature": None, "top_p": None,
              "top_k": None, "pad_token_id": self.tokenizer.pad_token_id, **generate_kwargs}
        out = self.lm.generate(inputs_embeds=embeds, attention_mask=full_mask, **kw)  # new tokens only
        return [self.tokenizer.decode(o, skip_special_tokens=True).strip() for o in out]

    def answer(self, image: torch.Tensor, questions: Sequence[str]) -> list[str]:
        """Free-text answers (greedy), one per image and question."""
        return self.generate(image, list(questions))

    @torch.no_grad()
    def choose(self, image: torch.Tensor, questions: Sequence[str], candidates: Sequence[str]) -> list[str]:
        """For each image and question, the candidate answer with the highest log-likelihood (summed over its
        tokens and the end token)."""
        scores = torch.stack([torch.cat([self._log_likelihood(image[i:i + SCORE_CHUNK],
                                                              questions[i:i + SCORE_CHUNK], c)
                                         for i in range(0, len(image), SCORE_CHUNK)])
                              for c in candidates], 1)                                          # [B, K]
        return [candidates[i] for i in scores.argmax(1).tolist()]

    def _log_likelihood(self, image: torch.Tensor, questions: Sequence[str], answer: str) -> torch.Tensor:
        enc = self.batch([answer] * len(image), list(questions))
        embeds, mask = self.embed(image, enc["input_ids"], enc["attention_mask"])
        n_img = embeds.shape[1] - enc["labels"].shape[1]
        logits = self.lm(inputs_embeds=embeds, attention_mask=mask).logits[:, n_img - 1:-1].float()  # [B, L, V]
        labels = enc["labels"].to(self.device)                                                      # [B, L]
        logp = torch.log_softmax(logits, -1).gather(2, labels.clamp(min=0)[..., None])[..., 0]      # [B, L]
        return (logp * (labels != IGNORE)).sum(1).cpu()

    # -- what a checkpoint holds --------------------------------------------------------------------------------
    def _is_lm_weight(self, key: str) -> bool:
        """A weight of the language model itself (from the zoo), not an adapter trained on it."""
        from mmfm.encoders.adapters import is_adapter_param

        return key.startswith("lm.") and not is_adapter_param(key)

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        """Everything but the language model's own weights (the run names the model and its SHA-256)."""
        sd = super().state_dict(*args, **kwargs)
        prefix = kwargs.get("prefix", args[1] if len(args) > 1 else "")
        for k in [k for k in sd if k.startswith(prefix) and self._is_lm_weight(k[len(prefix):])]:
            del sd[k]
        return sd

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Strict about everything :meth:`state_dict` holds; the language model's weights stay as loaded."""
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = [k for k in result.missing_keys if not self._is_lm_weight(k)]
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(f"the bridge's weights do not match (missing {missing[:3]}, unexpected "
                               f"{list(result.unexpected_keys)[:3]})")
        return result
