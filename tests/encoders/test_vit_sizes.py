"""Standard ViT names mean the standard sizes, and timm ViT checkpoints load into mmfm's ViT."""

from __future__ import annotations

import pytest
import torch

from mmfm.encoders import build_encoder


@pytest.mark.parametrize("name, timm_name, dim, depth, heads", [
    ("vit_tiny", "vit_tiny_patch16_224", 192, 12, 3),
    ("vit_small", "vit_small_patch16_224", 384, 12, 6),
    ("vit_base", "vit_base_patch16_224", 768, 12, 12),
])
def test_standard_names_have_standard_sizes(name, timm_name, dim, depth, heads):
    import timm

    enc = build_encoder(name, spatial_dims=2, in_channels=3)
    ref = timm.create_model(timm_name, pretrained=False)
    assert (enc.out_dim, len(enc.blocks), enc.blocks[0].attn.num_heads, enc.patch_size) == (dim, depth, heads, 16)
    ours = {k: v.shape for k, v in enc.state_dict().items() if k.startswith("blocks.")}
    theirs = {k: v.shape for k, v in ref.state_dict().items() if k.startswith("blocks.")}
    assert ours == theirs  # the same block layout: timm checkpoints load by name


def test_cpu_sizes_have_their_own_names():
    assert build_encoder("vit_mini").out_dim == 192 and len(build_encoder("vit_mini").blocks) == 6
    assert build_encoder("vit_micro").out_dim == 64


def test_timm_checkpoint_loads_and_gives_timm_features():
    import timm

    from mmfm.encoders.vit import from_timm_state_dict

    torch.manual_seed(0)
    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64).eval()
    sd = ref.state_dict()
    # an additive position table (y + x), which the factored form represents exactly
    y, x = torch.randn(4, 1, 192), torch.randn(1, 4, 192)
    sd["pos_embed"] = torch.cat([torch.zeros(1, 1, 192), (y + x).reshape(1, 16, 192)], dim=1)
    ref.load_state_dict(sd)
    enc = build_encoder("vit_tiny", spatial_dims=2, in_channels=3).eval()
    enc.load_state_dict(from_timm_state_dict(sd, enc))
    img = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        tokens = ref.patch_embed(img) + sd["pos_embed"][:, 1:]                  # timm's tokens before the blocks
        t, grid = enc.patch_embed(img)
        ours = t + enc.pos_embed(grid)
        assert torch.allclose(ours, tokens, atol=1e-4)
        for blk_ref, blk in zip(ref.blocks, enc.blocks):
            tokens, ours = blk_ref(tokens), blk(ours)
        assert torch.allclose(ref.norm(tokens), enc.norm(ours), atol=1e-4)
    # one channel: RGB kernels summed, as timm adapts its own stems
    enc1 = build_encoder("vit_tiny", spatial_dims=2, in_channels=1)
    enc1.load_state_dict(from_timm_state_dict(sd, enc1))
    grey = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(enc1.patch_embed(grey)[0], ref.patch_embed(grey.repeat(1, 3, 1, 1)), atol=1e-4)
