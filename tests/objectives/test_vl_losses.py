"""Vision-language losses against naive loop implementations of their formulas."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mmfm.objectives.losses import ClipLoss, GloriaLocalLoss


def naive_eq6(v: torch.Tensor, t: torch.Tensor, tau: float) -> float:
    """The review's eq. (6), term by term."""
    n = len(v)

    def sim(a, b):
        return float(F.cosine_similarity(a, b, dim=0))

    total = 0.0
    for i in range(n):
        i2t = math.exp(sim(v[i], t[i]) / tau) / sum(math.exp(sim(v[i], t[j]) / tau) for j in range(n))
        t2i = math.exp(sim(t[i], v[i]) / tau) / sum(math.exp(sim(t[i], v[j]) / tau) for j in range(n))
        total += -math.log(i2t) - math.log(t2i)
    return total / (2 * n)


def naive_soft(v: torch.Tensor, t: torch.Tensor, tau: float, target: list[list[float]]) -> float:
    n = len(v)
    s = [[float(F.cosine_similarity(v[i], t[j], dim=0)) / tau for j in range(n)] for i in range(n)]
    total = 0.0
    for i in range(n):
        lse_row = math.log(sum(math.exp(s[i][j]) for j in range(n)))
        lse_col = math.log(sum(math.exp(s[j][i]) for j in range(n)))
        total += -sum(target[i][j] * (s[i][j] - lse_row) for j in range(n))
        total += -sum(target[i][j] * (s[j][i] - lse_col) for j in range(n))
    return total / (2 * n)


def test_clip_loss_equals_eq6_loop():
    g = torch.Generator().manual_seed(0)
    v, t = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    tau = 0.2
    loss = ClipLoss(gather=False)(v, t, torch.tensor(math.log(1 / tau)))
    assert abs(float(loss) - naive_eq6(v, t, tau)) < 1e-5


def test_clip_logit_scale_is_clamped_at_100():
    g = torch.Generator().manual_seed(1)
    v, t = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    big = ClipLoss(gather=False)(v, t, torch.tensor(math.log(1e4)))
    assert abs(float(big) - naive_eq6(v, t, 0.01)) < 1e-4


def test_clip_duplicate_groups_share_the_target():
    g = torch.Generator().manual_seed(2)
    v, t = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    groups = torch.tensor([7, 3, 7, 1, 3])
    target = [[(1.0 if groups[i] == groups[j] else 0.0) / int((groups == groups[i]).sum()) for j in range(5)]
              for i in range(5)]
    loss = ClipLoss(gather=False)(v, t, torch.tensor(math.log(1 / 0.1)), groups=groups)
    assert abs(float(loss) - naive_soft(v, t, 0.1, target)) < 1e-5
    # without duplicates the groups change nothing
    plain = ClipLoss(gather=False)(v, t, torch.tensor(math.log(10.0)))
    distinct = ClipLoss(gather=False)(v, t, torch.tensor(math.log(10.0)), groups=torch.arange(5))
    assert torch.allclose(plain, distinct, atol=1e-6)


def test_medclip_soft_targets_from_semantic_similarity():
    g = torch.Generator().manual_seed(3)
    v, t = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    sem = torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 0, 1], [1, 1, 0]])
    st = 0.5
    cos = [[float(F.cosine_similarity(sem[i], sem[j], dim=0)) / st for j in range(4)] for i in range(4)]
    target = [[math.exp(cos[i][j]) / sum(math.exp(c) for c in cos[i]) for j in range(4)] for i in range(4)]
    loss = ClipLoss(gather=False, soft_temperature=st)(v, t, torch.tensor(math.log(1 / 0.2)), semantic=sem)
    assert abs(float(loss) - naive_soft(v, t, 0.2, target)) < 1e-5


def naive_gloria(regions, words, mask, ta, tw, tl) -> float:
    n = len(regions)
    s = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(n):
            terms = []
            for li in range(words.shape[1]):
                if not mask[j, li]:
                    continue
                w = words[j, li]
                sims = [float(F.cosine_similarity(w, regions[i, k], dim=0)) for k in range(regions.shape[1])]
                z = sum(math.exp(ta * x) for x in sims)
                vnorm = [regions[i, k] / regions[i, k].norm() for k in range(regions.shape[1])]
                ctx = sum(math.exp(ta * sims[k]) / z * vnorm[k] for k in range(regions.shape[1]))
                terms.append(math.exp(tw * float(F.cosine_similarity(ctx, w, dim=0))))
            s[i][j] = tl * math.log(sum(terms)) / tw
    total = 0.0
    for i in range(n):
        total += -(s[i][i] - math.log(sum(math.exp(s[i][j]) for j in range(n))))
        total += -(s[i][i] - math.log(sum(math.exp(s[j][i]) for j in range(n))))
    return total / (2 * n)


def test_gloria_local_loss_equals_loop():
    g = torch.Generator().manual_seed(4)
    regions, words = torch.randn(3, 4, 6, generator=g), torch.randn(3, 5, 6, generator=g)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 1, 1, 0, 1]], dtype=torch.bool)
    loss = GloriaLocalLoss(4.0, 5.0, 10.0, gather=False)(regions, words, mask)
    assert abs(float(loss) - naive_gloria(regions, words, mask, 4.0, 5.0, 10.0)) < 1e-4


def test_gloria_local_loss_ignores_padding_words():
    g = torch.Generator().manual_seed(5)
    regions, words = torch.randn(3, 4, 6, generator=g), torch.randn(3, 5, 6, generator=g)
    mask = torch.tensor([[1, 1, 0, 0, 0]] * 3, dtype=torch.bool)
    changed = words.clone()
    changed[:, 2:] = torch.randn(3, 3, 6, generator=g) * 100
    lf = GloriaLocalLoss(gather=False)
    assert torch.allclose(lf(regions, words, mask), lf(regions, changed, mask), atol=1e-6)
