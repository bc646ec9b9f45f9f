"""Registration: the sampler's geometry, recovery of known transforms (2D and 3D, different grids and orientations),
the Jacobian folding fraction on hand-made fields, VoxelMorph learning, and `mmfm register` end to end."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import affine_transform, gaussian_filter

from mmfm.cli.main import main
from mmfm.tasks import registration as R


def _blobs(shape, seed=0):
    rng = np.random.default_rng(seed)
    x = gaussian_filter(rng.standard_normal(shape), sigma=3)
    x = (x - x.min()) / (x.max() - x.min())
    inside = np.ones(shape, bool)
    for a, n in enumerate(shape):
        idx = np.arange(n).reshape([-1 if b == a else 1 for b in range(len(shape))])
        inside &= (idx > 2) & (idx < n - 3)
    return (x * inside).astype(np.float32)


def _moved(fixed, fixed_affine, T, moving_affine, shape):
    """The image whose content at world x_m is fixed's content at T^-1 x_m, stored on ``moving_affine``."""
    m = np.linalg.inv(fixed_affine) @ np.linalg.inv(T) @ moving_affine
    nd = fixed.ndim
    return affine_transform(fixed, m[:nd, :nd], m[:nd, nd], output_shape=shape, order=1).astype(np.float32)


def test_resample_with_identity_maps_world_to_world_across_orientations():
    vol = _blobs((20, 18, 16))
    a = np.diag([2.0, 1.5, 3.0, 1.0])
    a[:3, 3] = [-10, 4, 7]
    flip = a.copy()                                       # the same image stored with i reversed
    flip[:3, 0] *= -1
    flip[:3, 3] = a[:3, 3] + a[:3, 0] * 19
    out = R.resample(vol[::-1][None].copy(), flip, vol.shape, a, R.Transform(np.eye(4)))[0]
    assert np.allclose(out, vol, atol=1e-5)


@pytest.mark.parametrize("nd", [2, 3])
def test_affine_registration_recovers_a_known_transform(nd):
    shape = (48, 44) if nd == 2 else (36, 34, 30)
    fixed = _blobs(shape)
    fa = np.diag([1.5] * nd + [1.0])
    th = np.deg2rad(6)
    T = np.eye(nd + 1)
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    T[:2, :2] = rot * 1.04
    if nd == 3:
        T[2, 2] = 0.97
    T[:nd, nd] = [3.0, -2.0, 1.5][:nd]
    ma = np.diag([1.7] * nd + [1.0])
    ma[:nd, nd] = 2.0                                          # another grid, shifted origin
    moving = _moved(fixed, fa, T, ma, tuple(int(n * 1.5 / 1.7) for n in shape))
    t = R.register(fixed, fa, moving, ma, mode="affine", steps=(4.0, 2.0, 1.5), iterations=150)
    # the recovered mapping puts points of the image within 1 mm (2/3 of a voxel) of where the truth puts them
    pts = np.stack(np.meshgrid(*[np.linspace(10, n * 1.5 - 10, 5) for n in shape], indexing="ij"), -1)
    pts = pts.reshape(-1, nd)
    truth = pts @ T[:nd, :nd].T + T[:nd, nd]
    found = pts @ t.matrix[:nd, :nd].T + t.matrix[:nd, nd]
    assert np.abs(found - truth).max() < 1.0
    warped = R.resample(moving[None], ma, shape, fa, t)[0]
    before = R.resample(moving[None], ma, shape, fa, R.Transform(np.eye(nd + 1)))[0]
    assert np.abs(warped - fixed).mean() < 0.4 * np.abs(before - fixed).mean()


def test_deformable_stage_improves_on_affine_without_folding():
    fixed = _blobs((40, 40), seed=1)
    yy, xx = np.mgrid[:40, :40].astype(float)
    # a smooth non-linear deformation of the fixed image
    warp = np.stack([yy + 1.5 * np.sin(xx / 7), xx + 1.5 * np.cos(yy / 8)])
    moving = np.asarray(__import__("scipy.ndimage", fromlist=["map_coordinates"]).map_coordinates(
        fixed, warp, order=1), np.float32)
    a = np.diag([1.0, 1.0, 1.0])
    aff = R.register(fixed, a, moving, a, mode="affine", steps=(2.0, 1.0), iterations=60)
    dfm = R.register(fixed, a, moving, a, mode="deformable", steps=(2.0, 1.0), iterations=60, deform_iterations=150,
                     control_mm=5.0)
    err = {name: np.abs(R.resample(moving[None], a, fixed.shape, a, t)[0] - fixed)[4:-4, 4:-4].mean()
           for name, t in (("affine", aff), ("deformable", dfm))}
    assert err["deformable"] < 0.8 * err["affine"]
    assert R.folding_fraction(R.dense_displacement(dfm, fixed.shape), a) == 0.0


def test_folding_fraction_on_hand_made_fields():
    a = np.eye(4)
    assert R.folding_fraction(np.zeros((6, 6, 6, 3)), a) == 0.0
    # u_i = -2 i: x + u = -i, Jacobian determinant -1 everywhere
    i = np.arange(6, dtype=float)[:, None, None] * np.ones((6, 6, 6))
    u = np.zeros((6, 6, 6, 3))
    u[..., 0] = -2 * i
    assert R.folding_fraction(u, a) == 1.0
    u[3:, ..., 0] = 0.0           # half the volume: det(1 + du/dx) from np.gradient
    frac = R.folding_fraction(u, a)
    assert 0.3 < frac < 0.7
    # voxel sizes: a 2 mm grid with u_i = -1.5 mm per voxel step is a 0.25 Jacobian, no folding
    u2 = np.zeros((6, 6, 6, 3))
    u2[..., 0] = -1.5 * i
    assert R.folding_fraction(u2, np.diag([2.0, 2.0, 2.0, 1.0])) == 0.0


def test_voxelmorph_learns_to_align_a_pair():
    torch.manual_seed(0)
    task = R.registration(spatial_dims=2, in_channels=1, channels=(8, 16, 16, 16), smoothness=0.1)
    a = _blobs((32, 32), seed=2)
    b = np.roll(a, 2, axis=0)
    img = torch.from_numpy(np.stack([a, b]))[:, None]
    opt = torch.optim.Adam(task.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        loss = task({"image": img})["loss"]
        first = first if first is not None else float(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < first - 0.1
    with pytest.raises(Exception, match="batch_size"):
        task({"image": img[:1]})


def _nii(path, arr, affine):
    nib.save(nib.Nifti1Image(arr, affine), path)


def test_register_cli_writes_every_output_on_the_fixed_grid(tmp_path):
    fixed = _blobs((30, 28, 26))
    fa = np.diag([2.0, 2.0, 2.0, 1.0])
    labels = (fixed > 0.55).astype(np.int16) + (fixed > 0.7)
    T = np.eye(4)
    T[:3, 3] = [3.0, -2.0, 2.0]
    ma = np.diag([-2.0, 2.0, 2.0, 1.0])              # stored with i reversed (LAS)
    ma[0, 3] = 58.0
    moving = _moved(fixed, fa, T, ma, fixed.shape)
    moving_labels = np.rint(_moved(labels.astype(np.float32), fa, T, ma, fixed.shape)).astype(np.int16)
    _nii(tmp_path / "f.nii.gz", fixed, fa)
    _nii(tmp_path / "m.nii.gz", moving, ma)
    _nii(tmp_path / "ml.nii.gz", moving_labels, ma)
    _nii(tmp_path / "fl.nii.gz", labels, fa)
    out = tmp_path / "reg"
    rc = main(["register", str(tmp_path / "f.nii.gz"), str(tmp_path / "m.nii.gz"), "--out", str(out), "--quiet",
               "--moving-labels", str(tmp_path / "ml.nii.gz"), "--fixed-labels", str(tmp_path / "fl.nii.gz"),
               "--iterations", "60", "--levels", "4", "2", "--moving-modality", "MR", "--fixed-modality", "MR"])
    assert rc == 0
    rec = json.loads((out / "registration.json").read_text())
    assert rec["dice"]["mean_after"] > rec["dice"]["mean_before"] + 0.1
    for name, shape in (("warped.nii.gz", fixed.shape), ("warped_labels.nii.gz", fixed.shape),
                        ("displacement.nii.gz", fixed.shape + (1, 3))):
        img = nib.load(out / name)
        assert img.shape == shape and np.allclose(img.affine, fa), name
    assert nib.load(out / "displacement.nii.gz").header.get_intent()[0] == "vector"
    A = np.array(json.loads((out / "affine.json").read_text())["matrix"])
    assert A.shape == (4, 4) and np.abs(A[:3, 3] - T[:3, 3]).max() < 1.0
    assert 0.0 <= rec["folding_fraction"] < 0.01
    # a second run into the same folder needs --overwrite; a folder of someone else's files is refused
    assert main(["register", str(tmp_path / "f.nii.gz"), str(tmp_path / "m.nii.gz"), "--out", str(out)]) == 2


def test_register_2d_png(tmp_path):
    fixed = (_blobs((60, 50), seed=3) * 255).astype(np.uint8)
    moving = np.roll(fixed, (3, -2), axis=(0, 1))
    Image.fromarray(fixed).save(tmp_path / "f.png")
    Image.fromarray(moving).save(tmp_path / "m.png")
    rc = main(["register", str(tmp_path / "f.png"), str(tmp_path / "m.png"), "--out", str(tmp_path / "o"),
               "--mode", "affine", "--levels", "2", "1", "--iterations", "80", "--quiet"])
    assert rc == 0
    A = np.array(json.loads((tmp_path / "o" / "affine.json").read_text())["matrix"])
    assert A.shape == (3, 3)
    warped = np.asarray(Image.open(tmp_path / "o" / "warped.png"))
    assert warped.shape == fixed.shape
    inner = (slice(8, -8), slice(8, -8))
    assert np.abs(warped[inner].astype(float) - fixed[inner]).mean() < 0.3 * np.abs(
        moving[inner].astype(float) - fixed[inner]).mean()


def test_register_bad_inputs(tmp_path, capsys):
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "a.png")
    _nii(tmp_path / "v.nii.gz", _blobs((12, 12, 12)), np.eye(4))
    (tmp_path / "bad.nii.gz").write_bytes(b"\x1f\x8b broken")
    (tmp_path / "afile").write_text("x")
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "notes.txt").write_text("mine")
    cases = [
        ([str(tmp_path / "a.png"), str(tmp_path / "v.nii.gz"), "--out", str(tmp_path / "o1")], "both must be 2D"),
        ([str(tmp_path / "v.nii.gz"), str(tmp_path / "bad.nii.gz"), "--out", str(tmp_path / "o2")], "bad.nii.gz"),
        ([str(tmp_path / "v.nii.gz"), str(tmp_path / "v.nii.gz"), "--out", str(tmp_path / "afile" / "o")],
         "is a file"),
        ([str(tmp_path / "v.nii.gz"), str(tmp_path / "v.nii.gz"), "--out", str(tmp_path / "theirs")],
         "did not write"),
    ]
    for args, message in cases:
        assert main(["register", *args, "--quiet"]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()
    assert [p.name for p in (tmp_path / "theirs").iterdir()] == ["notes.txt"]
