"""Each loss against a naive loop implementation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmfm.objectives.losses import InfoNCELoss, MultiPositiveNCELoss, NTXentLoss, VoCoLoss, masked_reconstruction_loss


def naive_multipositive(z, groups, t):
    z = F.normalize(z, dim=1)
    total, count = 0.0, 0
    for i in range(len(z)):
        denom = sum(math.exp(float(z[i] @ z[j]) / t) for j in range(len(z)) if j != i)
        pos = [j for j in range(len(z)) if j != i and groups[j] == groups[i]]
        if not pos:
            continue
        total += sum(-math.log(math.exp(float(z[i] @ z[p]) / t) / denom) for p in pos) / len(pos)
        count += 1
    return total / count


def test_multipositive_against_loop():
    torch.manual_seed(0)
    z, g = torch.randn(7, 5), torch.tensor([0, 0, 1, 1, 1, 2, 3])
    assert abs(MultiPositiveNCELoss(0.3)(z, g).item() - naive_multipositive(z, g, 0.3)) < 1e-5


def test_ntxent_against_simclr_formula():
    torch.manual_seed(1)
    z1, z2 = torch.randn(4, 6), torch.randn(4, 6)
    t = 0.5
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n, losses = 4, []
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        denom = sum(math.exp(float(z[i] @ z[k]) / t) for k in range(2 * n) if k != i)
        losses.append(-math.log(math.exp(float(z[i] @ z[j]) / t) / denom))
    assert abs(NTXentLoss(t)(z1, z2).item() - sum(losses) / len(losses)) < 1e-5


def test_infonce_against_loop():
    torch.manual_seed(2)
    q, k, queue = torch.randn(3, 4), torch.randn(3, 4), torch.randn(5, 4)
    t = 0.2
    qn, kn, Q = F.normalize(q, dim=1), F.normalize(k, dim=1), F.normalize(queue, dim=1)
    ref = 0.0
    for i in range(3):
        logits = [float(qn[i] @ kn[i]) / t] + [float(qn[i] @ Q[j]) / t for j in range(5)]
        ref += -logits[0] + math.log(sum(math.exp(v) for v in logits))
    assert abs(InfoNCELoss(t)(q, k, queue).item() - ref / 3) < 1e-5


def test_voco_against_loop():
    torch.manual_seed(3)
    crop, bases, ov = torch.randn(2, 4), torch.randn(2, 3, 4), torch.rand(2, 3)
    out = VoCoLoss(reg_weight=0.5)(crop, bases, ov)
    pred, reg = [], []
    for b in range(2):
        for k in range(3):
            pred.append(abs(max(0.0, float(F.cosine_similarity(crop[b], bases[b, k], dim=0))) - float(ov[b, k])))
            for m in range(3):
                if m != k:
                    reg.append(max(0.0, float(F.cosine_similarity(bases[b, k], bases[b, m], dim=0))))
    assert abs(out["pred_loss"].item() - sum(pred) / len(pred)) < 1e-5
    assert abs(out["reg_loss"].item() - 0.5 * sum(reg) / len(reg)) < 1e-5


def test_masked_reconstruction_against_loop():
    torch.manual_seed(4)
    pred, target = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    mask = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 1, 1]], dtype=torch.bool)
    errs = [float(((pred[b, n] - target[b, n]) ** 2).mean()) for b in range(2) for n in range(5) if mask[b, n]]
    assert abs(masked_reconstruction_loss(pred, target, mask)[0].item() - sum(errs) / len(errs)) < 1e-6
    l1 = [float((pred[b, n] - target[b, n]).abs().mean()) for b in range(2) for n in range(5) if mask[b, n]]
    assert abs(masked_reconstruction_loss(pred, target, mask, "l1")[0].item() - sum(l1) / len(l1)) < 1e-6


@pytest.mark.long
def test_contrastive_losses_gather_under_two_gloo_processes():
    """NT-Xent, CLIP eq. (6) (hard, duplicate groups, soft targets) and GLoRIA local: see ddp_loss_script.py."""
    from pathlib import Path

    from tests.torchrun import failure, torchrun

    script = Path(__file__).with_name("ddp_loss_script.py")
    r = torchrun([str(script)])
    assert r.returncode == 0, failure(r)


def test_masked_reconstruction_norm_pix_against_loop():
    """MAE's normalised-pixel target (every shipped MAE recipe uses it): each target patch minus its mean, divided
    by sqrt(unbiased variance + 1e-6), as in facebookresearch/mae ``forward_loss``."""
    import math

    torch.manual_seed(5)
    pred, target = torch.randn(2, 4, 6), torch.rand(2, 4, 6) * 3 + 1
    mask = torch.tensor([[1, 1, 0, 0], [0, 1, 0, 1]], dtype=torch.bool)
    errs = []
    for b in range(2):
        for n in range(4):
            if not mask[b, n]:
                continue
            t = [float(v) for v in target[b, n]]
            mu = sum(t) / len(t)
            var = sum((v - mu) ** 2 for v in t) / (len(t) - 1)
            tn = [(v - mu) / math.sqrt(var + 1e-6) for v in t]
            errs.append(sum((float(p) - v) ** 2 for p, v in zip(pred[b, n], tn)) / len(t))
    loss, _ = masked_reconstruction_loss(pred, target, mask, "mse", norm_pix=True)
    assert abs(loss.item() - sum(errs) / len(errs)) < 1e-5
    assert abs(masked_reconstruction_loss(pred, target, mask, "mse")[0].item() - sum(errs) / len(errs)) > 0.1


def test_mae_objective_uses_norm_pix():
    from mmfm.encoders import build_encoder
    from mmfm.objectives import build_objective

    x = torch.rand(2, 1, 16, 16) * 100 + 50  # far from unit scale: only the normalised target is O(1)
    losses = {}
    for norm_pix in (True, False):
        torch.manual_seed(0)
        obj = build_objective("mae", build_encoder("vit_micro", spatial_dims=2, in_channels=1), norm_pix=norm_pix)
        torch.manual_seed(1)
        losses[norm_pix] = obj({"image": x})["loss"].item()
    assert losses[True] < 10 < losses[False]
