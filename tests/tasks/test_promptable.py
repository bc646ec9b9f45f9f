"""Promptable segmentation: LiteMedSAM loaded in full, MedSAM preprocessing geometry, slice propagation, simulated
prompts, and a SAM-style model on a registry encoder that learns from simulated prompts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmfm.tasks import promptable as P


def _disc(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


def test_litemedsam_loads_every_weight_without_pickle_and_segments_a_boxed_structure():
    model = P.litemedsam_model()
    sd, path = P.litemedsam_state()
    assert set(model.state_dict()) == set(sd)                      # strict: prompt encoder and decoder included
    assert any(k.startswith("mask_decoder.") for k in sd) and any(k.startswith("prompt_encoder.") for k in sd)
    # a bright disc on a darker, textured background, non-square (160 rows x 96 columns): the box selects it
    rng = np.random.default_rng(0)
    img = 0.2 + 0.05 * rng.standard_normal((160, 96))
    disc = _disc(160, 96, 100, 40, 18)
    img[disc] = 0.8
    pred, score = P.predict_slice(model, img, P.box_of(disc, 3))
    assert pred.shape == disc.shape
    assert dice(pred, disc) > 0.85 and 0.0 < score <= 1.2


def test_model_input_keeps_the_aspect_ratio_and_pads_bottom_right():
    img = np.zeros((50, 200))
    img[10:20, 100:150] = 1.0
    x, frame = P.model_input(img, 256)
    assert x.shape == (1, 3, 256, 256) and frame.resized == (64, 256)
    assert float(x[0, 0, 64:].abs().sum()) == 0.0                   # padding below the resized image
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    # a mask in model space comes back on the original grid, at the same place
    logits = torch.full((1, 1, 256, 256), -5.0)
    logits[..., 13:26, 128:192] = 5.0                                  # rows 10..20, columns 100..150 at scale 1.28
    back = P.from_model(logits, frame)
    assert back.shape == (50, 200)
    rows, cols = np.nonzero(back)
    assert abs(rows.min() - 10) <= 1 and abs(rows.max() - 19) <= 1 and abs(cols.min() - 100) <= 1
    assert P.to_frame([100, 10, 150, 20], frame) == pytest.approx([128, 12.8, 192, 25.6])


def test_simulated_prompts_lie_around_and_inside_the_mask():
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(3, 32, 48, dtype=torch.bool)
    masks[0, 5:10, 20:30] = True
    masks[1, 0:32, 0:4] = True
    boxes = P.simulate_boxes(masks, jitter=0.2, generator=g)
    assert boxes[0, 0] <= 20 and boxes[0, 1] <= 5 and boxes[0, 2] >= 29 and boxes[0, 3] >= 9
    assert boxes[0, 0] >= 20 - 0.2 * 10 - 1e-4 and boxes[0, 2] <= 29 + 0.2 * 10 + 1e-4
    assert boxes[1, 0] == 0 and boxes[1, 3] == 31                     # clipped to the image
    assert boxes[2].tolist() == [0, 0, 47, 31]                          # empty: the whole image
    pts, lab = P.simulate_points(masks, 4, generator=g)
    for n in range(2):
        assert lab[n].eq(1).all()
        assert all(masks[n, int(y), int(x)] for x, y in pts[n])
    assert lab[2].eq(0).all()


@pytest.mark.long
def test_sam_style_model_on_a_registry_encoder_learns_from_simulated_prompts():
    """From scratch: a tiny ViT + SAM prompt encoder + mask decoder, trained on box prompts of two discs in the
    same image; the box must select the right one (an unprompted model could not)."""
    torch.manual_seed(0)
    task = P.promptable_segmentation(num_classes=3, spatial_dims=2, in_channels=1,
                                     encoder={"name": "vit_mini", "patch_size": 8}, network="encoder",
                                     input_size=32, decoder_dim=32, jitter=0.05)
    h = 32
    a, b = _disc(h, h, 9, 9, 6), _disc(h, h, 22, 22, 7)
    mask = np.zeros((h, h), np.int64)
    mask[a], mask[b] = 1, 2
    image = torch.from_numpy((mask > 0).astype(np.float32))[None, None].repeat(2, 1, 1, 1)
    labels = torch.from_numpy(mask.T.copy())[None, None].repeat(2, 1, 1, 1)   # mmfm arrays: (i, j)
    opt = torch.optim.AdamW([p for p in task.parameters() if p.requires_grad], lr=2e-3)
    for _ in range(120):
        out = task({"image": image.transpose(2, 3), "mask": labels})
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    pred = task.predict(image.transpose(2, 3), labels)
    assert dice(pred[0, 0].numpy() == 1, mask.T == 1) > 0.7
    assert dice(pred[0, 0].numpy() == 2, mask.T == 2) > 0.7
    frozen = P.promptable_segmentation(num_classes=2, spatial_dims=2, in_channels=1)   # litemedsam
    assert not any(p.requires_grad for p in frozen.model.image_encoder.parameters())
    assert all(p.requires_grad for p in frozen.model.mask_decoder.parameters())


def test_promptable_task_is_2d_only_and_names_its_networks():
    from mmfm.errors import ConfigError

    with pytest.raises(ConfigError, match="2D"):
        P.promptable_segmentation(num_classes=2, spatial_dims=3, in_channels=1)
    with pytest.raises(ConfigError, match="litemedsam or encoder"):
        P.promptable_segmentation(num_classes=2, spatial_dims=2, in_channels=1, network="unet")


@pytest.mark.long
def test_text_prompted_model_segments_each_class_by_its_name():
    """SegVol-style: the class name (MiniLM embedding) is the prompt; each name must select its own structure,
    and a name whose structure is absent must give an empty mask."""
    torch.manual_seed(0)
    task = P.promptable_segmentation(num_classes=3, spatial_dims=2, in_channels=1,
                                     encoder={"name": "vit_micro", "patch_size": 4}, network="encoder",
                                     input_size=32, decoder_dim=32, prompt="text",
                                     class_names=["background", "liver", "tumour"])
    assert "class_text" in dict(task.named_buffers()) and not any("_tower" in k for k in task.state_dict())
    h = 32
    liver, tumour = _disc(h, h, 12, 12, 8), _disc(h, h, 24, 22, 5)
    both = np.zeros((h, h), np.int64)
    both[liver], both[tumour] = 1, 2
    only_liver = np.where(liver, 1, 0)
    masks = torch.from_numpy(np.stack([both.T, only_liver.T]).copy())[:, None]       # mmfm arrays: (i, j)
    images = (masks > 0).float() * torch.tensor([1.0, 1.0]).view(2, 1, 1, 1)
    images = images + 0.5 * (masks == 2).float()                                        # the tumour is brighter
    opt = torch.optim.AdamW([p for p in task.parameters() if p.requires_grad], lr=2e-3)
    for _ in range(200):
        loss = task({"image": images, "mask": masks})["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    pred = task.predict(images)
    for n, truth in enumerate(masks[:, 0].numpy()):
        for c in (1, 2):
            if (truth == c).any():
                assert dice(pred[n, 0].numpy() == c, truth == c) > 0.7, (n, c)
    assert (pred[1, 0] == 2).sum() < 0.1 * (masks[0, 0] == 2).sum()       # no tumour where there is none
    with pytest.raises(Exception, match="class_names"):
        P.promptable_segmentation(num_classes=3, spatial_dims=2, in_channels=1, network="encoder",
                                  encoder={"name": "vit_micro"}, prompt="text", class_names=["a"])


def test_fused_attention_and_inference_folding_keep_litemedsam_outputs():
    """LiteMedSAM's attention runs through torch's fused SDPA (encoder and decoder) and ``for_inference`` folds
    BatchNorm into the convolutions and goes channels-last: the logits must equal those of the package's own
    explicit-softmax attention with BatchNorm in place."""
    import copy

    torch.manual_seed(0)
    fused = P.litemedsam_model().eval()
    plain = copy.deepcopy(fused)
    swapped = 0
    for m in plain.modules():
        if type(m).__name__ == "FusedAttention":
            m.__class__ = type(m).__mro__[1]                  # back to the vendored class
            swapped += 1
    assert swapped == 10 + 7                                   # TinyViT windows + SAM decoder attentions
    x, box = torch.rand(1, 3, 256, 256), torch.tensor([[60.0, 50.0, 170.0, 180.0]])
    with torch.no_grad():
        ref, ref_iou = plain(x, box)
        got, _ = fused(x, box)
        fast, fast_iou = P.for_inference(fused)(x, box)
    assert torch.allclose(got, ref, atol=1e-3) and torch.allclose(fast, ref, atol=1e-3)
    assert ((fast > 0) == (ref > 0)).float().mean() > 0.9999 and torch.allclose(fast_iou, ref_iou, atol=1e-4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.image_encoder.modules())
