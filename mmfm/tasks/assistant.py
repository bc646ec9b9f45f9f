"""A chat assistant on a causal language model: the chat template, then transformers' ``generate``.

What is mmfm's own is small: checking the messages and options where they enter, the prompt through the
tokenizer's own chat template, cutting the answer at a stop string, and timing. Decoding itself (KV cache, greedy
search, temperature and nucleus sampling, stop strings) is transformers' ``generate``.

* greedy by default (``temperature=0``): the same messages give the same answer;
* ``temperature > 0`` samples, optionally from the top-``p`` nucleus (Holtzman et al., 2020), seeded by ``seed``;
* ``stop`` strings end the answer (the stop string itself is not part of it), as does the template's end token;
* ``dtype=torch.bfloat16`` runs the forward passes under bf16 autocast (the caller decides where bf16 is native:
  :func:`mmfm.engine.precision.resolve_precision`); the weights stay fp32.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from mmfm.errors import ConfigError

ROLES = ("system", "user", "assistant")
MAX_MESSAGE_CHARS = 32_000        # one message; a prompt longer than the context is refused after tokenising


@dataclass(frozen=True)
class GenerationOptions:
    """How to decode. ``temperature=0`` is greedy; ``top_p`` applies only when sampling."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    use_cache: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= int(self.max_new_tokens) <= 8192:
            raise ConfigError(f"max new tokens {self.max_new_tokens}", "give a whole number from 1 to 8192")
        if not 0.0 <= float(self.temperature) <= 10.0:
            raise ConfigError(f"temperature {self.temperature}", "give 0 (greedy) or a positive number up to 10")
        if not 0.0 < float(self.top_p) <= 1.0:
            raise ConfigError(f"top-p {self.top_p}", "give a number in (0, 1]")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ConfigError(f"stop strings {list(self.stop)}", "give non-empty strings")

    def generate_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"max_new_tokens": int(self.max_new_tokens), "use_cache": self.use_cache}
        if self.temperature > 0:
            kw.update(do_sample=True, temperature=float(self.temperature), top_p=float(self.top_p), top_k=0)
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if self.stop:
            kw["stop_strings"] = list(self.stop)
        return kw


@dataclass
class Reply:
    """One answer: the text, how many tokens were generated, why it stopped and how fast."""

    text: str
    prompt_tokens: int
    new_tokens: int
    seconds: float
    stopped_by: str           # "end" (the template's end token) | "stop string" | "max tokens"
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tokens_per_s": round(self.tokens_per_s, 3)}


def check_messages(messages: str | Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """``messages`` as a chat: a plain string is one user turn; otherwise ``[{"role", "content"}, ...]``."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or set(m) != {"role", "content"}:
            raise ConfigError(f"message {i} is not {{'role': ..., 'content': ...}}",
                              "give a list of dicts with exactly the keys role and content")
        if m["role"] not in ROLES or not isinstance(m["content"], str):
            raise ConfigError(f"message {i}: role '{m['role']}'", f"roles are {ROLES}; content is a string")
        if len(m["content"]) > MAX_MESSAGE_CHARS:
            raise ConfigError(f"message {i} is {len(m['content'])} characters long",
                              f"at most {MAX_MESSAGE_CHARS} per message")
        out.append({"role": m["role"], "content": m["content"]})
    if not out or out[-1]["role"] != "user":
        raise ConfigError("the last message must be the user's", "end the chat with {'role': 'user', ...}")
    return out


class Assistant:
    """Chat with a causal language model (a :class:`mmfm.encoders.text.llm.CausalLM`).

    ``assistant.chat("What does a CT scan show?")`` or ``assistant.chat([{"role": "user", "content": ...}, ...])``
    returns the answer text; :meth:`reply` also returns token counts, timing and why decoding stopped.
    ``system`` (optional) replaces the chat template's default system prompt.
    """

    def __init__(self, lm: Any, system: str | None = None, dtype: torch.dtype = torch.float32,
                 bridge: Any = None) -> None:
        self.lm, self.name, self.system, self.dtype = lm, lm.name, system, dtype
        self.bridge = bridge      # an image bridge into lm.model (mmfm.tasks.lm_bridge.LMBridge), or None
        self.run: Any = None      # the bridge's run directory and what it recorded (mmfm.workflows.bridge)
        self.info: dict[str, Any] = {}
        self.precision: dict[str, str] = {}     # how the caller chose dtype (recorded with each answer)

    @property
    def vision(self) -> bool:
        """Whether it takes an image: a language model alone does not; a bridge run does."""
        return self.bridge is not None

    @property
    def device(self) -> torch.device:
        return next(self.lm.model.parameters()).device

    def prompt_ids(self, messages: str | Sequence[dict[str, str]]) -> torch.Tensor:
        """The chat template applied to the messages, ending with the assistant's turn. Shape: (1, L)."""
        chat = check_messages(messages)
        if self.system is not None and chat[0]["role"] != "system":
            chat = [{"role": "system", "content": self.system}, *chat]
        enc = self.lm.tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt",
                                                    return_dict=True)
        return enc["input_ids"].to(self.device)                    # [1, L]

    def _autocast(self) -> Any:
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    @torch.no_grad()
    def reply(self, messages: str | Sequence[dict[str, str]], options: GenerationOptions | None = None,
              image: torch.Tensor | None = None, **kw: Any) -> Reply:
        """The answer to the chat; ``image`` (1, C, *spatial), preprocessed as the bridge's run trained, is read
        before the chat (its projected tokens come first, as in training)."""
        opts = options or GenerationOptions(**kw)
        if image is not None and self.bridge is None:
            raise ConfigError(f"'{self.name}' is a language model without a vision bridge: it takes no image",
                              "ask without an image, or load a run trained with task.decoder (mmfm report-gen/vqa)")
        ids = self.prompt_ids(messages)                             # [1, L]
        tok = self.lm.tokenizer
        gen: dict[str, Any] = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if image is not None:   # inputs_embeds: generate returns the new tokens only
            embeds, mask = self.bridge.embed(image.to(self.device), ids, gen["attention_mask"])   # [1, N + L, D]
            gen = {"inputs_embeds": embeds, "attention_mask": mask}
        length = gen["attention_mask"].shape[1]
        if length + opts.max_new_tokens > self.lm.max_positions:
            raise ConfigError(f"the chat is {length} tokens; with {opts.max_new_tokens} new ones it exceeds "
                              f"{self.name}'s context of {self.lm.max_positions}",
                              "shorten the chat or lower the max new tokens")
        t0 = time.perf_counter()
        with self._autocast(), _seeded(opts.seed if opts.temperature > 0 else None, self.device):
            out = self.lm.model.generate(**gen, tokenizer=tok, pad_token_id=tok.pad_token_id,
                                         **opts.generate_kwargs())
        seconds = time.perf_counter() - t0
        new = out[0, ids.shape[1]:] if image is None else out[0]    # [T]
        text = tok.decode(new, skip_special_tokens=True)
        eos = self.lm.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos]) | {tok.eos_token_id}
        cut = min((i for i in (text.find(s) for s in opts.stop) if i >= 0), default=-1)
        if cut >= 0:
            text, why = text[:cut], "stop string"
        elif len(new) and int(new[-1]) in eos_ids:
            why = "end"
        else:
            why = "max tokens"
        return Reply(text.strip(), int(length), int(len(new)), seconds, why, asdict(opts))

    def chat(self, messages: str | Sequence[dict[str, str]], **kw: Any) -> str:
        """The answer to the chat (options as :class:`GenerationOptions` keywords)."""
        return self.reply(messages, **kw).text


@contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """A sampled answer draws from a forked RNG seeded by ``seed`` (``generate`` samples from torch's global
    generator): the same seed gives the same answer and the caller's RNG state is left as it was."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [],
                               device_type=device.type if device.type == "cuda" else "cuda"):
        torch.manual_seed(seed)
        yield
