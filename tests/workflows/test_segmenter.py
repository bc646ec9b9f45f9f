"""`Segmenter`: one image made ready once, prompted many times (segment-anything's set_image once, predict per
prompt): every prompt's mask equals a fresh `segment` call's, and a further prompt embeds nothing it has seen."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from mmfm.errors import ConfigError
from mmfm.workflows.segment import Segmenter, segment


def _disc_png(path):
    yy, xx = np.mgrid[:96, :80]
    img = np.full((96, 80), 40, np.uint8)
    img[(yy - 50) ** 2 + (xx - 36) ** 2 <= 14 ** 2] = 200
    Image.fromarray(img).save(path)


def _ball(path):
    i, j, k = np.mgrid[:40, :36, :7]
    ball = ((i - 18) / 9.0) ** 2 + ((j - 17) / 8.0) ** 2 + ((k - 3) / 2.0) ** 2 <= 1
    vol = np.where(ball, 150.0, -100.0).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, np.diag([0.8, 0.8, 2.5, 1.0])), path)


def _same(a, b) -> bool:
    return np.array_equal(np.asarray(nib.load(a).dataobj), np.asarray(nib.load(b).dataobj))


def test_a_2d_image_is_embedded_once_for_every_prompt(tmp_path):
    _disc_png(tmp_path / "img.png")
    seg = Segmenter(tmp_path / "img.png", engine="torch")
    for n, box in enumerate(([20, 34, 52, 66], [10, 10, 40, 40])):
        kw = dict(box=box, engine="torch", progress=False, overwrite=True)
        again = segment(tmp_path / "img.png", tmp_path / "again.png", segmenter=seg, **kw)
        fresh = segment(tmp_path / "img.png", tmp_path / "fresh.png", **kw)
        assert np.array_equal(np.asarray(Image.open(tmp_path / "again.png")),
                              np.asarray(Image.open(tmp_path / "fresh.png")))
        assert again["score"] == fresh["score"] and again["prompt"] == fresh["prompt"]
        assert seg.embedded == 1, n                                      # the plane, once


def test_a_further_prompt_on_a_volume_runs_the_decoder_only(tmp_path):
    _ball(tmp_path / "ct.nii.gz")
    seg = Segmenter(tmp_path / "ct.nii.gz", modality="CT", engine="torch")
    kw = dict(slice_index=3, modality="CT", engine="torch", progress=False, overwrite=True)
    first = segment(tmp_path / "ct.nii.gz", tmp_path / "a.nii.gz", box=[8, 8, 28, 26], segmenter=seg, **kw)
    seen = seg.embedded
    assert first["foreground_voxels"] > 0 and seen >= len(first["scores"]) >= 3   # + where each sweep stopped
    second = segment(tmp_path / "ct.nii.gz", tmp_path / "b.nii.gz", box=[9, 9, 27, 25], segmenter=seg, **kw)
    assert seg.embedded == seen                                          # no slice embedded again
    fresh = segment(tmp_path / "ct.nii.gz", tmp_path / "c.nii.gz", box=[9, 9, 27, 25], **kw)
    assert _same(tmp_path / "b.nii.gz", tmp_path / "c.nii.gz")
    assert {k: v for k, v in second.items() if k != "mask"} == {k: v for k, v in fresh.items() if k != "mask"}


def test_a_segmenter_answers_for_its_own_image_only(tmp_path):
    _disc_png(tmp_path / "img.png")
    _disc_png(tmp_path / "other.png")
    seg = Segmenter(tmp_path / "img.png", engine="torch")
    with pytest.raises(ConfigError, match="made for img.png"):
        segment(tmp_path / "other.png", tmp_path / "m.png", box=[20, 34, 52, 66], segmenter=seg)
    assert not (tmp_path / "m.png").exists()
    with pytest.raises(ConfigError, match="outside"):                   # prompts are still checked per call
        seg.run([{"label": None, "box": [0, 0, 500, 5], "points": [], "negative_points": [], "slice": None,
                  "boxes": [], "clicks": []}])
