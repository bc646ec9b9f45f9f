"""Explanations: attention rollout against a hand computation, every method finds the object a trained model
uses (pointing game), word-region maps, and `mmfm explain` end to end with maps on the input's grid."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mmfm.encoders import build_encoder
from mmfm.errors import ConfigError, MMFMError
from mmfm.tasks.classification import ClassificationTask
from mmfm.trust.explain import attention_rollout, normalise, pointing_game, saliency, word_regions


def test_rollout_matches_hand_computation_for_one_block():
    torch.manual_seed(0)
    from mmfm.encoders.vit import ViTEncoder

    enc = ViTEncoder(spatial_dims=2, in_channels=1, patch_size=4, dim=32, depth=1, heads=2).eval()
    x = torch.randn(1, 1, 16, 16)
    got = attention_rollout(enc, x)
    t, grid = enc.patch_embed(x)
    t = t + enc.pos_embed(grid)
    attn = enc.blocks[0].attn
    h = enc.blocks[0].norm1(t)
    qkv = attn.qkv(h).reshape(1, t.shape[1], 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
    a = ((q * attn.scale) @ k.transpose(-2, -1)).softmax(-1).mean(1)[0]      # (N, N), heads averaged
    a = a + torch.eye(a.shape[0])
    a = a / a.sum(-1, keepdim=True)
    rel = a.mean(0).view(1, *grid)
    expect = normalise(torch.nn.functional.interpolate(rel[:, None], size=(16, 16), mode="bilinear",
                                                       align_corners=False)[:, 0])
    assert torch.allclose(got, expect.detach(), atol=1e-5)


def _squares(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noise images; class 1 holds one bright 8x8 square (its mask), class 0 none (the mask marks where it would be)."""
    g = torch.Generator().manual_seed(seed)
    x = 0.1 * torch.randn(n, 1, 32, 32, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    masks = torch.zeros(n, 32, 32, dtype=torch.bool)
    for i in range(n):
        r, c = (int(v) for v in torch.randint(2, 22, (2,), generator=g))
        if y[i]:
            x[i, 0, r:r + 8, c:c + 8] += 1.0
        masks[i, r:r + 8, c:c + 8] = True
    return x, y, masks


def _trained(encoder: str) -> ClassificationTask:
    torch.manual_seed(0)
    opts = {"patch_size": 4} if encoder.startswith("vit") else {}
    model = ClassificationTask(build_encoder(encoder, spatial_dims=2, in_channels=1, **opts), 2)
    x, y, _ = _squares(256, 0)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for _ in range(60):
        idx = torch.randint(0, 256, (32,))
        loss = model({"image": x[idx], "label": y[idx]})["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("encoder,methods", [
    ("resnet_tiny", ["occlusion"]), ("vit_micro", ["rollout"]),
    pytest.param("vit_mini", ["rollout", "occlusion"], marks=pytest.mark.long)])
def test_methods_point_at_the_object_a_trained_model_uses(encoder, methods):
    model = _trained(encoder)
    xt, yt, mt = _squares(40, 1)
    assert (model.predict(xt).argmax(1) == yt).float().mean() >= 0.9
    pos = yt == 1
    for method in methods:
        maps = saliency(model, xt[pos], method, 1)
        assert maps.shape == (int(pos.sum()), 32, 32) and float(maps.min()) >= 0 and float(maps.max()) <= 1
        hits = np.mean([pointing_game(m.numpy(), k.numpy(), tolerance=2) for m, k in zip(maps, mt[pos])])
        assert hits >= 0.7, (method, hits)


def test_grad_cam_equals_the_hand_computation():
    """Grad-CAM through MONAI equals ReLU(sum_c mean(dy/dA_c) A_c) on the chosen layer, upsampled. (On this toy
    it does not point at the square: the class evidence of a small CNN's gradients can be negative; the pointing
    game table in docs/trust.md reports Grad-CAM's real numbers.)"""
    from mmfm.trust.explain import cam_layer, grad_cam

    model = _trained("resnet_tiny")
    xt, _, _ = _squares(6, 2)
    layer = cam_layer(model.encoder, xt[:1])
    assert layer == "net.layer2"                         # 4x4 maps on 32x32 input (layer3 is 2x2, layer4 1x1)
    acts = {}
    h = model.encoder.get_submodule(layer).register_forward_hook(lambda m, i, o: acts.__setitem__("a", o))
    logits = model.logits(xt)
    h.remove()
    g = torch.autograd.grad(logits[:, 1].sum(), acts["a"])[0]
    cam = torch.relu((g.mean(dim=(2, 3), keepdim=True) * acts["a"]).sum(1))
    expect = normalise(torch.nn.functional.interpolate(cam[:, None], size=(32, 32), mode="bilinear")[:, 0])
    assert torch.allclose(grad_cam(model, xt, 1), expect.detach(), atol=1e-4)


def test_grad_cam_reaches_the_layer_of_adapted_merged_and_frozen_encoders():
    """A LoRA-adapted encoder, the same encoder merged (plain frozen layers: no parameter before the head needs a
    gradient, so MONAI's backward hook never fired: `mmfm train ... train.peft=lora` crashed in the report) and the
    same weights all trainable give one Grad-CAM map: the map depends on the weights, not on what trains."""
    from mmfm.encoders.adapters import PeftSpec, add_adapters, merge_adapters
    from mmfm.trust.explain import cam_layer, grad_cam

    torch.manual_seed(0)
    model = ClassificationTask(build_encoder("resnet_tiny", spatial_dims=2, in_channels=1), 3).eval()
    add_adapters(model, PeftSpec("lora", rank=2))
    with torch.no_grad():                                # a non-zero update, so merging changes the weights
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0.0, 0.05)
    x = torch.randn(2, 1, 32, 32)
    adapted = grad_cam(model, x, 1)
    # a layer with an adapter is a layer, not a block: the adapted and the merged model read the same block, also
    # where the choice falls back to the largest map (the LoRA-wrapped stem would win it if it counted)
    layers = [cam_layer(model.encoder, x[:1]), cam_layer(model.encoder, x[:1], min_side=64)]
    assert merge_adapters(model) > 0
    assert [cam_layer(model.encoder, x[:1]), cam_layer(model.encoder, x[:1], min_side=64)] == layers
    assert not any(p.requires_grad for p in model.encoder.parameters())
    merged = grad_cam(model, x, 1)
    assert merged.shape == (2, 32, 32) and bool((merged.flatten(1).amax(1) > 0.99).all())
    assert torch.allclose(adapted, merged, atol=1e-4)
    model.requires_grad_(True)
    assert torch.allclose(grad_cam(model, x, 1), merged, atol=1e-5)


def test_3d_maps_have_the_volume_shape():
    for name in ("resnet_tiny", "vit_mini"):
        model = ClassificationTask(build_encoder(name, spatial_dims=3, in_channels=1), 2).eval()
        method = "gradcam" if name == "resnet_tiny" else "rollout"
        assert saliency(model, torch.randn(1, 1, 16, 16, 16), method).shape == (1, 16, 16, 16)
    with pytest.raises(ConfigError, match="ViT"):
        saliency(ClassificationTask(build_encoder("resnet_tiny", spatial_dims=2, in_channels=1), 2),
                 torch.randn(1, 1, 16, 16), "rollout")


def test_pointing_game():
    s = np.zeros((10, 10))
    s[2, 3] = 1
    m = np.zeros((10, 10), bool)
    m[2, 3] = True
    assert pointing_game(s, m)
    m2 = np.zeros((10, 10), bool)
    m2[2, 6] = True
    assert not pointing_game(s, m2) and pointing_game(s, m2, tolerance=3)
    with pytest.raises(ConfigError):
        pointing_game(s, np.zeros((10, 10), bool))


def test_word_regions_are_softmaxes_over_regions():
    from mmfm.encoders.dual import DualEncoder
    from mmfm.encoders.text import build_text_encoder

    dual = DualEncoder(build_encoder("vit_mini", spatial_dims=2, in_channels=1), build_text_encoder("bert_tiny"))
    x = torch.randn(1, 1, 32, 32)
    tokens, maps = word_regions(dual, x, "liver lesion")
    assert "liver" in tokens and maps.shape == (len(tokens), 32, 32)
    assert float(maps.min()) >= 0 and float(maps.max()) <= 1


def test_cli_explain_writes_maps_on_the_input_grid(tmp_path, mini_root):
    import nibabel as nib

    from mmfm.cli.main import main
    from mmfm.workflows.config import load_config
    from mmfm.workflows.supervised import run_supervised

    run = tmp_path / "run"
    run_supervised(load_config(None, [f"out={run}", "encoder.name=resnet_tiny", "train.max_steps=5",
                                      "train.progress=false", f"data.root={mini_root}", "calibrate="]))
    patches = np.load(mini_root / "patches2d.npz")
    affine = np.diag([0.8, 0.8, 1.0, 1.0])
    img = tmp_path / "patch.nii.gz"
    nib.save(nib.Nifti1Image(patches["image"][0, 0][:, :, None].astype(np.float32), affine), img)
    mask = tmp_path / "mask.nii.gz"
    m = np.zeros((32, 32, 1), np.uint8)
    m[10:20, 10:20] = 1
    nib.save(nib.Nifti1Image(m, affine), mask)
    out = tmp_path / "why"
    assert main(["explain", str(img), "--model", str(run), "--out", str(out), "--mask", str(mask)]) == 0
    rec = json.loads((out / "explain.json").read_text())
    assert set(rec["maps"]) == {"gradcam", "occlusion"} and set(rec["pointing_game"]) == {"gradcam", "occlusion"}
    assert "patch" not in json.dumps(rec)                     # no input file name recorded
    g = nib.load(out / "gradcam.nii.gz")
    assert g.shape[:2] == (32, 32) and np.allclose(g.affine, affine) and (out / "overlay.png").exists()
    assert main(["explain", str(img), "--model", str(run), "--out", str(out)]) == 2          # no --overwrite
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    assert main(["explain", str(img), "--model", str(run), "--out", str(tmp_path / "mine")]) == 2
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"
    with pytest.raises(MMFMError, match="give --text|not a training run"):
        from mmfm.workflows.explain import explain
        explain(str(tmp_path), img, tmp_path / "x")


def test_merge_subwords():
    from mmfm.trust.explain import merge_subwords

    assert merge_subwords(["pl", "##eur", "##al", "e", "##ff", "##usion"]) == (["pleural", "effusion"],
                                                                              [[0, 1, 2], [3, 4, 5]])
    assert merge_subwords(["\u2581pleural", "\u2581eff", "usion"])[0] == ["pleural", "effusion"]
    assert merge_subwords(["liver", "lesion"])[0] == ["liver", "lesion"]
