"""Your data, end to end: the readers, the folder layout, the one data spec, caches, shards and cards."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from mmfm.data import spec
from mmfm.data.catalog import load_dataset
from mmfm.data.io import image_info, read_image
from mmfm.errors import ConfigError, InputFileError
from mmfm.workflows.config import load_config
from tests.torchrun import failure, torchrun

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from userdata import write_labelled_folder, write_mixed_folder, write_nifti_seg_folder  # noqa: E402

ROOT = str(Path(__file__).resolve().parents[2])


def data_cfg(root, *extra):
    spec._LOADED.clear()
    return load_config(None, ["data.dataset=folder", f"data.root={root}", *extra]).data


# -- MetaImage / NRRD ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ext", ["mha", "mhd", "nrrd", "nhdr"])
def test_itk_formats_match_nibabel_geometry(tmp_path, ext):
    import SimpleITK as sitk

    a = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    aff = np.array([[0, -2.0, 0, 10], [1.5, 0, 0, -3], [0, 0, 3, 7], [0, 0, 0, 1]])   # oblique axes, not RAS
    nib.save(nib.Nifti1Image(a, aff), tmp_path / "x.nii.gz")
    sitk.WriteImage(sitk.ReadImage(str(tmp_path / "x.nii.gz")), str(tmp_path / f"x.{ext}"))
    got, ref = read_image(tmp_path / f"x.{ext}"), read_image(tmp_path / "x.nii.gz")
    assert np.allclose(got.array, ref.array) and np.allclose(got.affine, ref.affine)
    assert got.orientation == ref.orientation == "ALS" and got.modality == "unknown"
    assert image_info(tmp_path / f"x.{ext}")["depth"] == 7


def test_truncated_metaimage_raw_is_refused_before_reading(tmp_path):
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 9, 10), np.float32)), str(tmp_path / "v.mhd"))
    raw = tmp_path / "v.raw"
    raw.write_bytes(raw.read_bytes()[:100])
    with pytest.raises(InputFileError, match="promises"):
        read_image(tmp_path / "v.mhd")
    raw.unlink()
    with pytest.raises(InputFileError, match="data file v.raw is missing"):
        read_image(tmp_path / "v.mhd")


def test_inspect_reads_metaimage(tmp_path):
    import SimpleITK as sitk

    from mmfm.workflows.inspect import inspect_path

    img = sitk.GetImageFromArray(np.ones((4, 5, 6), np.float32))
    img.SetSpacing((0.5, 0.7, 2.0))
    sitk.WriteImage(img, str(tmp_path / "v.nrrd"))
    info = inspect_path(tmp_path / "v.nrrd")
    assert info["format"] == "nrrd" and info["shape"] == [1, 6, 5, 4] and info["spacing"] == [0.5, 0.7, 2.0]


# -- the folder layout ---------------------------------------------------------------------------------------------
def test_mixed_folder_is_scanned_with_every_format_and_skips_listed(tmp_path, dicom_path):
    root = tmp_path / "mixed"
    write_mixed_folder(root, dicom_path("CT_small.dcm"))
    samples = load_dataset("folder", root)
    fmts = samples.scan["by_format"]
    assert fmts == {"nifti": 1, "metaimage": 2, "nrrd": 1, "raster": 2, "dicom": 1, "dicom-series": 1}
    assert [s["file"] for s in samples.scan["skipped"]] == ["broken.png"]
    assert str(tmp_path) not in json.dumps(samples.scan["skipped"])    # no absolute path, only the name inside
    assert samples.scan["other_files"] == 3   # README.txt, meta.json and the .raw data file of the .mhd
    series = next(r for r in samples.records if r["format"] == "dicom-series")
    assert series["depth"] == 4 and series["modality"] == "CT"


def test_folder_as_unlabelled_2d_set_slices_volumes_and_fits_every_image(tmp_path, dicom_path):
    root = tmp_path / "mixed"
    write_mixed_folder(root, dicom_path("CT_small.dcm"))
    data = data_cfg(root, "data.size=[32,32]")
    n = 0
    for split in ("train", "val", "test"):
        ds = spec.unlabelled(data, split)
        for i in range(len(ds)):
            item = ds[i]
            assert item["image"].shape == (1, 32, 32) and torch.isfinite(item["image"]).all()
            assert 0.0 <= float(item["position"]) <= 1.0
        n += len(ds)
    # 2D images: dicom, nrrd, 2 rasters; slices: nifti 6 + series 4 + mha 5 + mhd 4
    assert n == 4 + 6 + 4 + 5 + 4


def test_slices_of_one_volume_share_a_split_and_a_patient(tmp_path):
    root = write_nifti_seg_folder(tmp_path / "v", n=6)
    data = load_config(None, ["data.dataset=MSD", f"data.root={root}", "data.size=[16,16]"]).data
    spec._LOADED.clear()
    seen: dict[str, str] = {}
    for split in ("train", "val", "test"):
        for r in spec.split_samples(data, split).records:
            assert seen.setdefault(r["case"], split) == split
    ds = spec.unlabelled(data, "train")
    patients = {int(ds[i]["patient"]) for i in range(len(ds))}
    assert len(patients) == len({c for c, s in seen.items() if s == "train"})


def test_labelled_folder_classes_and_label_budget(tmp_path):
    root = write_labelled_folder(tmp_path / "lab", n_per_class=10)
    data = data_cfg(root, "data.size=[24,24]")
    ds, names = spec.labelled(data, "train", "classification")
    assert names == ["class0", "class1"]
    assert ds.labels is not None and len(ds.labels) == len(ds)
    assert [int(ds[i]["label"]) for i in range(len(ds))] == ds.labels.tolist()   # record labels = read labels


def test_corrupt_pixels_found_during_training_are_skipped_and_counted(tmp_path):
    root = write_labelled_folder(tmp_path / "lab", n_per_class=6)
    data = data_cfg(root, "data.size=[24,24]")
    ds, _ = spec.labelled(data, "train", "classification", train=True)
    victim = ds.samples.records[0]["path"]
    victim.write_bytes(victim.read_bytes()[:60])     # damaged after the scan
    with pytest.warns(UserWarning, match="skipped an unreadable sample"):
        item = ds[0]
    assert item["image"].shape == (1, 24, 24) and list(ds.unreadable) == [0]
    ev, _ = spec.labelled(data, "train", "classification", train=False)
    with pytest.raises(InputFileError):              # evaluation never hides a file it could not read
        ev[0]


# -- bad input: each a clear message -------------------------------------------------------------------------------
def test_empty_folder_and_folder_without_images(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputFileError, match="no readable image"):
        load_dataset("folder", tmp_path / "empty")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.png").write_bytes(b"not a png")
    (tmp_path / "junk" / "notes.txt").write_text("x")
    with pytest.raises(InputFileError, match="1 file\\(s\\) could not be read, e.g. a.png"):
        load_dataset("folder", tmp_path / "junk")


def test_labels_csv_pointing_at_missing_files(tmp_path):
    root = write_labelled_folder(tmp_path / "lab", n_per_class=3)
    (root / "images" / "c1_2.png").unlink()
    with pytest.raises(InputFileError, match="line 7: images/c1_2.png"):
        load_dataset("folder", root)


def test_3d_encoder_on_2d_data_and_channel_mismatch_are_explained(tmp_path, capsys):
    from mmfm.workflows.supervised import run_supervised

    root = write_labelled_folder(tmp_path / "lab", n_per_class=4)
    base = ["data.dataset=folder", f"data.root={root}", f"out={tmp_path / 'r'}", "train.max_steps=1"]
    spec._LOADED.clear()
    with pytest.raises(ConfigError, match="is 3D but data.size .* is 2D"):
        run_supervised(load_config(None, base + ["encoder.weights=random:vit_micro:3D"]))
    with pytest.raises(ConfigError, match="takes 1 channel\\(s\\) but data.channels is 3"):
        run_supervised(load_config(None, base + ["encoder.weights=random:vit_micro", "data.channels=3"]))


# -- caching -------------------------------------------------------------------------------------------------------
def test_cache_serves_the_second_epoch_and_notices_an_edited_file(tmp_path):
    root = write_nifti_seg_folder(tmp_path / "v", n=3)
    data = load_config(None, ["data.dataset=MSD", f"data.root={root}", "data.size=[8,8,8]",
                              f"data.cache={tmp_path / 'cache'}"]).data
    spec._LOADED.clear()
    ds = spec.sample_dataset(data, "train")
    first = [ds[i]["image"].clone() for i in range(len(ds))]
    assert ds.cache.misses == len(ds) and ds.cache.hits == 0
    again = [ds[i]["image"] for i in range(len(ds))]
    assert ds.cache.hits == len(ds) and all(torch.equal(a, b) for a, b in zip(first, again))
    files = list((tmp_path / "cache").rglob("*.npz"))
    assert files and not any("case" in f.name for f in files)          # hashed names: no file name leaks
    path = ds.samples.records[0]["image"]
    img = nib.load(path)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj) * 0 + 5, img.affine), path)
    os.utime(path, ns=(1, 1))
    ds[0]
    assert ds.cache.misses == len(ds) + 1


# -- 3D: spacing, patches, sliding window --------------------------------------------------------------------------
def test_patches_are_foreground_aware_and_evaluation_sees_whole_volumes(tmp_path):
    root = write_nifti_seg_folder(tmp_path / "v", n=6, shape=(30, 26, 20), spacing=(1.0, 1.0, 2.0))
    data = load_config(None, ["data.dataset=MSD", f"data.root={root}", "data.spacing=[2,2,2]",
                              "data.patch=[8,8,8]"]).data
    spec._LOADED.clear()
    train = spec.sample_dataset(data, "train", train=True)
    items = [train[i % len(train)] for i in range(24)]
    assert all(it["image"].shape == (1, 8, 8, 8) and it["mask"].shape == (1, 8, 8, 8) for it in items)
    with_fg = sum(bool(it["mask"].any()) for it in items)
    assert with_fg >= 6                       # pos=neg=1: about half the patches are centred on the ball
    whole = spec.sample_dataset(data, "test")
    assert whole[0]["image"].shape == (1, 16, 14, 20)   # resampled to 2 mm (MONAI's grid), not cropped or resized


def test_sliding_window_evaluation_matches_a_direct_pass_for_a_convolutional_model():
    from mmfm.evaluation.evaluate import evaluate
    from mmfm.tasks.segmentation import SegmentationTask

    torch.manual_seed(0)
    model = SegmentationTask(3, 1, 2, features=(4, 4, 8, 8, 8, 4)).eval()
    vols = [torch.randn(1, 32, 32, 32), torch.randn(1, 32, 32, 32)]
    masks = [(v > 0.5).long() for v in vols]

    class DS(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return {"image": vols[i], "mask": masks[i]}

    direct = evaluate(model, DS(), "segmentation")
    windowed = evaluate(model, DS(), "segmentation", roi_size=(32, 32, 32))
    assert windowed == pytest.approx(direct)


# -- shards --------------------------------------------------------------------------------------------------------
def _shard(tmp_path, n_per_class=10, shard_size=3):
    from mmfm.data.shards import write_shards

    root = write_labelled_folder(tmp_path / "lab", n_per_class=n_per_class)
    data = data_cfg(root, "data.size=[16,16]")
    return write_shards(data, tmp_path / "shards", shard_size=shard_size, progress=False), data


def test_shards_round_trip_the_preprocessed_items_and_write_the_card(tmp_path):
    from mmfm.data.shards import ShardDataset

    index, data = _shard(tmp_path)
    assert (tmp_path / "shards" / "card.md").exists() and index["class_names"] == ["class0", "class1"]
    direct, _ = spec.labelled(data, "val", "classification")
    streamed = list(ShardDataset(tmp_path / "shards", "val", shuffle=False))
    assert len(streamed) == len(direct)
    got = sorted((round(float(s["image"].sum()), 3), int(s["label"])) for s in streamed)
    want = sorted((round(float(direct[i]["image"].sum()), 3), int(direct[i]["label"])) for i in range(len(direct)))
    assert got == want


def test_truncated_shard_is_named_before_training(tmp_path):
    from mmfm.data.shards import ShardDataset, verify_shards

    _shard(tmp_path)
    tar = sorted((tmp_path / "shards" / "train").glob("*.tar"))[0]
    tar.write_bytes(tar.read_bytes()[:-700])
    with pytest.raises(InputFileError, match="truncated or replaced"):
        ShardDataset(tmp_path / "shards", "train")
    assert verify_shards(tmp_path / "shards") == [f"train/{tar.name}"]


def test_shard_writer_refuses_a_foreign_folder(tmp_path):
    from mmfm.data.shards import write_shards

    root = write_labelled_folder(tmp_path / "lab", n_per_class=2)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.docx").write_text("precious")
    with pytest.raises(ConfigError, match="not a shard folder"):
        write_shards(data_cfg(root), tmp_path / "mine", progress=False)
    assert (tmp_path / "mine" / "thesis.docx").read_text() == "precious"


@pytest.mark.long
def test_streaming_2_ranks_x_2_workers_sees_every_sample_once(tmp_path):
    index, _ = _shard(tmp_path, n_per_class=12, shard_size=2)
    n = sum(s["samples"] for s in index["splits"]["train"])
    out = tmp_path / "seen"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": ROOT}
    r = torchrun([str(Path(__file__).with_name("shard_stream_script.py")), str(tmp_path / "shards"), str(out)],
                 env=env, timeout=240)
    assert r.returncode == 0, failure(r)
    seen = [json.loads((out / f"rank{k}.json").read_text()) for k in (0, 1)]
    every = seen[0] + seen[1]
    assert len(every) == n and len(set(every)) == n          # each sample once, none on two ranks
    assert seen[0] and seen[1]


# -- the data card -------------------------------------------------------------------------------------------------
def test_card_of_a_user_folder_counts_and_lists_skips(tmp_path, dicom_path):
    from mmfm.data.card import card_markdown, user_card

    root = tmp_path / "mixed"
    write_mixed_folder(root, dicom_path("CT_small.dcm"))
    card = user_card(data_cfg(root))
    assert card["samples"] == 8 and sum(s["n"] for s in card["splits"].values()) == 8
    assert card["skipped"][0]["file"] == "broken.png" and card["other_files"] == 3
    assert card["spacing_mm"]["3D"]["max"] == [1.5, 1.5, 3.0]   # the series: 2.5 mm between slice positions
    assert [0.6615, 0.6615, 2.5] in [r.get("spacing") for r in spec.all_samples(data_cfg(root)).records]
    md = card_markdown(card)
    assert "broken.png" in md and "| train |" in md


def test_inspect_on_a_folder_says_what_the_folder_layout_reads(tmp_path, dicom_path):
    from mmfm.workflows.inspect import inspect_path

    root = tmp_path / "mixed"
    write_mixed_folder(root, dicom_path("CT_small.dcm"))
    info = inspect_path(root)
    assert info["format"] == "folder" and info["images"] == 8 and info["skipped"][0]["file"] == "broken.png"
    assert inspect_path(root / "dicom" / "series")["format"] == "dicom-series"   # a series folder stays one image


def test_api_create_encoder_random_packaged_and_errors():
    import mmfm

    a = mmfm.create_encoder("vit_micro", spatial_dims=3, in_channels=2)
    assert a.spatial_dims == 3 and a.in_channels == 2
    with pytest.raises(ConfigError, match="no packaged pretrained weights for 'vit_micro'"):
        mmfm.create_encoder("vit_micro", pretrained=True)
    sam = mmfm.create_encoder("litemedsam", pretrained=True)
    rand = mmfm.create_encoder("litemedsam")                 # pretrained=False means random, even for litemedsam
    k = next(n for n, p in sam.state_dict().items() if p.ndim > 1)
    assert not torch.equal(sam.state_dict()[k], rand.state_dict()[k])


def test_image_text_objectives_on_images_without_reports_say_so(tmp_path):
    root = write_labelled_folder(tmp_path / "lab", n_per_class=3)
    with pytest.raises(ConfigError, match="no report or caption text"):
        spec.pairs(data_cfg(root, "data.size=[24,24]"), "train")
