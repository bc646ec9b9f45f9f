"""Attacks on ``data.cache`` (issue 24, item 8): stale items after an edit the old key did not see (a corrected
label map, a DICOM slice rewritten in place, a changed ``.raw``, another modality option), two datasets with the
same relative root sharing items, and damaged entries (truncated, wrong shape) that crashed training or were used.

Each test compares what a cached dataset serves with what the same dataset serves without a cache (the truth).
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch

from mmfm.data import spec
from mmfm.workflows.config import load_config
from tests.userdata import write_dicom_series, write_labelled_folder, write_nifti_seg_folder


def _dataset(*overrides: str, cache: Path | None = None):  # noqa: ANN202
    spec._LOADED.clear()
    data = load_config(None, [*overrides, *([f"data.cache={cache}"] if cache else [])]).data
    return spec.sample_dataset(data, "all" if data.dataset == "folder" else "train")


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in ("image", "mask") if k in a or k in b)


def _touch(path: Path, ns: int = 10**18) -> None:
    os.utime(path, ns=(ns, ns))


def test_a_corrected_label_map_is_read_again(tmp_path):
    root = write_nifti_seg_folder(tmp_path / "v", n=2)
    args = ("data.dataset=MSD", f"data.root={root}", "data.size=[8,8,8]")
    ds = _dataset(*args, cache=tmp_path / "cache")
    before = ds[0]
    label = ds.samples.records[0]["label"]
    img = nib.load(label)
    nib.save(nib.Nifti1Image(np.ones(img.shape, np.uint8), img.affine), label)   # the corrected label map
    _touch(label)
    got = _dataset(*args, cache=tmp_path / "cache")[0]
    truth = _dataset(*args)[0]
    assert not torch.equal(before["mask"], truth["mask"]) and _same(got, truth)


def test_a_dicom_slice_rewritten_in_place_is_read_again(tmp_path, dicom_path):
    folder = tmp_path / "d" / "series"
    write_dicom_series(dicom_path("CT_small.dcm"), folder, n=4)
    args = ("data.dataset=folder", f"data.root={tmp_path / 'd'}", "data.size=[8,8,8]")
    ds = _dataset(*args, cache=tmp_path / "cache")
    before = ds[0]
    stamp = folder.stat().st_mtime_ns
    one = folder / "slice_1.dcm"
    d = pydicom.dcmread(one)
    d.PixelData = (d.pixel_array * 0 + 900).astype(d.pixel_array.dtype).tobytes()
    d.save_as(one)                     # the same file, new pixels
    _touch(one)
    os.utime(folder, ns=(stamp, stamp))  # the folder itself looks untouched
    got = _dataset(*args, cache=tmp_path / "cache")[0]
    truth = _dataset(*args)[0]
    assert not _same(before, truth) and _same(got, truth)


def test_a_changed_raw_file_is_read_again(tmp_path):
    import SimpleITK as sitk

    root = tmp_path / "m"
    root.mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(np.random.default_rng(0).normal(0, 1, (12, 12)).astype(np.float32)),
                    str(root / "img.mhd"))
    args = ("data.dataset=folder", f"data.root={root}", "data.size=[8,8]")
    ds = _dataset(*args, cache=tmp_path / "cache")
    before = ds[0]
    raw = root / "img.raw"
    raw.write_bytes(np.random.default_rng(1).normal(0, 1, (12, 12)).astype(np.float32).tobytes())   # same size
    _touch(raw)
    got = _dataset(*args, cache=tmp_path / "cache")[0]
    truth = _dataset(*args)[0]
    assert not _same(before, truth) and _same(got, truth)


def test_another_modality_option_is_not_served_the_first_ones_items(tmp_path):
    root = tmp_path / "n"
    root.mkdir()
    vol = np.random.default_rng(0).normal(0, 300, (12, 12)).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), root / "img.nii.gz")
    args = ("data.dataset=folder", f"data.root={root}", "data.size=[8,8]")
    ct = _dataset(*args, "data.options.modality=CT", cache=tmp_path / "cache")[0]
    got = _dataset(*args, "data.options.modality=MR", cache=tmp_path / "cache")[0]
    truth = _dataset(*args, "data.options.modality=MR")[0]
    assert not _same(ct, truth) and _same(got, truth)


def test_two_datasets_with_the_same_relative_root_do_not_share_items(tmp_path, monkeypatch):
    for name, seed in (("a", 0), ("b", 1)):
        write_labelled_folder(tmp_path / name / "data", n_per_class=2, size=12, seed=seed, fmt="mha")
        for f in (tmp_path / name / "data").rglob("*"):
            _touch(f)                  # identical sizes and times: only the location tells them apart
    cache = tmp_path / "cache"
    args = ("data.dataset=folder", "data.root=data", "data.size=[8,8]")
    monkeypatch.chdir(tmp_path / "a")
    first = _dataset(*args, cache=cache)[0]
    monkeypatch.chdir(tmp_path / "b")
    got = _dataset(*args, cache=cache)[0]
    truth = _dataset(*args)[0]
    assert not _same(first, truth) and _same(got, truth)


@pytest.mark.parametrize("damage", ["truncate", "wrong_shape", "wrong_shape_valid_entry", "bit_flip"])
def test_a_damaged_cache_entry_is_rebuilt_not_used_nor_a_crash(tmp_path, damage):
    root = write_labelled_folder(tmp_path / "l", n_per_class=1, size=12)
    args = ("data.dataset=folder", f"data.root={root}", "data.size=[8,8]")
    ds = _dataset(*args, cache=tmp_path / "cache")
    truth = ds[0]
    (entry,) = [f for f in (tmp_path / "cache").rglob("*.npz")
                if f.parent.parent == ds.cache.folder and f == ds.cache._path(ds._cache_key(0))]
    if damage == "truncate":
        entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    elif damage == "wrong_shape":
        np.savez(entry, image=np.zeros((1, 3, 3), np.float32))
    elif damage == "wrong_shape_valid_entry":     # an entry the cache itself would write, of the wrong shape
        ds.cache.put(ds._cache_key(0), {"image": np.zeros((1, 3, 3), np.float32)})
    else:
        with np.load(entry) as z:
            arrays = {k: z[k].copy() for k in z.files}
        arrays["image"].flat[0] += 1.0          # the manifest (if any) left as it was
        np.savez(entry, **arrays)
    again = _dataset(*args, cache=tmp_path / "cache")
    got = again[0]
    assert got["image"].shape == truth["image"].shape and _same(got, truth)
    assert again[0] is not None and _same(again[0], truth)     # rebuilt: the next read is a good hit
