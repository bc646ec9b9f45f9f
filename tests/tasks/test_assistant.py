"""The chat assistant on the real SmolLM2-135M: chat template, greedy determinism, KV cache, stop strings,
sampling seeds. The model is loaded once for the module (a few seconds from mmfm's verified cache)."""

from __future__ import annotations

import pytest

from mmfm.errors import ConfigError
from mmfm.tasks.assistant import GenerationOptions, check_messages

pytest.importorskip("gguf")
Q = "What does a CT scan measure?"


@pytest.fixture(scope="module")
def bot():
    from mmfm.workflows.chat import load_assistant

    try:
        return load_assistant("smollm2", device="cpu", precision="fp32")
    except ConfigError as e:   # the package is installed by `make setup`
        pytest.skip(str(e))


def test_chat_template_is_applied(bot):
    text = bot.lm.tokenizer.decode(bot.prompt_ids(Q)[0])
    assert text.startswith("<|im_start|>system\n")
    assert f"<|im_start|>user\n{Q}<|im_end|>\n" in text and text.endswith("<|im_start|>assistant\n")
    turns = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": Q}]
    text = bot.lm.tokenizer.decode(bot.prompt_ids(turns)[0])
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>") and text.count("<|im_start|>system") == 1


def test_greedy_is_deterministic(bot):
    a = bot.reply(Q, max_new_tokens=4)
    b = bot.reply(Q, max_new_tokens=4)
    assert a.text and a.text == b.text
    assert a.new_tokens == 4 and a.stopped_by == "max tokens" and a.prompt_tokens == bot.prompt_ids(Q).shape[1]


@pytest.mark.slow
def test_the_kv_cache_changes_nothing_but_speed(bot):
    a = bot.reply(Q, max_new_tokens=8)
    b = bot.reply(Q, max_new_tokens=8, use_cache=False)
    assert a.text == b.text


def test_stop_string_ends_the_answer(bot):
    full = bot.reply(Q, max_new_tokens=6).text
    word = full.split()[1]                       # stop at the second word of the unstopped answer
    r = bot.reply(Q, max_new_tokens=6, stop=(word,))
    assert r.stopped_by == "stop string" and word not in r.text
    assert full.startswith(r.text) and r.new_tokens < 6


@pytest.mark.slow
def test_sampling_is_seeded(bot):
    a = bot.chat(Q, max_new_tokens=4, temperature=1.0, top_p=0.9, seed=3)
    b = bot.chat(Q, max_new_tokens=4, temperature=1.0, top_p=0.9, seed=3)
    assert a == b


def test_bad_options_and_messages_are_refused():
    for kw in ({"temperature": -1}, {"top_p": 0}, {"max_new_tokens": 0}, {"stop": ("",)}):
        with pytest.raises(ConfigError):
            GenerationOptions(**kw)
    with pytest.raises(ConfigError, match="role"):
        check_messages([{"role": "doctor", "content": "x"}])
    with pytest.raises(ConfigError, match="last message"):
        check_messages([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}])
    assert check_messages("hi") == [{"role": "user", "content": "hi"}]
