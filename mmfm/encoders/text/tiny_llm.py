"""``llama_tiny``: a random-weight causal language model of SmolLM2's kind, small enough for tests.

It knows no language. It exists so that every code path of the assistant (the bridges, stage-2 LoRA, resuming,
loading a run, `mmfm chat --model RUN`) runs in the default test suite in seconds instead of minutes, the way
timm keeps ``test_*`` variants of its models. It has what the code relies on in SmolLM2: a transformers
``LlamaForCausalLM`` (2 layers, 64-d, grouped-query attention, tied embeddings), a tokenizer with a ChatML chat
template (byte-level, 256 byte tokens + 3 special tokens: any text encodes and decodes exactly), and an identity:
its weights come from a fixed seed, and ``sha256`` is the hash of those weights, so a run trained on it can check
that it gets the same model back.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
SEED = 0
INIT_STD = 0.2     # ten times a trained model's init: the untrained model's greedy answers vary with the image and
#                    the prompt (at 0.02 every answer is the same repeated token), so tests can tell answers apart


def tiny_tokenizer() -> Any:
    """A byte-level tokenizer (no merges: one token per UTF-8 byte) with SmolLM2's special tokens and template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())                 # the 256 byte symbols
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token="<|endoftext|>",
                                   chat_template=CHAT_TEMPLATE)


def weights_sha256(model: torch.nn.Module) -> str:
    """SHA-256 over the state dict (sorted names, each tensor's bytes): the identity of generated weights."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def build_tiny_llm() -> tuple[Any, Any, str]:
    """(model, tokenizer, sha256) of ``llama_tiny``; the same weights every time (seed 0, caller's RNG untouched)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer()
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         tie_word_embeddings=True, initializer_range=INIT_STD, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = LlamaForCausalLM(config).float().eval()
    return model, tok, weights_sha256(model)
