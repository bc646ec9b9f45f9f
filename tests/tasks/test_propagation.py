"""3D propagation (mmfm.tasks.propagation): both ways from a prompt, stopping where the structure ends (the mask
vanishing, an area jump), several prompted slices merged, a correction click that changes only nearby slices; the
logic runs on a small deterministic predictor, then once with LiteMedSAM on real LiTS slices."""

from __future__ import annotations

import time

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from mmfm.tasks import promptable as P
from mmfm.tasks.propagation import Rules, SliceOutput, VolumePropagation, box_of, dice


class Follower:
    """A stand-in for a promptable model on a volume (n, rows, cols) of intensities: it returns the bright pixels
    inside the box, within 2 pixels of the mask prompt when one is given (so it follows the previous slice), plus
    a disc of bright pixels around a positive click, minus a disc of radius 6 around a negative click."""

    def __init__(self, image: np.ndarray) -> None:
        self.images, self.n_slices = image, image.shape[0]
        self.calls: list[int] = []

    def image(self, k: int) -> np.ndarray:
        return self.images[k]

    def predict(self, k, box, points=(), labels=(), mask_prompt=None) -> SliceOutput:
        self.calls.append(k)
        bright = self.images[k] > 0.5
        m = np.zeros_like(bright)
        if box is not None:
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            m[y0:y1 + 1, x0:x1 + 1] = bright[y0:y1 + 1, x0:x1 + 1]
        if mask_prompt is not None:
            m &= ndi.binary_dilation(mask_prompt.numpy() > 0, iterations=2)
        yy, xx = np.mgrid[:bright.shape[0], :bright.shape[1]]
        for (x, y), lab in zip(points, labels):
            disc = (yy - y) ** 2 + (xx - x) ** 2 <= 36
            m = m | (disc & bright) if lab else m & ~disc
        logits = torch.where(torch.from_numpy(m), 5.0, -5.0)
        return SliceOutput(m, logits, 0.9 if m.any() else 0.1)

    def to_mask(self, k, logits) -> np.ndarray:
        return logits.numpy() > 0


def _ellipsoid(n=40, size=48, k0=10, k1=29, r=14.0) -> np.ndarray:
    """(n, size, size) bool: an ellipsoid on slices k0..k1."""
    kk, yy, xx = np.mgrid[:n, :size, :size].astype(float)
    c, half = (k0 + k1) / 2, (k1 - k0 + 1) / 2
    return ((kk - c) / half) ** 2 + ((yy - 24) / r) ** 2 + ((xx - 22) / r) ** 2 <= 1.0


def _run(image, prompts, rules=None):
    job = VolumePropagation(Follower(image), rules or Rules(margin=1.5, margin_fraction=0.0, mask_prompt=True))
    for k, box in prompts:
        job.add_prompt(k, box)
    return job.run()


def test_propagates_both_ways_and_stops_where_the_structure_ends():
    truth = _ellipsoid()
    image = truth.astype(np.float32)
    image[:, 44:, :] = 1.0                             # another bright structure on every slice, outside the box
    job = _run(image, [(20, box_of(truth[20], 2))])
    assert np.array_equal(job.volume(truth.shape[1:]), truth)          # exactly the ellipsoid, slices 10..29
    assert sorted(job.slices) == list(range(10, 30))
    assert job.stopped["20 up"] == "slice 30: the mask vanished"
    assert job.stopped["20 down"] == "slice 9: the mask vanished"


def test_an_area_jump_ends_the_sweep_even_without_the_mask_prompt():
    """Where the structure ends against a large neighbour of the same brightness, the box outlines the neighbour:
    the area rule (not the intensity) stops the sweep there."""
    truth = _ellipsoid(k0=10, k1=29)
    image = truth.astype(np.float32)
    image[30:, :, :] = 1.0                             # a large bright neighbour right after the structure
    job = _run(image, [(20, box_of(truth[20], 2))], Rules(margin=1.5, margin_fraction=0.0))
    assert sorted(job.slices) == list(range(10, 30))
    assert job.stopped["20 up"].startswith("slice 30: the area grew")
    no_rule = _run(image, [(20, box_of(truth[20], 2))], Rules(margin=1.5, margin_fraction=0.0, max_growth=None,
                                                              min_overlap=None))
    assert max(no_rule.slices) == 39                   # without it the sweep runs on through the neighbour


def test_several_prompted_slices_constrain_one_structure():
    """A structure with a second part that appears on slice 25, away from the first: one prompt below it never
    reaches it; a second prompt on slice 30 (its box around both parts) does, and the sweeps between the two
    prompts are fused."""
    truth = _ellipsoid(k0=5, k1=34)
    truth[25:35, 4:12, 36:46] = True
    image = truth.astype(np.float32)
    one = _run(image, [(15, box_of(truth[15], 2))])
    assert dice(one.volume(truth.shape[1:]), truth) < 0.97
    assert not one.volume(truth.shape[1:])[25:, 4:12, 36:46].any()
    two = _run(image, [(15, box_of(truth[15], 2)), (30, box_of(truth[30], 2))])
    assert np.array_equal(two.volume(truth.shape[1:]), truth)
    assert two.stopped["15 up"] == "reached the prompted slice 30"
    assert two.stopped["30 down"] == "reached the prompted slice 15"
    assert all(two.sources[k] == [15, 30] for k in range(16, 30))      # both sweeps, fused
    assert two.sources[35 - 1] == [30] and two.sources[5] == [15]


def test_a_correction_click_changes_only_nearby_slices():
    truth = _ellipsoid(k0=2, k1=37)
    image = truth.astype(np.float32)
    job = _run(image, [(20, box_of(truth[20], 2))])
    before = job.volume(truth.shape[1:]).copy()
    assert np.array_equal(before, truth)
    calls = len(job.predictor.calls)
    changed = job.correct(20, [[22, 24]], [0])          # "not here": a hole around the centre of slice 20
    after = job.volume(truth.shape[1:])
    assert not after[20, 24, 22] and before[20, 24, 22]
    assert 20 in changed and len(changed) >= 3                                  # the neighbours follow the hole ...
    assert max(abs(k - 20) for k in changed) <= 4                               # ... which closes within a few slices
    unchanged = [k for k in range(40) if k not in changed]
    assert np.array_equal(after[unchanged], before[unchanged])
    assert [k for k in range(40) if not np.array_equal(after[k], before[k])] == changed
    assert len(job.predictor.calls) - calls <= 2 * 5 + 1                        # a local re-propagation
    # a positive click on the same slice fills the hole again (the clicks of a slice add up)
    job.correct(20, [[22, 24]], [1])
    assert job.volume(truth.shape[1:])[20, 24, 22]


def test_litemedsam_propagates_the_liver_on_real_lits_slices_and_corrects_with_the_decoder_only():
    """LiteMedSAM on 4 axial slices of the LiTS CT: one box on the middle slice, propagated with the default rules;
    a correction runs no image encoder."""
    from mmfm.data.io import read_image
    from mmfm.data.presets import get_preset
    from mmfm.data.sources.mini import lits_files

    img_path, lab_path = lits_files()
    lo, hi, mid = 62, 66, 64
    vol = get_preset("ct_abdomen")(read_image(img_path, modality="CT").array)[0][:, :, lo:hi]
    liver = read_image(lab_path).array[0][:, :, lo:hi] > 0
    model = P.for_inference(P.litemedsam_model())
    slices = P.ModelSlices(model, vol)
    job = VolumePropagation(slices, Rules(margin=1.0))
    job.add_prompt(mid - lo, box_of(liver[:, :, mid - lo].T, 2))
    job.run()
    pred = np.moveaxis(job.volume((128, 128)).transpose(0, 2, 1), 0, 2)       # (I, J, K)
    assert sorted(job.slices) == list(range(hi - lo))
    assert dice(pred, liver) > 0.85
    assert slices.cache.computed == hi - lo                                     # each slice embedded once
    t = time.perf_counter()
    inside = np.argwhere(liver[:, :, 0].T)[len(np.argwhere(liver[:, :, 0].T)) // 2]   # (row, column)
    job.correct(0, [[float(inside[1]), float(inside[0])]], [1])
    assert slices.cache.computed == hi - lo                                     # no new embedding: decoder only
    assert time.perf_counter() - t < 5.0


@pytest.fixture
def oracle(monkeypatch):
    """An oracle in place of LiteMedSAM for P.propagate: an 'embedding' is the slice itself, and a box prompt
    gives the bright pixels inside the box (IoU estimate 0.9, or 0.1 when there are none). Yields the list of
    embedding batch sizes and a model stand-in (input size 256)."""
    embedded: list[int] = []

    def embed(model, images):
        embedded.append(len(images))
        return [(torch.from_numpy(np.ascontiguousarray(im)), None) for im in images]

    def decode(model, image, frame, box=None, points=(), labels=(), text=None, mask_input=None):
        m = torch.zeros(image.shape, dtype=torch.bool)
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        m[y0:y1 + 1, x0:x1 + 1] = image[y0:y1 + 1, x0:x1 + 1] > 0.5
        return torch.where(m, 5.0, -5.0)[None, None], 0.9 if m.any() else 0.1

    monkeypatch.setattr(P, "embed_images", embed)
    monkeypatch.setattr(P, "decode_logits", decode)
    monkeypatch.setattr(P, "from_model", lambda logits, frame: logits[0, 0].numpy() > 0)
    return embedded, type("M", (), {"input_size": 256})()


def test_propagate_keeps_its_interface_along_any_axis_and_with_look_ahead(oracle):
    """`mmfm segment`'s entry point, P.propagate, on a volume (I, J, K) with a drifting box-shaped structure and an
    oracle in place of the network (bright pixels inside the box): the same mask along k and along j, embedded one
    slice or four at a time, and 'up'/'down' stops as before."""
    vol = np.zeros((40, 30, 20), np.float32)           # (I, J, K)
    truth = np.zeros(vol.shape, bool)
    for k in range(5, 15):                              # a structure on slices 5..14 that drifts along i
        truth[8 + k // 2: 20 + k // 2, 6:18, k] = True
    vol[truth] = 1.0
    vol[30:36, 20:26, :] = 1.0                          # another bright object on every slice, outside the box
    embedded, model = oracle
    start, box = 9, box_of(truth[:, :, 9].T)
    res = P.propagate(model, vol, start, box, margin=256 / 40)   # one voxel of margin: follows the drift
    assert np.array_equal(res.mask, truth)
    assert sorted(res.scores) == list(range(5, 15))
    assert res.stopped == {"up": "slice 15: the mask vanished", "down": "slice 4: the mask vanished"}
    res_j = P.propagate(model, np.moveaxis(vol, 1, 2), start, box, axis=1, margin=256 / 40)
    assert np.array_equal(res_j.mask, np.moveaxis(truth, 1, 2))
    embedded.clear()
    res_4 = P.propagate(model, vol, start, box, margin=256 / 40, batch=4)
    assert np.array_equal(res_4.mask, truth) and res_4.stopped == res.stopped
    assert max(embedded) == 4
    # two prompted slices through the same entry point
    res_2 = P.propagate(model, vol, [6, 12], [box_of(truth[:, :, 6].T), box_of(truth[:, :, 12].T)],
                        margin=256 / 40)
    assert np.array_equal(res_2.mask, truth) and res_2.sources[9] == [6, 12]


def test_boxes_across_draws_prompts_from_a_mask_along_another_axis():
    mask = np.zeros((30, 20, 10), bool)                  # (I, J, K): a block on i 5..24, j 4..11, k 2..7
    mask[5:25, 4:12, 2:8] = True
    prompts = P.boxes_across(mask, 0, n=3, margin=1.0)
    assert [k for k, _ in prompts] == [8, 15, 21]        # 1/6, 3/6, 5/6 of i 5..24
    # along i a slice shows x = j, y = k (propagate's convention for axis 0)
    assert prompts[0][1] == [3.0, 1.0, 12.0, 8.0]
    assert P.boxes_across(np.zeros_like(mask), 1) == []


def test_propagate_fused_votes_three_axes_and_keeps_the_users_slice(oracle, monkeypatch):
    """The oracle network of the test above on a drifting structure: the fused mask is the structure; each other
    axis was swept from three boxes drawn from the first result; the prompted slice keeps the first sweep's mask
    even where the other two axes disagree."""
    vol = np.zeros((40, 30, 20), np.float32)
    truth = np.zeros(vol.shape, bool)
    for k in range(5, 15):
        truth[8 + k // 2: 20 + k // 2, 6:18, k] = True
    vol[truth] = 1.0

    embedded, model = oracle
    kept: dict = {}
    res = P.propagate_fused(model, vol, 9, box_of(truth[:, :, 9].T), margin=256 / 40, slices=kept)
    assert sorted(kept) == [0, 1, 2] and embedded
    embedded.clear()                                     # the same volume again: every embedding is reused
    again = P.propagate_fused(model, vol, 9, box_of(truth[:, :, 9].T), margin=256 / 40, slices=kept)
    assert embedded == [] and np.array_equal(again.mask, res.mask)
    assert np.array_equal(res.mask, truth)
    assert sorted(res.axes) == [0, 1, 2] and res.axes[2]["prompts"] == "yours"
    assert all(len(res.axes[a]["prompts"]) == 3 and res.axes[a]["voxels"] >= 0.9 * truth.sum() for a in (0, 1))
    assert all(type(v) is float for a in (0, 1) for p in res.axes[a]["prompts"] for v in p["box"])   # JSON-ready
    # the other two sweeps miss slices 9 (the prompted one) and 10: slice 10 is voted out, slice 9 stays the user's
    first = P.propagate(model, vol, 9, box_of(truth[:, :, 9].T), margin=256 / 40)
    calls = {"n": 0}
    real = P.propagate

    def second_sweeps_miss_slice_9(model, volume, index, box, axis=2, **kw):
        calls["n"] += 1
        r = real(model, volume, index, box, axis=axis, **kw)
        if calls["n"] > 1:                                # the other axes: pretend they missed slice k = 9
            r.mask[:, :, 9] = False
            r.mask[:, :, 10] = False
        return r

    monkeypatch.setattr(P, "propagate", second_sweeps_miss_slice_9)
    res = P.propagate_fused(model, vol, 9, box_of(truth[:, :, 9].T), margin=256 / 40)
    assert np.array_equal(res.mask[:, :, 9], first.mask[:, :, 9])          # the user's slice: the first sweep's
    assert not res.mask[:, :, 10].any()                                     # elsewhere two of three decide
    assert np.array_equal(res.mask[:, :, 11:], truth[:, :, 11:])
