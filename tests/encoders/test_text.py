"""Text towers: the interface over the whole registry, the packaged MiniLM's known embeddings, local folders."""

from __future__ import annotations

import pytest
import torch

from mmfm.encoders.text import TEXT_ENCODERS, build_text_encoder
from mmfm.errors import CheckpointError, SampleError

FAST = [n for n in TEXT_ENCODERS.names() if n != "hf"]


@pytest.mark.parametrize("name", FAST)
def test_text_encoder_contract(name):
    enc = build_text_encoder(name)
    tok = enc.tokenize(["No pleural effusion.", "Heart size is normal and the lungs are clear."], max_length=16)
    out = enc(**tok)
    b, L = tok["input_ids"].shape
    assert out["tokens"].shape == (b, L, enc.out_dim) and out["pooled"].shape == (b, enc.out_dim)
    m = tok["attention_mask"].unsqueeze(-1).float()
    assert torch.allclose(out["pooled"], (out["tokens"] * m).sum(1) / m.sum(1), atol=1e-5)
    words = out["mask"]
    assert not words[:, 0].any()                                   # [CLS] is not a word
    assert words.sum(1).tolist() == (tok["attention_mask"].sum(1) - 2).tolist()   # [CLS] and [SEP] excluded
    out["pooled"].sum().backward()
    assert any(p.grad is not None for p in enc.parameters())
    assert 0 < enc.mask_id < enc.vocab_size and enc.pad_id not in (enc.mask_id,)


def test_minilm_matches_sentence_transformers_on_the_same_folder():
    """mmfm's MiniLM tower (mean pooling over the transformers model) against sentence-transformers' own pipeline
    on the same packaged all-MiniLM-L6-v2 folder: an independent implementation, not numbers mmfm produced."""
    st = pytest.importorskip("sentence_transformers")
    from mmfm.encoders.text.hf import minilm_path

    texts = ["No acute cardiopulmonary abnormality.", "Large right pleural effusion.",
             "Normal chest x-ray. Heart size normal, lungs clear.", "Left knee fracture."]
    ref = st.SentenceTransformer(str(minilm_path()), device="cpu", local_files_only=True)
    expected = torch.as_tensor(ref.encode(texts, normalize_embeddings=True))
    enc = build_text_encoder("minilm").eval()
    with torch.no_grad():
        got = torch.nn.functional.normalize(enc.encode(texts, 256)["pooled"], dim=-1)
    assert torch.allclose(got, expected, atol=1e-4)
    assert (got[1] @ got[2]) < (got[0] @ got[2])  # and the similarities mean something: normal ~ normal


def test_hf_loads_any_local_folder_and_rejects_a_wrong_one(tmp_path):
    from mmfm.encoders.text.hf import minilm_path

    enc = build_text_encoder("hf", path=str(minilm_path()))
    assert enc.out_dim == 384
    with pytest.raises(CheckpointError, match="config.json"):
        build_text_encoder("hf", path=str(tmp_path))


def test_scratch_bert_is_random_and_small():
    a, b = build_text_encoder("bert_tiny"), build_text_encoder("bert_tiny")
    assert a.out_dim == 128 and len(a.model.encoder.layer) == 2
    assert not torch.equal(a.model.encoder.layer[0].attention.self.query.weight,
                           b.model.encoder.layer[0].attention.self.query.weight)


def test_non_string_text_is_a_clear_error():
    with pytest.raises(SampleError, match="not a string"):
        build_text_encoder("bert_tiny").tokenize(["ok", None])
