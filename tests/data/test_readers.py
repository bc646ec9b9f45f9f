"""NIfTI (against nibabel), PNG/JPEG/TIFF, MedMNIST .npz, MRC and report readers."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from PIL import Image as PILImage

from mmfm.data.io import image_format, read_image
from mmfm.data.io.npz import read_medmnist_npz
from mmfm.data.io.reports import parse_iu_xml, read_csv_reports, read_text_report, split_sections

IU_XML = b"""<?xml version="1.0"?><eCitation><uId id="CXR42"/><MedlineCitation><Article><Abstract>
<AbstractText Label="COMPARISON">None.</AbstractText>
<AbstractText Label="INDICATION">XXXX-year-old with cough.</AbstractText>
<AbstractText Label="FINDINGS">The heart is normal in size. No effusion.</AbstractText>
<AbstractText Label="IMPRESSION">No acute disease.</AbstractText>
</Abstract></Article></MedlineCitation><MeSH><major>normal</major></MeSH>
<parentImage id="CXR42_IM-0001-1001"/></eCitation>"""


def test_nifti_matches_nibabel(tmp_path):
    data = np.random.default_rng(0).normal(size=(9, 8, 7)).astype(np.float32)
    affine = np.array([[-0.8, 0, 0, 10], [0, 0.9, 0, -20], [0, 0, 2.5, 5], [0, 0, 0, 1]])
    p = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), p)
    img = read_image(p, modality="CT")
    ref = nib.load(p)
    np.testing.assert_allclose(img.array[0], ref.get_fdata())
    np.testing.assert_allclose(img.affine, ref.affine)
    assert img.spacing == pytest.approx(ref.header.get_zooms())
    assert img.orientation == "".join(nib.aff2axcodes(ref.affine)) == "LAS"
    assert img.modality == "CT" and image_format(p) == "nifti"


def test_nifti_4d_channels_first(tmp_path):
    p = tmp_path / "mm.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6, 2), np.float32), np.eye(4)), p)
    assert read_image(p).array.shape == (2, 4, 5, 6)


@pytest.mark.parametrize("suffix", [".png", ".tif", ".jpg"])
def test_raster_grey_and_rgb(tmp_path, suffix):
    grey = (np.arange(20 * 30).reshape(20, 30) % 256).astype(np.uint8)
    p = tmp_path / f"g{suffix}"
    PILImage.fromarray(grey).save(p, quality=100) if suffix == ".jpg" else PILImage.fromarray(grey).save(p)
    img = read_image(p)
    assert img.array.shape == (1, 30, 20)  # (C, I = column, J = row)
    if suffix != ".jpg":
        np.testing.assert_array_equal(img.array[0].T, grey)
    rgb = np.zeros((10, 12, 3), np.uint8)
    rgb[..., 1] = 200
    q = tmp_path / f"c{suffix}"
    PILImage.fromarray(rgb).save(q)
    img = read_image(q, modality="fundus")
    assert img.array.shape == (3, 12, 10) and img.modality == "fundus"
    assert abs(float(img.array[1].mean()) - 200) < 3


def test_medmnist_npz(tmp_path):
    p = tmp_path / "pneumoniamnist.npz"
    rng = np.random.default_rng(0)
    np.savez(p, train_images=rng.integers(0, 255, (6, 28, 28), dtype=np.uint8), train_labels=np.arange(6)[:, None] % 2,
             val_images=np.zeros((2, 28, 28), np.uint8), val_labels=np.zeros((2, 1), int),
             test_images=np.zeros((3, 28, 28), np.uint8), test_labels=np.ones((3, 1), int))
    images, labels = read_medmnist_npz(p, "train")
    assert images.shape == (6, 1, 28, 28) and labels.shape == (6, 1)
    assert image_format(p) == "npz"
    q = tmp_path / "organmnist3d.npz"
    np.savez(q, **{f"{s}_{k}": (np.zeros((2, 8, 8, 8), np.uint8) if k == "images" else np.zeros((2, 1), int))
                   for s in ("train", "val", "test") for k in ("images", "labels")})
    assert read_medmnist_npz(q, "val")[0].shape == (2, 1, 8, 8, 8)
    r = tmp_path / "dermamnist.npz"
    np.savez(r, **{f"{s}_{k}": (np.zeros((2, 8, 8, 3), np.uint8) if k == "images" else np.zeros((2, 1), int))
                   for s in ("train", "val", "test") for k in ("images", "labels")})
    assert read_medmnist_npz(r, "test")[0].shape == (2, 3, 8, 8)


def test_mrc_volume(tmp_path):
    import mrcfile

    p = tmp_path / "v.mrc"
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)  # (z, y, x)
    with mrcfile.new(p) as f:
        f.set_data(data)
        f.voxel_size = (0.5, 0.6, 2.0)
    img = read_image(p, modality="CT")
    assert img.array.shape == (1, 6, 5, 4)
    assert img.array[0, 2, 3, 1] == data[1, 3, 2]
    assert img.spacing == pytest.approx((0.5, 0.6, 2.0))


def test_sections_from_plain_text(tmp_path):
    text = "INDICATION: chest pain.\nFINDINGS: Lungs are clear. Heart normal.\nIMPRESSION: Normal study."
    r = split_sections(text)
    assert (r.indication, r.findings, r.impression) == ("chest pain.", "Lungs are clear. Heart normal.",
                                                        "Normal study.")
    p = tmp_path / "r.txt"
    p.write_text("No headings at all, just findings.")
    assert read_text_report(p).findings == "No headings at all, just findings."


def test_iu_xml():
    r = parse_iu_xml(IU_XML)
    assert r["uid"] == "CXR42" and r["mesh"] == ["normal"] and r["images"] == ["CXR42_IM-0001-1001"]
    assert r["report"].impression == "No acute disease."
    assert r["report"].indication == "-year-old with cough."  # de-identification placeholder removed


def test_csv_reports(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("id,findings,impression\na,Clear lungs.,Normal.\nb,Small effusion.,Effusion.\n")
    sections = {"findings": "findings", "impression": "impression"}
    rows = list(read_csv_reports(p, id_column="id", section_columns=sections))
    assert [r[0] for r in rows] == ["a", "b"] and rows[1][1].findings == "Small effusion."


def test_inspect_does_not_guess_the_modality_and_lists_assumptions(tmp_path, dicom_path):
    """A NIfTI records no modality: 'unknown' (never 'MR' by guessing) unless the user says; a DICOM without
    PixelSpacing / orientation lists the values it had to assume."""
    import nibabel as nib
    import pydicom

    from mmfm.workflows.inspect import inspect_path

    p = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), p)
    info = inspect_path(p)
    assert info["modality"] == "unknown" and "--modality" in info["modality_note"]
    assert inspect_path(p, "CT")["modality"] == "CT"
    ds = pydicom.dcmread(dicom_path("CT_small.dcm"))
    del ds.PixelSpacing, ds.ImageOrientationPatient, ds.ImagePositionPatient
    ds.save_as(tmp_path / "bare.dcm")
    info = inspect_path(tmp_path / "bare.dcm")
    assert {"spacing", "orientation", "origin"} <= set(info["assumed"])
    assert "assumed" not in inspect_path(dicom_path("CT_small.dcm"))


def test_unknown_modality_needs_a_preset_choice():
    from mmfm.data.presets import default_preset
    from mmfm.errors import ConfigError

    with pytest.raises(ConfigError, match="modality of these images is unknown"):
        default_preset("unknown")
