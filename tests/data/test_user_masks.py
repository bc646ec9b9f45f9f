"""Masks with images in the user's layouts (issue 32, item 1): every pairing convention on real files (NRRD,
MetaImage, NIfTI, a DICOM series folder), masks never counted as images, the mask checked against and placed on
its image's grid, and the data card of a segmentation folder."""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from mmfm.data.card import card_markdown, user_card
from mmfm.data.catalog import load_dataset
from mmfm.data.io.labels import header_grid, place_mask, read_label_map
from mmfm.errors import InputFileError
from mmfm.workflows.config import DataConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from userdata import write_dicom_series  # noqa: E402

N = 24


def write_volume(path: Path, arr: np.ndarray, spacing=(2.0, 2.0, 4.0), origin=(0.0, 0.0, 0.0)) -> None:
    """``arr`` indexed (i, j, k) written through SimpleITK (NRRD, MetaImage or NIfTI by the suffix)."""
    img = sitk.GetImageFromArray(np.transpose(arr, (2, 1, 0)))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))


def tumour_case(rng: np.random.Generator, n: int = N) -> tuple[np.ndarray, np.ndarray]:
    """A noisy volume with a bright ball, and the ball's mask (label 1)."""
    g = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij"))
    c = rng.uniform(0.35, 0.65, 3) * n
    ball = (((g - c[:, None, None, None]) ** 2).sum(0) < (n * 0.22) ** 2).astype(np.uint8)
    return (rng.normal(0, 20, ball.shape) + 150 * ball).astype(np.float32), ball


def write_suffix_folder(root: Path, n: int = 5, image_ext: str = "nrrd", mask: str = "_seg.nii.gz") -> Path:
    """``p<i>/scan.<image_ext>`` with ``p<i>/scan<mask>`` beside it."""
    rng = np.random.default_rng(0)
    for i in range(n):
        img, ball = tumour_case(rng)
        write_volume(root / f"p{i}" / f"scan.{image_ext}", img)
        write_volume(root / f"p{i}" / f"scan{mask}", ball)
    return root


@pytest.mark.parametrize(("image_ext", "mask"), [("nrrd", "_seg.nii.gz"), ("mha", "_label.nrrd"),
                                                 ("nii.gz", "_mask.mha")])
def test_suffix_masks_pair_with_their_images_and_are_never_images(tmp_path, image_ext, mask):
    root = write_suffix_folder(tmp_path / "f", image_ext=image_ext, mask=mask)
    samples = load_dataset("folder", root)
    assert len(samples) == 5 and samples.scan["masks"] == 5              # 10 files, 5 images
    assert all(not Path(r["path"]).name.startswith("scan_") for r in samples.records)
    s = samples[0]
    want = np.asarray(read_label_map(samples.records[0]["mask"]).array)
    assert s["mask"].shape == (1, N, N, N) and np.array_equal(s["mask"], want) and s["mask"].sum() > 100


def test_labelstr_beside_imagestr_any_format_in_folder_and_msd_layouts(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "task"
    for i in range(4):
        img, ball = tumour_case(rng)
        write_volume(root / "imagesTr" / f"case{i}_0000.nrrd", img)     # nnU-Net channel suffix, NRRD
        write_volume(root / "labelsTr" / f"case{i}.mha", ball)
    write_volume(root / "labelsTr" / "lost.mha", ball)                  # a mask without its image
    folder = load_dataset("folder", root)
    assert len(folder) == 4 and folder.scan["masks"] == 4
    assert any(s["file"].endswith("lost.mha") and "without its image" in s["reason"] for s in folder.scan["skipped"])
    msd = load_dataset("MSD", root)                                     # was "no NIfTI images found"
    assert [r["case"] for r in msd.records] == [f"case{i}" for i in range(4)]
    assert msd[2]["mask"].sum() == folder[2]["mask"].sum() > 0


def test_mask_column_in_labels_csv(tmp_path):
    rng = np.random.default_rng(2)
    root = tmp_path / "csv"
    lines = ["image,mask"]
    for i in range(3):
        img, ball = tumour_case(rng)
        write_volume(root / "images" / f"s{i}.nii.gz", img)
        write_volume(root / "segs" / f"s{i}.nrrd", ball)
        lines.append(f"images/s{i}.nii.gz,segs/s{i}.nrrd")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    samples = load_dataset("folder", root)
    assert len(samples) == 3 and samples.class_names == [] and samples[1]["mask"].sum() > 0


def test_dicom_series_folder_with_a_nifti_mask_beside_it(tmp_path, dicom_path):
    root = tmp_path / "dcm"
    write_dicom_series(dicom_path("CT_small.dcm"), root / "scanA", n=4)
    shape, affine = header_grid(root / "scanA")
    ball = np.zeros(shape, np.uint8)
    ball[20:40, 20:40, 1:3] = 1
    nib.save(nib.Nifti1Image(ball, affine), root / "scanA_seg.nii.gz")
    samples = load_dataset("folder", root)
    assert len(samples) == 1 and samples.records[0]["format"] == "dicom-series"
    assert samples[0]["mask"].sum() == ball.sum()


def test_a_mask_on_another_grid_is_resampled_and_one_apart_is_refused(tmp_path):
    rng = np.random.default_rng(3)
    img, ball = tumour_case(rng)
    write_volume(tmp_path / "img.nrrd", img)
    coarse = ball[::2, ::2, ::2]               # half the voxels per axis, same extent: voxel centres moved
    write_volume(tmp_path / "coarse.nii.gz", coarse, spacing=(4.0, 4.0, 8.0), origin=(1.0, 1.0, 2.0))
    write_volume(tmp_path / "apart.nii.gz", ball, origin=(500.0, 0.0, 0.0))
    from mmfm.data.io import read_image

    image = read_image(tmp_path / "img.nrrd")
    placed, how = place_mask(read_label_map(tmp_path / "coarse.nii.gz"), image, "coarse")
    assert how == "resampled" and placed.shape == (1, N, N, N)
    dice = 2 * (placed[0] & ball).sum() / (placed.sum() + ball.sum())
    assert dice > 0.8
    with pytest.raises(InputFileError, match="outside its image"):
        place_mask(read_label_map(tmp_path / "apart.nii.gz"), image, "apart")


def test_an_image_is_not_a_label_map(tmp_path):
    img, _ = tumour_case(np.random.default_rng(4))
    write_volume(tmp_path / "x.nrrd", img)
    with pytest.raises(InputFileError, match="not a label map"):
        read_label_map(tmp_path / "x.nrrd")


def test_card_of_a_segmentation_folder(tmp_path):
    root = write_suffix_folder(tmp_path / "f", image_ext="nii.gz", mask="_seg.nrrd")
    write_volume(root / "p4" / "scan_seg.nrrd", np.zeros((N, N, N), np.uint8))        # an empty mask
    card = user_card(DataConfig(dataset="folder", root=str(root)))
    assert card["samples"] == 5 and card["no_spacing"] == 0
    assert card["spacing_mm"]["3D"]["min"] == [2.0, 2.0, 4.0]
    assert sorted(c for s in card["splits"].values() for c in s["cases"]) == [f"p{i}/scan.nii.gz" for i in range(5)]
    m = card["masks"]
    assert m["n"] == 5 and m["by_format"] == {"nrrd": 5} and m["empty"] == ["p4/scan.nii.gz"]
    assert set(m["voxels_per_label"]) == {"0", "1"} and sum(m["voxels_per_label"].values()) == 5 * N ** 3
    md = card_markdown(card)
    assert "Cases per split" in md and "empty (background only): p4/scan.nii.gz" in md and "1 mm" not in md
    msd_card = user_card(DataConfig(dataset="MSD", root=str(_msd(tmp_path / "msd"))))
    assert msd_card["no_spacing"] == 0 and msd_card["spacing_mm"]["3D"]["min"] == [1.5, 1.5, 2.5]
    assert sum(s["by_format"].get("nifti", 0) for s in msd_card["splits"].values()) == 3


def _msd(root: Path) -> Path:
    rng = np.random.default_rng(5)
    for i in range(3):
        img, ball = tumour_case(rng)
        nib.save(nib.Nifti1Image(img, np.diag([1.5, 1.5, 2.5, 1])), _mk(root / "imagesTr") / f"c{i}.nii.gz")
        nib.save(nib.Nifti1Image(ball, np.diag([1.5, 1.5, 2.5, 1])), _mk(root / "labelsTr") / f"c{i}.nii.gz")
    return root


def _mk(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def test_data_inspect_recognises_a_mask_as_a_label_map(tmp_path):
    from mmfm.workflows.inspect import inspect_path

    root = write_suffix_folder(tmp_path / "f", n=2, image_ext="nrrd", mask="_seg.nrrd")
    mask = inspect_path(root / "p0" / "scan_seg.nrrd")
    assert mask["kind"] == "label map" and set(mask["labels"]) == {"0", "1"} and "modality_note" not in mask
    assert mask["spacing"] == [2.0, 2.0, 4.0]
    image = inspect_path(root / "p0" / "scan.nrrd")
    assert "kind" not in image and "--modality" in image["modality_note"]
    folder = inspect_path(root)
    assert folder["images"] == 2 and folder["masks"] == 2 and folder["mask_formats"] == {"nrrd": 2}
