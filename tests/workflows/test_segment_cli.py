"""`mmfm segment` end to end with LiteMedSAM: masks on the input's exact grid (PNG size, NIfTI shape + affine),
the JSON record, and every bad input as a one-line error with exit status 2 and no output left behind."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from mmfm.cli.main import main
from mmfm.encoders.zoo import ZOO


def _png(path, h=120, w=80):
    yy, xx = np.mgrid[:h, :w]
    disc = (yy - 70) ** 2 + (xx - 30) ** 2 <= 15 ** 2
    img = np.full((h, w), 50, np.uint8)
    img[disc] = 200
    Image.fromarray(img).save(path)
    return disc


def _volume(path):
    """A 48 x 40 x 9 CT-like volume (HU) with an oblique affine; a sphere on slices 2..6 (k)."""
    i, j, k = np.mgrid[:48, :40, :9]
    ball = ((i - 20) / 10.0) ** 2 + ((j - 22) / 9.0) ** 2 + ((k - 4) / 2.5) ** 2 <= 1
    vol = np.full(ball.shape, -100.0, np.float32)
    vol[ball] = 150.0
    rot = np.array([[0.96, -0.28, 0], [0.28, 0.96, 0], [0, 0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([0.8, 0.8, 2.5])
    affine[:3, 3] = [-30, 12, 40]
    nib.save(nib.Nifti1Image(vol, affine), path)
    return ball, affine


def test_segment_png_writes_a_png_of_the_input_size_and_a_json(tmp_path, capsys):
    disc = _png(tmp_path / "img.png")
    rows, cols = np.nonzero(disc)
    out = tmp_path / "out" / "mask.png"
    rc = main(["segment", str(tmp_path / "img.png"), "--box", str(cols.min() - 2), str(rows.min() - 2),
               str(cols.max() + 2), str(rows.max() + 2), "--out", str(out), "--quiet"])
    assert rc == 0
    mask = np.asarray(Image.open(out))
    assert mask.shape == disc.shape and set(np.unique(mask)) <= {0, 255}
    pred = mask == 255
    assert 2 * (pred & disc).sum() / (pred.sum() + disc.sum()) > 0.85
    rec = json.loads((tmp_path / "out" / "mask.json").read_text())
    assert rec["model"]["sha256"] == ZOO["litemedsam"].sha256["lite_medsam.pth"]
    assert rec["prompt"]["box"] == [cols.min() - 2, rows.min() - 2, cols.max() + 2, rows.max() + 2]
    assert rec["written_by"] == "mmfm segment" and rec["preset"] == "percentile"
    # a second run refuses to overwrite unless asked; mmfm never overwrites a file it did not write
    assert main(["segment", str(tmp_path / "img.png"), "--box", "1", "1", "20", "20", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    (tmp_path / "theirs.png").write_bytes(b"user file")
    assert main(["segment", str(tmp_path / "img.png"), "--box", "1", "1", "20", "20", "--overwrite",
                 "--out", str(tmp_path / "theirs.png")]) == 2
    assert (tmp_path / "theirs.png").read_bytes() == b"user file"


def test_segment_volume_propagates_and_keeps_the_grid_and_affine(tmp_path):
    ball, affine = _volume(tmp_path / "ct.nii.gz")
    i, j = np.nonzero(ball[:, :, 4])
    out = tmp_path / "ball.nii.gz"
    rc = main(["segment", str(tmp_path / "ct.nii.gz"), "--slice", "4", "--box", str(i.min() - 1), str(j.min() - 1),
               str(i.max() + 1), str(j.max() + 1), "--modality", "CT", "--out", str(out), "--quiet"])
    assert rc == 0
    nii = nib.load(out)
    assert nii.shape == ball.shape and np.allclose(nii.affine, affine)
    pred = np.asarray(nii.dataobj) > 0
    assert 2 * (pred & ball).sum() / (pred.sum() + ball.sum()) > 0.7
    assert not pred[:, :, 0].any() and not pred[:, :, 8].any()       # stopped where the sphere ends
    rec = json.loads((tmp_path / "ball.json").read_text())
    assert rec["prompt"]["slice"] == 4 and rec["prompt"]["axis"] == 2 and rec["preset"] == "ct_abdomen"
    assert rec["volume_ml"] == pytest.approx(pred.sum() * 0.8 * 0.8 * 2.5 / 1000, rel=1e-3)


BAD = [
    (["--box", "10", "10", "500", "50"], "outside"),
    (["--box", "10", "10", "10", "50"], "zero area"),
    (["--point", "-1", "5"], "outside"),
    (["--point", "5", "400"], "outside"),
    (["--box", "1", "1", "9", "9", "--slice", "0"], "--slice is for volumes"),
    ([], "no prompt"),
]


@pytest.mark.parametrize("args,message", BAD)
def test_segment_bad_2d_prompts(tmp_path, capsys, args, message):
    _png(tmp_path / "img.png")
    out = tmp_path / "m.png"
    assert main(["segment", str(tmp_path / "img.png"), *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.startswith("mmfm: error:")
    assert not out.exists() and not (tmp_path / "m.json").exists()
    assert not list(tmp_path.glob(".*mmfm-partial"))


def test_segment_bad_volume_and_file_inputs(tmp_path, capsys):
    _volume(tmp_path / "ct.nii.gz")
    vol = str(tmp_path / "ct.nii.gz")
    out = str(tmp_path / "m.nii.gz")
    cases = [
        ([vol, "--box", "1", "1", "9", "9"], "add --slice"),
        ([vol, "--slice", "9", "--box", "1", "1", "9", "9"], "out of range"),
        ([vol, "--slice", "-1", "--box", "1", "1", "9", "9"], "out of range"),
        ([vol, "--slice", "3", "--box", "1", "1", "9", "45"], "outside"),      # j has 40 voxels
        ([vol, "--slice", "3", "--axis", "3", "--box", "1", "1", "9", "9"], "--axis"),
    ]
    (tmp_path / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    cases.append(([str(tmp_path / "broken.nii.gz"), "--slice", "1", "--box", "1", "1", "9", "9"], "broken.nii.gz"))
    cases.append(([str(tmp_path / "missing.nii.gz"), "--slice", "1", "--box", "1", "1", "9", "9"], "no such file"))
    (tmp_path / "afile").write_text("x")
    cases.append(([vol, "--slice", "3", "--box", "1", "1", "9", "9", "--out", str(tmp_path / "afile" / "m.nii.gz")],
                  "is a file, not a folder"))
    cases.append(([vol, "--slice", "3", "--box", "1", "1", "9", "9", "--out", str(tmp_path / "m.png")],
                  "mask on its grid"))
    cases.append(([vol, "--slice", "3", "--box", "1", "1", "9", "9", "--out", str(tmp_path / "m.txt")], ".nii.gz"))
    for args, message in cases:
        if "--out" not in args:
            args = [*args, "--out", out]
        assert main(["segment", *args]) == 2, args
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and err.count("\n") <= 2, (args, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "broken.nii.gz", "ct.nii.gz"]


@pytest.mark.long
@pytest.mark.bf16
def test_segment_in_bf16_gives_the_fp32_mask_within_rounding(tmp_path):
    """--precision bf16 (what --precision auto takes on a CPU with bf16 units or a recent GPU): the propagated mask
    agrees with the fp32 mask (Dice >= 0.95: bf16 moves logits by ~1%, so only boundary pixels whose logit is near
    0 can flip) and the record says which arithmetic ran."""
    ball, _ = _volume(tmp_path / "ct.nii.gz")
    i, j = np.nonzero(ball[:, :, 4])
    box = [str(v) for v in (i.min() - 1, j.min() - 1, i.max() + 1, j.max() + 1)]
    masks = {}
    for p in ("fp32", "bf16"):
        out = tmp_path / f"{p}.nii.gz"
        assert main(["segment", str(tmp_path / "ct.nii.gz"), "--slice", "4", "--box", *box, "--modality", "CT",
                     "--out", str(out), "--quiet", "--precision", p]) == 0
        masks[p] = np.asarray(nib.load(out).dataobj) > 0
        assert json.loads((tmp_path / f"{p}.json").read_text())["precision"]["used"] == p
    a, b = masks["fp32"], masks["bf16"]
    assert a.any() and 2 * (a & b).sum() / (a.sum() + b.sum()) >= 0.95


@pytest.mark.long
def test_segment_fuse_axes_votes_three_sweeps_on_a_volume(tmp_path):
    """`--fuse-axes` (fuse_axes=True): the sphere is found by sweeps along all three axes; the JSON lists each
    axis's prompts and voxels; the prompted slice is the single-axis run's; a 2D image is refused."""
    from mmfm.errors import ConfigError
    from mmfm.workflows.segment import segment

    ball, _ = _volume(tmp_path / "ct.nii.gz")
    i, j = np.nonzero(ball[:, :, 4])
    box = [i.min() - 1, j.min() - 1, i.max() + 1, j.max() + 1]
    kw = dict(box=box, slice_index=4, modality="CT", engine="torch", progress=False)
    one = segment(tmp_path / "ct.nii.gz", tmp_path / "one.nii.gz", **kw)
    assert main(["segment", str(tmp_path / "ct.nii.gz"), "--slice", "4", "--box", *map(str, box), "--modality",
                 "CT", "--engine", "torch", "--fuse-axes", "--out", str(tmp_path / "fused.nii.gz"), "--quiet"]) == 0
    rec = json.loads((tmp_path / "fused.json").read_text())
    fused = np.asarray(nib.load(tmp_path / "fused.nii.gz").dataobj) > 0
    single = np.asarray(nib.load(tmp_path / "one.nii.gz").dataobj) > 0
    assert 2 * (fused & ball).sum() / (fused.sum() + ball.sum()) > 0.7
    assert np.array_equal(fused[:, :, 4], single[:, :, 4])
    assert sorted(rec["fused_axes"]) == ["0", "1", "2"] and "fused_axes" not in one
    assert all(len(rec["fused_axes"][a]["prompts"]) >= 1 for a in ("0", "1"))
    assert rec["foreground_voxels"] == int(fused.sum())
    _png(tmp_path / "img.png")
    with pytest.raises(ConfigError, match="fuse-axes"):
        segment(tmp_path / "img.png", tmp_path / "m.png", box=[10, 10, 50, 50], fuse_axes=True, progress=False)
    assert not (tmp_path / "m.png").exists()


def test_segment_writes_metaimage_and_nrrd_masks_on_the_input_grid(tmp_path):
    """The same prompt written as .nii.gz, .mha and .nrrd: one mask, one geometry (RAS), read back by mmfm."""
    from mmfm.data.io import read_image

    ball, affine = _volume(tmp_path / "ct.nii.gz")
    i, j = np.nonzero(ball[:, :, 4])
    box = [str(i.min() - 1), str(j.min() - 1), str(i.max() + 1), str(j.max() + 1)]
    masks = {}
    for name in ("m.nii.gz", "m.mha", "m.nrrd"):
        out = tmp_path / name.replace(".", "_", 1) / name
        assert main(["segment", str(tmp_path / "ct.nii.gz"), "--slice", "4", "--box", *box, "--modality", "CT",
                     "--out", str(out), "--quiet"]) == 0
        masks[name] = read_image(out)
    ref = masks["m.nii.gz"]
    assert ref.array[0].any()
    for name in ("m.mha", "m.nrrd"):
        np.testing.assert_array_equal(masks[name].array, ref.array)
        np.testing.assert_allclose(masks[name].affine, affine, atol=1e-5)
