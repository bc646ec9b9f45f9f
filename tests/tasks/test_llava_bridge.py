"""The LLaVA-style bridge on the real SmolLM2 (frozen): image tokens of a registry encoder, 2D and 3D, projected
into the LM's embedding space; the stage-1 loss counts caption tokens only, and training moves the projector
alone. The overfit run (about 2.5 s a step on 2 cores) is marked slow."""

from __future__ import annotations

import pytest
import torch

from mmfm.encoders import build_encoder
from mmfm.tasks.llava_bridge import IGNORE, LlavaBridge

pytest.importorskip("gguf")
CAPTIONS = ["liver with a large tumour", "normal lung tissue"]


@pytest.fixture(scope="module")
def smollm2():
    from mmfm.encoders.text.llm import load_language_model
    from mmfm.errors import ConfigError

    try:
        return load_language_model("smollm2")
    except ConfigError as e:   # the package is installed by `make setup`
        pytest.skip(str(e))


def bridge_on(smollm2, name: str, spatial_dims: int) -> LlavaBridge:
    torch.manual_seed(0)
    enc = build_encoder(name, spatial_dims=spatial_dims, in_channels=1, **({"patch_size": 8} if "vit" in name
                                                                           else {}))
    return LlavaBridge(enc, smollm2.model, smollm2.tokenizer)


def test_labels_cover_the_caption_only(smollm2):
    b = bridge_on(smollm2, "vit_micro", 2)
    batch = b.batch(CAPTIONS)
    head = len(b.prompt_ids())
    for i, c in enumerate(CAPTIONS):
        ids = smollm2.tokenizer(c, add_special_tokens=False)["input_ids"] + [smollm2.tokenizer.eos_token_id]
        assert batch["labels"][i, head:head + len(ids)].tolist() == ids
        assert (batch["labels"][i, :head] == IGNORE).all() and (batch["labels"][i, head + len(ids):] == IGNORE).all()
        assert int(batch["attention_mask"][i].sum()) == head + len(ids)


@pytest.mark.parametrize(("name", "spatial_dims", "shape"), [("vit_micro", 3, (16, 16, 16)),
                                                              ("resnet_tiny", 2, (32, 32))])
def test_image_tokens_enter_the_lm_and_only_the_projector_learns(smollm2, name, spatial_dims, shape):
    b = bridge_on(smollm2, name, spatial_dims)
    images = torch.rand(2, 1, *shape)
    batch = b.batch(CAPTIONS)
    embeds, mask = b.embed(images, batch["input_ids"], batch["attention_mask"])
    n_img = b.project_image(images).shape[1]
    assert embeds.shape == (2, n_img + batch["input_ids"].shape[1], smollm2.embed_dim) and mask[:, :n_img].all()
    loss = b.loss(images, **batch)
    loss.backward()
    assert torch.isfinite(loss) and 0 < float(loss) < 30
    learning = {n for n, p in b.named_parameters() if p.requires_grad}
    assert learning and all(n.startswith("projector.") for n in learning)
    assert b.projector[0].weight.grad is not None and smollm2.model.lm_head.weight.grad is None
    assert len(b.generate(images, max_new_tokens=2)) == 2


@pytest.mark.slow
def test_bridge_overfits_two_image_caption_pairs(smollm2):
    """Stage 1 on two pairs until greedy decoding gives each image its own caption (a few minutes)."""
    b = bridge_on(smollm2, "vit_micro", 2)
    images, batch = torch.rand(2, 1, 16, 16), b.batch(CAPTIONS)
    frozen = smollm2.model.lm_head.weight.clone()
    opt = torch.optim.AdamW([p for p in b.parameters() if p.requires_grad], lr=2e-3)
    for _ in range(120):
        loss = b.loss(images, **batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.1
    assert b.eval().generate(images, max_new_tokens=10) == CAPTIONS
    assert torch.equal(frozen, smollm2.model.lm_head.weight)
