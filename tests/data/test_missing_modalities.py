"""Missing modalities: the multimodal_csv layout, zero-filling with item["present"], modality dropout, dropping a
modality, late fusion over the modalities present, and `mmfm train` evaluated with each modality removed."""

from __future__ import annotations

import json

import pytest
import torch

from mmfm.data import spec
from mmfm.data.augment import ModalityDropout
from mmfm.data.synthetic import write_petct_phantoms
from mmfm.errors import ConfigError, MMFMError
from mmfm.workflows.config import load_config

OPTS = "data.options={modality_columns: {CT: ct, PT: pet}}"


@pytest.fixture(scope="module")
def petct(tmp_path_factory):
    return write_petct_phantoms(tmp_path_factory.mktemp("petct"), n=45, missing=0.3, seed=1)


def _ds(root, *extra, split="train"):
    cfg = load_config(None, ["data.dataset=multimodal_csv", f"data.root={root}", OPTS, "data.size=[32,32]", *extra])
    return spec.labelled(cfg.data, split, "classification")[0]


def test_rows_with_a_missing_modality_are_an_error_unless_zero_filled(petct):
    strict = _ds(petct)
    assert strict.modalities == ["CT", "PT"]
    with pytest.raises(MMFMError, match="missing_modalities=zero"):
        [strict[i] for i in range(len(strict))]
    ds = _ds(petct, "data.missing_modalities=zero")
    items = [ds[i] for i in range(len(ds))]
    assert all(it["image"].shape == (2, 32, 32) for it in items)
    absent = [it for it in items if it["present"][1] == 0]
    assert absent and all(torch.count_nonzero(it["image"][1]) == 0 for it in absent)   # zeros where PET is missing
    assert all(it["present"][0] == 1 and torch.count_nonzero(it["image"][0]) > 0 for it in items)


def test_dropping_a_modality_removes_it_from_every_sample(petct):
    ds = _ds(petct, "data.missing_modalities=zero", "data.drop_modalities=[CT]")
    keep = [i for i in range(len(ds)) if ds.holds_any(i)]
    assert 0 < len(keep) < len(ds)              # the rows without PET have nothing left
    for i in keep:
        it = ds[i]
        assert it["present"].tolist() == [0.0, 1.0] and torch.count_nonzero(it["image"][0]) == 0
    with pytest.raises(MMFMError, match="not among the fused modalities"):
        _ds(petct, "data.missing_modalities=zero", "data.drop_modalities=[MR]")


def test_modality_dropout_is_seeded_never_drops_everything_and_zeroes_what_it_drops(petct):
    ds = ModalityDropout(_ds(petct, "data.missing_modalities=zero"), 0.9)
    dropped = 0
    for i in range(len(ds)):
        a, b = ds.augmented_item(i, (0, 3, i)), ds.augmented_item(i, (0, 3, i))
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["present"], b["present"])
        assert a["present"].sum() >= 1
        for k in range(2):
            if a["present"][k] == 0:
                assert torch.count_nonzero(a["image"][k]) == 0
        whole = ds[i]
        dropped += int(whole["present"].sum() - a["present"].sum())
    assert dropped > len(ds) // 3                  # p = 0.9 drops often (but one modality always stays)
    with pytest.raises(ConfigError):
        ModalityDropout(ds, 1.0)


def test_late_fusion_uses_only_the_modalities_present():
    from mmfm.encoders import build_encoder

    torch.manual_seed(0)
    enc = build_encoder("late_fusion", spatial_dims=2, in_channels=2, branch={"name": "resnet_tiny"}).eval()
    x = torch.randn(3, 2, 32, 32)
    ct_only = torch.tensor([[1.0, 0.0]] * 3)
    out = enc(x, ct_only)["pooled"]
    alone = enc.branches[0](x[:, :1])["pooled"]
    assert torch.allclose(out, alone, atol=1e-6)           # PET's branch weighted out
    x2 = x.clone()
    x2[:, 1] = torch.randn(3, 32, 32)                       # whatever is in an absent channel does not matter
    assert torch.allclose(enc(x2, ct_only)["pooled"], out, atol=1e-6)
    both = enc(x)["pooled"]
    assert torch.allclose(both, 0.5 * (alone + enc.branches[1](x[:, 1:])["pooled"]), atol=1e-6)
    zeroed = x.clone()
    zeroed[:, 1] = 0                                         # how mmfm fills a missing modality: seen as absent
    assert torch.allclose(enc(zeroed)["pooled"], alone, atol=1e-6)
    pyr, ref = enc.pyramid(zeroed), enc.branches[0].pyramid(x[:, :1])   # segmentation decoders: the same rule
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(pyr, ref))
    with pytest.raises(ConfigError, match="do not split evenly"):
        build_encoder("late_fusion", spatial_dims=2, in_channels=3, modalities=2)
    enc.train()
    loss = enc(x, ct_only)["pooled"].sum()
    loss.backward()
    assert enc.branches[0].net is not None and any(p.grad is not None and p.grad.abs().sum() > 0
                                                   for p in enc.branches[0].parameters())
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in enc.branches[1].parameters())


def test_train_late_fusion_with_modality_dropout_and_evaluate_each_modality_removed(petct, tmp_path):
    from mmfm.cli.main import main

    out = tmp_path / "run"
    assert main(["train", "configs/missing_modalities.yaml", f"data.root={petct}", "train.max_steps=4",
                 "train.batch_size=8", "train.progress=false", f"out={out}"]) == 0
    splits = {r["split"] for r in json.loads((out / "results.json").read_text())}
    assert splits == {"test", "test-noCT", "test-noPT"}
    from mmfm.workflows.supervised import load_trained

    model, _ = load_trained(out)                # late fusion rebuilds from the run
    assert type(model.encoder).__name__ == "LateFusionEncoder"
