"""The language-model side of the bridges, on ``llama_tiny`` (the random-weight stand-in of SmolLM2: same
transformers class, same chat template, seconds instead of minutes): batches, left-padded generation, closed-set
answers against a naive reference, and what a checkpoint holds."""

from __future__ import annotations

import pytest
import torch

from mmfm.encoders import build_encoder
from mmfm.encoders.adapters import PeftSpec, add_adapters
from mmfm.encoders.text.llm import load_language_model
from mmfm.tasks.llava_bridge import LlavaBridge
from mmfm.tasks.lm_bridge import IGNORE

QUESTIONS = ["what?", "is this a ct scan of the liver?", "which region is shown?"]


@pytest.fixture(scope="module")
def tiny():
    return load_language_model("llama_tiny")


def bridge(tiny, spatial_dims: int = 3) -> LlavaBridge:
    torch.manual_seed(0)
    enc = build_encoder("vit_micro", spatial_dims=spatial_dims, in_channels=1, patch_size=8)
    return LlavaBridge(enc, tiny.model, tiny.tokenizer, max_len=6).eval()


def test_the_stand_in_is_the_same_model_every_time(tiny):
    from mmfm.encoders.text.tiny_llm import build_tiny_llm

    _, tok, sha = build_tiny_llm()
    assert sha == tiny.sha256 and tok.decode(tok("liver tumour, 5 mm")["input_ids"]) == "liver tumour, 5 mm"
    assert type(tiny.model).__name__ == "LlamaForCausalLM"


def test_vqa_batch_labels_the_answer_only(tiny):
    b = bridge(tiny)
    short = b.batch(["the abdomen"], QUESTIONS[:1])["labels"]           # max_len=6: six answer tokens + end
    assert int((short != IGNORE).sum()) == 7 and int(short[short != IGNORE][-1]) == tiny.tokenizer.eos_token_id
    b.max_len = 32
    enc = b.batch(["yes", "the abdomen"], QUESTIONS[1:])
    for i, (q, a) in enumerate(zip(QUESTIONS[1:], ["yes", "the abdomen"])):
        head = len(b.prompt_ids(q))
        answer = tiny.tokenizer(a, add_special_tokens=False)["input_ids"] + [tiny.tokenizer.eos_token_id]
        assert enc["labels"][i, head:head + len(answer)].tolist() == answer
        assert (enc["labels"][i, :head] == IGNORE).all() and (enc["labels"][i, head + len(answer):] == IGNORE).all()
    out = b({"image": torch.rand(2, 1, 16, 16, 16), "question": QUESTIONS[1:], "answer": ["yes", "the abdomen"]})
    assert torch.isfinite(out["loss"]) and out["loss"] is out["lm_loss"]


def test_a_left_padded_batch_answers_as_each_image_alone(tiny):
    b = bridge(tiny)
    x = torch.rand(3, 1, 16, 16, 16)
    together = b.generate(x, QUESTIONS)
    alone = [b.generate(x[i:i + 1], [q])[0] for i, q in enumerate(QUESTIONS)]
    assert together == alone and len(set(together)) == 3 and all(together)


def test_choose_takes_the_most_likely_candidate(tiny):
    b = bridge(tiny)
    x = torch.rand(3, 1, 16, 16, 16)
    candidates = ["yes", "no", "liver"]
    chosen = b.choose(x, QUESTIONS, candidates)
    with torch.no_grad():   # naive reference: the summed log-probability of each candidate, one image at a time
        for i, q in enumerate(QUESTIONS):
            scores = []
            for c in candidates:
                enc = b.batch([c], [q])
                embeds, mask = b.embed(x[i:i + 1], enc["input_ids"], enc["attention_mask"])
                logp = torch.log_softmax(tiny.model(inputs_embeds=embeds, attention_mask=mask).logits[0], -1)
                n = embeds.shape[1] - enc["labels"].shape[1]
                pos = (enc["labels"][0] != IGNORE).nonzero()[:, 0]
                scores.append(sum(float(logp[n + p - 1, enc["labels"][0, p]]) for p in pos))
            assert chosen[i] == candidates[max(range(3), key=scores.__getitem__)]


def test_a_checkpoint_holds_the_bridge_and_adapters_not_the_language_model(tiny):
    import copy

    b = LlavaBridge(build_encoder("resnet_tiny", spatial_dims=2, in_channels=1), copy.deepcopy(tiny.model),
                    tiny.tokenizer)
    keys = set(b.state_dict())
    assert keys and not any(k.startswith("lm.") for k in keys) and any(k.startswith("projector.") for k in keys)
    add_adapters(b, PeftSpec("lora", rank=2, targets=("q_proj", "v_proj"), modules=("lm",)))
    lm_keys = [k for k in b.state_dict() if k.startswith("lm.")]
    assert lm_keys and all("lora_" in k for k in lm_keys)
    fresh = LlavaBridge(build_encoder("resnet_tiny", spatial_dims=2, in_channels=1), copy.deepcopy(tiny.model),
                        tiny.tokenizer)
    add_adapters(fresh, PeftSpec("lora", rank=2, targets=("q_proj", "v_proj"), modules=("lm",)))
    fresh.load_state_dict(b.state_dict())               # strict about what it holds
    with pytest.raises(RuntimeError, match="missing"):
        fresh.load_state_dict({k: v for k, v in b.state_dict().items() if not k.startswith("projector.")})


@pytest.mark.parametrize(("spatial_dims", "shapes"), [(2, [(32, 32), (48, 64)]), (3, [(16, 16, 16), (32, 32, 16)])])
def test_qformer_hands_the_lm_a_fixed_number_of_tokens_and_only_the_bridge_learns(tiny, spatial_dims, shapes):
    import copy

    from mmfm.tasks.qformer_bridge import QFormerBridge

    torch.manual_seed(0)
    enc = build_encoder("resnet_tiny", spatial_dims=spatial_dims, in_channels=1)
    b = QFormerBridge(enc, copy.deepcopy(tiny.model), tiny.tokenizer, num_queries=5, depth=1, width=32)
    for shape in shapes:       # more image tokens, the same number of query tokens
        assert b.project_image(torch.rand(2, 1, *shape)).shape == (2, 5, tiny.embed_dim)
    out = b({"image": torch.rand(2, 1, *shapes[0]), "text": ["liver", "no tumour"]})
    out["loss"].backward()
    learning = {n.split(".")[0] for n, p in b.named_parameters() if p.requires_grad}
    assert learning == {"qformer", "projector"} and b.qformer.queries.grad is not None
    assert all(p.grad is None for p in b.lm.parameters()) and all(p.grad is None for p in b.encoder.parameters())
