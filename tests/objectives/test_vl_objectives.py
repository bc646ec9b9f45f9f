"""Image-text and report objectives: each overfits a tiny batch, runs in 3D, and trains both towers."""

from __future__ import annotations

import random

import pytest
import torch

from mmfm.data.synthetic import phantoms
from mmfm.encoders import build_encoder
from mmfm.encoders.text import build_text_encoder
from mmfm.objectives import build_objective
from mmfm.objectives.losses import semantic_targets
from mmfm.objectives.text_masking import mask_tokens, shuffle_sentences, text_groups

TEXTS = ["liver with a tumour.", "brain grey matter.", "no lesion in the abdomen.", "white matter of the brain.",
         "a small nodule.", "pleural effusion on the left.", "heart is enlarged.", "clear lungs."]
CASES = [("clip", {}), ("clip", {"duplicates": "positive"}), ("medclip", {"semantic": "labels", "num_labels": 8}),
         ("medclip", {"semantic": "text"}), ("medclip", {"semantic": "findings"}), ("gloria", {}),
         ("mrem", {"mask_ratio": 0.5})]


@pytest.fixture(scope="module")
def bert_tiny():
    return build_text_encoder("bert_tiny")


def _batch(dims: int) -> dict:
    d = phantoms(8, dims, 32 if dims == 2 else 16, seed=0)
    return {"image": torch.from_numpy(d["image"]), "text": TEXTS, "label": torch.arange(8)}


@pytest.mark.parametrize("name,opts", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_image_text_objective_overfits_tiny_batch(name, opts, bert_tiny):
    torch.manual_seed(0)
    text = build_text_encoder("bert_tiny")
    text.load_state_dict(bert_tiny.state_dict())
    obj = build_objective(name, build_encoder("resnet_tiny", spatial_dims=2, in_channels=1), text_encoder=text,
                          image_size=32, **opts)
    obj.train()
    batch = _batch(2)
    opt = torch.optim.Adam(obj.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        torch.manual_seed(1)
        out = obj(batch)
        assert torch.allclose(out["loss"], sum(v for k, v in out.items() if k.endswith("_loss")))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    floor = 0.0
    if name == "medclip":  # soft targets: the loss cannot go below their entropy; the excess must shrink
        sem = obj.semantic_features(batch, torch.zeros(8, 1))
        target = semantic_targets(sem, obj.loss.soft_temperature)
        floor = float(-(target * target.clamp_min(1e-12).log()).sum(1).mean())
    assert losses[-1] - floor < 0.5 * (losses[0] - floor), (floor, losses[::5])


@pytest.mark.parametrize("name", ["clip", "gloria", "medclip", "mrem"])
def test_image_text_objective_3d_trains_both_towers(name, bert_tiny):
    torch.manual_seed(0)
    enc = build_encoder("resnet_tiny", spatial_dims=3, in_channels=1)
    extra = {"mask_patch": 4} if name == "mrem" else {}
    obj = build_objective(name, enc, text_encoder=bert_tiny, image_size=16, num_labels=8, **extra)
    out = obj(_batch(3))
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in bert_tiny.parameters())
    bert_tiny.zero_grad()


def test_frozen_text_tower_gets_no_gradient_and_stays_in_eval():
    text = build_text_encoder("bert_tiny")
    obj = build_objective("clip", build_encoder("resnet_tiny", spatial_dims=2, in_channels=1), text_encoder=text,
                          freeze_text=True)
    obj.train()
    assert not text.training
    obj(_batch(2))["loss"].backward()
    assert all(p.grad is None for p in text.parameters())
    assert obj.model.text_proj.weight.grad is not None


@pytest.mark.parametrize("name,opts", [("rsm", {"mlm_weight": 0.0}), ("rsm", {"mlm_weight": 0.5, "shuffle": False}),
                                       ("mlm", {})])
def test_report_objective_overfits(name, opts):
    torch.manual_seed(0)
    obj = build_objective(name, build_text_encoder("bert_tiny"), **opts)
    batch = {"findings": ["Heart size normal. Lungs clear.", "Large left effusion. Heart enlarged.",
                          "Right upper lobe nodule.", "Hyperinflated lungs."],
             "impression": ["Normal.", "Effusion and cardiomegaly.", "Nodule.", "COPD."],
             "text": ["heart size normal lungs clear", "large left effusion", "right upper lobe nodule", "copd"]}
    opt = torch.optim.Adam(obj.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        torch.manual_seed(1)
        out = obj(batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert losses[-1] < 0.5 * losses[0], losses[::5]


def test_mask_tokens_follows_bert_rule():
    torch.manual_seed(0)
    ids = torch.randint(1000, 2000, (64, 40))
    ids[:, 0], ids[:, -1] = 101, 102
    attn = torch.ones_like(ids)
    attn[:, 30:] = 0
    masked, labels = mask_tokens(ids, attn, (101, 102, 0), mask_id=103, vocab_size=30522, prob=0.15)
    chosen = labels != -100
    assert not chosen[:, 0].any() and not chosen[:, 30:].any()        # specials and padding never predicted
    assert torch.equal(labels[chosen], ids[chosen])
    frac = chosen[:, 1:29].float().mean()
    assert 0.12 < frac < 0.18
    share_mask = (masked[chosen] == 103).float().mean()
    assert 0.7 < share_mask < 0.9
    assert torch.equal(masked[~chosen], ids[~chosen])
    one, lab = mask_tokens(torch.tensor([[101, 5000, 102]]), torch.ones(1, 3, dtype=torch.long), (101, 102), 103,
                           30522, prob=0.0)
    assert (lab != -100).sum() == 1 and lab[0, 1] == 5000           # a short text still has a prediction


def test_shuffle_sentences_keeps_every_sentence():
    text = "Heart normal. Lungs clear. No effusion. No pneumothorax."
    out = {shuffle_sentences(text, random.Random(s)) for s in range(20)}
    assert len(out) > 1
    for o in out:
        sentences = sorted(t.strip().rstrip(".") for t in o.split(". "))
        assert sentences == sorted(t.strip().rstrip(".") for t in text.split(". "))  # each once, none lost


def test_text_groups_fold_case_and_whitespace():
    g = text_groups(["No acute disease.", "no  acute disease.", "Cardiomegaly."])
    assert g[0] == g[1] and g[0] != g[2]


def test_gloria_attention_maps_are_distributions_over_regions(bert_tiny):
    obj = build_objective("gloria", build_encoder("resnet_tiny", spatial_dims=2, in_channels=1),
                          text_encoder=bert_tiny).eval()
    batch = _batch(2)
    attn = obj.attention_maps(batch["image"][:3], TEXTS[:3])
    n_regions = obj.model.image_features(batch["image"][:1], local=True)["local"].shape[1]
    assert attn.shape[0] == 3 and attn.shape[-1] == n_regions
    assert torch.allclose(attn.sum(-1), torch.ones(attn.shape[:-1]), atol=1e-5)
