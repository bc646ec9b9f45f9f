"""The encoder contract, over every registered encoder, in 2D and 3D; pretrained weights and channel adaptation."""

from __future__ import annotations

import json

import pytest
import torch

from mmfm.encoders import ENCODERS, build_encoder
from mmfm.errors import ConfigError

TWO_D_ONLY = {"litemedsam", "open_clip_tower"}


def _options(name: str, tmp_path) -> dict:
    """Builder options an encoder cannot do without: open_clip_tower needs an open_clip folder (a tiny one)."""
    if name != "open_clip_tower":
        return {}
    cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8,
                                           "head_width": 16}}
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    return {"folder": str(tmp_path)}
SLOW = {"merlin"}  # 117 M parameters: covered by test_merlin_pretrained (slow)


@pytest.mark.parametrize("name", [n for n in ENCODERS.names() if n not in SLOW])
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_encoder_contract(name, spatial_dims, tmp_path):
    if name in TWO_D_ONLY and spatial_dims == 3:
        with pytest.raises(ConfigError, match="2D"):
            build_encoder(name, spatial_dims=3, in_channels=2)
        return
    torch.manual_seed(0)
    enc = build_encoder(name, spatial_dims=spatial_dims, in_channels=2, **_options(name, tmp_path))
    assert (enc.spatial_dims, enc.in_channels) == (spatial_dims, 2)
    x = torch.randn(2, 2, *([32] * spatial_dims))
    out = enc(x)
    assert set(out) == {"tokens", "pooled"}
    b, n, d = out["tokens"].shape
    assert (b, d) == (2, enc.out_dim) and n >= 1 and out["pooled"].shape == (2, enc.out_dim)
    (out["pooled"].sum() + out["tokens"].mean()).backward()
    unused = {"mask_token"}  # used only when a mask is given (SimMIM)
    if spatial_dims == 2:
        unused.add("pos.0")  # the ViT's depth-axis position table serves 3D inputs only
    missing = [n for n, p in enc.named_parameters()
               if p.requires_grad and n not in unused and (p.grad is None or not p.grad.abs().sum())]
    assert not missing, f"parameters without gradient: {missing[:5]}"


def test_vit_switches_between_2d_and_3d():
    """One ViT embeds 2D and 3D; a 2D image equals a 3D slab of patch_size identical slices."""
    torch.manual_seed(0)
    enc = build_encoder("vit_micro", spatial_dims=3, in_channels=1).eval()
    img = torch.randn(1, 1, 16, 16)
    slab = img[:, :, None].expand(-1, -1, enc.patch_size, -1, -1)          # (1, 1, p, 16, 16)
    t2, g2 = enc.patch_embed(img)
    t3, g3 = enc.patch_embed(slab)
    assert g2 == (4, 4) and g3 == (1, 4, 4)
    assert torch.allclose(t2, t3, atol=1e-5)
    assert enc(torch.randn(2, 1, 16, 16, 16))["tokens"].shape == (2, 64, 64)
    assert enc(img)["tokens"].shape == (1, 16, 64)


def test_litemedsam_weights_and_channel_adaptation():
    torch.manual_seed(0)
    rgb = build_encoder("litemedsam", in_channels=3).eval()
    grey = build_encoder("litemedsam", in_channels=1).eval()
    bn = rgb.net.patch_embed.seq[0].bn
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))  # trained statistics
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        a, b = grey(x)["pooled"], rgb(x.repeat(1, 3, 1, 1))["pooled"]
    assert torch.allclose(a, b, atol=1e-4)  # summed RGB kernel on grey == RGB kernel on replicated grey
    assert rgb.contract["input_size"] == [256, 256]


def test_adapt_input_channels_nd():
    from mmfm.encoders import adapt_input_channels

    w3 = torch.randn(4, 3, 2, 2, 2)
    x = torch.randn(1, 1, 4, 4, 4)
    one = adapt_input_channels(w3, 1)
    assert torch.allclose(torch.nn.functional.conv3d(x, one), torch.nn.functional.conv3d(x.repeat(1, 3, 1, 1, 1), w3),
                          atol=1e-5)
    five = adapt_input_channels(w3, 5)
    assert five.shape == (4, 5, 2, 2, 2)
    w2 = torch.randn(4, 3, 3, 3)
    assert adapt_input_channels(w2, 1).shape == (4, 1, 3, 3)


@pytest.mark.slow
def test_merlin_pretrained():
    from mmfm.encoders.merlin import merlin_available

    if not merlin_available():
        pytest.skip("pip install 'mmfm[merlin]'")
    with pytest.raises(ConfigError, match="3D"):
        build_encoder("merlin", spatial_dims=2)
    enc = build_encoder("merlin", in_channels=1).eval()
    assert abs(float(enc.net.bn1.running_var.mean()) - 0.318) < 0.01  # trained statistics, as published
    with torch.no_grad():
        out = enc(torch.rand(1, 1, 64, 64, 32))
    assert out["tokens"].shape == (1, 8, 2048) and out["pooled"].shape == (1, 2048)
    assert enc.contract["spacing"] == [1.5, 1.5, 3.0]


def test_zoo_lists_every_packaged_model_with_a_verified_manifest(capsys):
    from mmfm.cli.main import main
    from mmfm.encoders import zoo

    assert main(["zoo", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == {"litemedsam", "merlin", "minilm", "smollm2"}
    m = zoo.manifest("litemedsam")
    assert m["installed"] and m["files"][0]["matches_checked_release"] is True and m["licence"]
    assert m["contract"]["input_size"] == [256, 256] and m["version"]
    lm = zoo.manifest("smollm2")   # the language model's GGUF, checked against the pinned SHA-256
    assert lm["installed"] and lm["files"][0]["matches_checked_release"] is True and lm["licence"]
    assert main(["zoo", "info", "no-such-model"]) == 2
