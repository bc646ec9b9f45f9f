"""Zero-shot prompts and ensembles, the text decoder (overfit, greedy generation, candidate scoring)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmfm.encoders import build_encoder
from mmfm.encoders.dual import DualEncoder
from mmfm.encoders.text import build_text_encoder
from mmfm.errors import ConfigError
from mmfm.tasks.report_generation import ReportGenerator
from mmfm.tasks.text_decoder import BOS, EOS, Vocabulary
from mmfm.tasks.zero_shot import class_embeddings, class_prompts, zero_shot_probs


def test_class_prompts_fill_templates_and_synonyms():
    p = class_prompts(["liver_tumour", "brain"], ["a {name}.", "{name}"], {"brain": ["cerebrum"]})
    assert p == [["a liver tumour.", "liver tumour"], ["a brain.", "brain", "a cerebrum.", "cerebrum"]]
    with pytest.raises(ConfigError, match="placeholder"):
        class_prompts(["x"], ["no placeholder"])


@pytest.fixture(scope="module")
def dual():
    torch.manual_seed(0)
    return DualEncoder(build_encoder("resnet_tiny", spatial_dims=2, in_channels=1), build_text_encoder("bert_tiny"))


def test_prompt_ensemble_is_the_normalised_mean(dual):
    prompts = [["a liver.", "liver"], ["brain"]]
    emb = class_embeddings(dual, prompts)
    with torch.no_grad():
        manual = F.normalize(dual.encode_text(prompts[0]).mean(0), dim=-1)
    assert torch.allclose(emb[0], manual, atol=1e-5) and torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)


def test_zero_shot_picks_the_class_whose_prompt_matches(dual):
    """With the image projection set so that images land on the text embedding of their class, zero-shot must
    recover the class: checks the wiring from images to prompts to probabilities."""
    images = torch.randn(6, 1, 32, 32)
    prompts = [["liver"], ["brain"], ["lung"]]
    with torch.no_grad():
        classes = class_embeddings(dual, prompts)                                  # (3, E)
        feats = dual.image(images)["pooled"]                                       # (6, D)
        labels = torch.tensor([0, 1, 2, 0, 1, 2])
        w = torch.linalg.lstsq(feats, classes[labels]).solution                    # (D, E)
        dual.image_proj.weight.copy_(w.T)
    probs = zero_shot_probs(dual, images, prompts)
    assert probs.shape == (6, 3) and torch.allclose(probs.sum(1), torch.ones(6))
    assert probs.argmax(1).tolist() == labels.tolist()


def test_vocabulary_round_trip_and_special_ids():
    v = Vocabulary.build(["no pleural effusion.", "heart is enlarged."])
    ids = v.encode(["no pleural effusion.", "heart"], max_len=16)
    assert ids[0, 0] == BOS and EOS in ids[0].tolist() and ids[1, -1] == 0   # padded
    assert v.decode(ids[0, 1:]) == "no pleural effusion." and v.decode(ids[1, 1:]) == "heart"
    assert len(v) < 40                                                       # compact: only the pieces used


def test_report_generator_overfits_and_generates_exact_texts():
    torch.manual_seed(0)
    texts = ["liver with a tumour.", "normal brain.", "no lesion."]
    vocab = Vocabulary.build(texts)
    model = ReportGenerator(build_encoder("resnet_tiny", spatial_dims=2, in_channels=1), vocab, dim=64, max_len=12)
    x = torch.randn(3, 1, 32, 32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        out = model({"image": x, "text": texts})
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    model.eval()
    assert model.generate(x) == texts
    mem = model.memory(x)
    scores = model.decoder.score(mem, vocab.encode(texts, 12))                # (3, 3)
    assert scores.argmax(1).tolist() == [0, 1, 2]


def test_report_generation_and_vqa_run_in_3d():
    from mmfm.tasks.vqa import VQAModel

    torch.manual_seed(0)
    enc = build_encoder("resnet_tiny", spatial_dims=3, in_channels=1)
    x = torch.randn(2, 1, 16, 16, 16)
    vocab = Vocabulary.build(["tumour present.", "no tumour.", "yes", "no"])
    rg = ReportGenerator(enc, vocab, dim=32, max_len=8)
    out = rg({"image": x, "text": ["tumour present.", "no tumour."]})
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and any(p.grad is not None for p in enc.parameters())
    x = torch.stack([torch.zeros(1, 16, 16, 16), torch.ones(1, 16, 16, 16)])
    opt = torch.optim.Adam(rg.parameters(), lr=3e-3)
    for _ in range(80):  # a 3D report generator overfits two volumes to their exact reports
        loss = rg({"image": x, "text": ["tumour present.", "no tumour."]})["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert rg.eval().generate(x) == ["tumour present.", "no tumour."]
    # VQA in 3D learns to tell two volumes apart: a tiny overfit, then closed answers by candidate likelihood
    torch.manual_seed(0)
    vqa = VQAModel(build_encoder("resnet_tiny", spatial_dims=3, in_channels=1), build_text_encoder("bert_tiny"),
                   vocab, dim=32, max_len=6)
    batch = {"image": torch.stack([torch.zeros(1, 16, 16, 16), torch.ones(1, 16, 16, 16)]),
             "question": ["is there a tumour?"] * 2, "answer": ["yes", "no"]}
    opt = torch.optim.Adam([p for p in vqa.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(60):
        loss = vqa(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    vqa.eval()
    assert vqa.choose(batch["image"], batch["question"], ["yes", "no"]) == ["yes", "no"]
    assert vqa.answer(batch["image"], batch["question"]) == ["yes", "no"]
