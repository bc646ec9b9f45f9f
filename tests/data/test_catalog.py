"""The catalog holds every dataset of the review's Tables I-III; each layout family loads a fixture in its format."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image as PILImage

from mmfm.data.catalog import LAYOUTS, get_entry, load_catalog, load_dataset
from mmfm.data.pseudonym import pseudonym

TABLE_I = ["MedNLI", "SEER", "MIMIC-III", "MeQSum", "HealthCareMagic"]
TABLE_II = ["MC-CXR", "SZ-CXR", "CBIS-DDSM", "MedMNIST", "MMR-ColonPathology", "MMR-Dermatoscopy", "MMR-RetinalOCT",
            "MMR-ChestXray", "MMR-BreastUltrasound", "MMR-BloodCell", "MMR-CoronalAbdominalCT",
            "CLIP-Driven-Universal", "AbdomenAtlas-8K", "AbdomenAtlas-1.1", "MedSAM-data", "SAM-Med3D", "EyeFound",
            "RETFound", "SwinUNETR-pretrain", "DAE-pretrain"]
TABLE_III = ["ROCO", "MedICaT", "PMC-OA", "ChiMed-VL", "FFA-IR", "PadChest", "MIMIC-CXR", "CT-RATE", "OpenPath",
             "Quilt-1M", "PEIR-GROSS", "IU-Xray", "SLAKE", "PathVQA", "VQA-RAD", "RET-CLIP"]


def test_every_review_dataset_is_catalogued():
    cat = load_catalog()
    for table, names in (("I", TABLE_I), ("II", TABLE_II), ("III", TABLE_III)):
        for n in names:
            e = cat[n]
            assert e.table == table and e.licence and e.obtain and e.layout_notes and e.modalities
    for e in cat.values():
        # mini and shards have their own readers (arrays; streamed tar shards), every other layout a loader
        assert e.layout in ("mini", "shards") or e.layout in LAYOUTS, f"{e.name}: layout {e.layout} has no loader"
    assert get_entry("mimic-cxr").name == "MIMIC-CXR"


def _png(path, value=100, size=(16, 20)):
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(np.full(size, value, np.uint8)).save(path)


def test_medmnist_family(tmp_path):
    p = tmp_path / "breastmnist.npz"
    np.savez(p, **{f"{s}_images": np.full((4, 28, 28), 7, np.uint8) for s in ("train", "val", "test")},
             **{f"{s}_labels": np.array([[0], [1], [1], [0]]) for s in ("train", "val", "test")})
    ds = load_dataset("MMR-BreastUltrasound", p, split="val", modality="US")
    assert len(ds) == 4 and ds[1]["labels"]["label"] == 1 and ds[0]["images"]["US"].array.shape == (1, 28, 28)


def test_image_csv_family(tmp_path):
    for i in range(3):
        _png(tmp_path / "CXR_png" / f"MCUCXR_{i:04d}_{i % 2}.png", value=10 * i)
    (tmp_path / "labels.csv").write_text("image,label\n" + "".join(
        f"CXR_png/MCUCXR_{i:04d}_{i % 2}.png,{'tb' if i % 2 else 'normal'}\n" for i in range(3)))
    ds = load_dataset("MC-CXR", tmp_path)
    assert len(ds) == 3 and [ds[i]["labels"]["label"] for i in range(3)] == [0, 1, 0]
    assert ds[2]["images"]["XR"].array.max() == 20


def test_image_text_csv_family_mimic_style(tmp_path):
    _png(tmp_path / "files" / "p10" / "s1" / "a.png")
    _png(tmp_path / "files" / "p11" / "s2" / "b.png")
    (tmp_path / "captions.csv").write_text(
        "image,text,patient,study\n"
        'files/p10/s1/a.png,"FINDINGS: Clear lungs. IMPRESSION: Normal.",p10,s1\n'
        'files/p11/s2/b.png,"FINDINGS: Effusion. IMPRESSION: Right effusion.",p11,s2\n')
    ds = load_dataset("MIMIC-CXR", tmp_path)
    s = ds[1]
    assert s["report"].impression == "Right effusion." and s["ids"].patient_id == pseudonym("p11", "patient")
    assert ds[0]["ids"].patient_id != s["ids"].patient_id and "p11" not in s["ids"].patient_id


def test_image_text_csv_family_ct_rate_sections(tmp_path):
    vol = tmp_path / "train" / "v1.nii.gz"
    vol.parent.mkdir()
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.float32), np.eye(4)), vol)
    (tmp_path / "captions.csv").write_text(
        "VolumeName,Findings_EN,Impressions_EN\ntrain/v1.nii.gz,No nodule.,Normal chest.\n")
    s = load_dataset("CT-RATE", tmp_path)[0]
    assert s["images"]["CT"].spatial_dims == 3 and s["report"].findings == "No nodule."


@pytest.mark.parametrize("style", ["msd", "nnunet", "atlas"])
def test_nifti_folder_family(tmp_path, style):
    img, lab = np.zeros((8, 8, 6), np.float32), np.zeros((8, 8, 6), np.uint8)
    lab[2:5, 2:5, 1:3] = 1
    if style == "atlas":
        d = tmp_path / "BDMAP_0001"
        d.mkdir()
        nib.save(nib.Nifti1Image(img, np.eye(4)), d / "ct.nii.gz")
        nib.save(nib.Nifti1Image(lab, np.eye(4)), d / "combined_labels.nii.gz")
        name = "AbdomenAtlas-1.1"
    else:
        (tmp_path / "imagesTr").mkdir()
        (tmp_path / "labelsTr").mkdir()
        nib.save(nib.Nifti1Image(img, np.eye(4)), tmp_path / "imagesTr" / "liver_1.nii.gz")
        nib.save(nib.Nifti1Image(lab, np.eye(4)), tmp_path / "labelsTr" / "liver_1.nii.gz")
        if style == "msd":
            (tmp_path / "dataset.json").write_text(json.dumps(
                {"training": [{"image": "./imagesTr/liver_1.nii.gz", "label": "./labelsTr/liver_1.nii.gz"}]}))
        name = "MSD" if style == "msd" else "BTCV"
    ds = load_dataset(name, tmp_path, modality="CT")
    s = ds[0]
    assert len(ds) == 1 and s["mask"].shape == (1, 8, 8, 6) and int(s["mask"].sum()) == 18


def test_vqa_family_slake(tmp_path):
    _png(tmp_path / "imgs" / "xmlab1" / "source.png")
    (tmp_path / "train.json").write_text(json.dumps([
        {"img_name": "xmlab1/source.png", "question": "Is the lung healthy?", "answer": "Yes",
         "answer_type": "CLOSED", "q_lang": "en"},
        {"img_name": "xmlab1/source.png", "question": "肺部健康吗?", "answer": "是", "q_lang": "zh"}]))
    ds = load_dataset("SLAKE", tmp_path)
    assert len(ds) == 1 and ds[0]["texts"]["answer"] == "Yes" and ds[0]["texts"]["answer_type"] == "CLOSED"


def test_text_only_family(tmp_path):
    (tmp_path / "mli_train_v1.jsonl").write_text(
        json.dumps({"sentence1": "Patient has fever.", "sentence2": "Patient is febrile.", "gold_label": "entailment"})
        + "\n"
        + json.dumps({"sentence1": "No pain.", "sentence2": "Severe pain.", "gold_label": "contradiction"}) + "\n")
    ds = load_dataset("MedNLI", tmp_path, file="mli_train_v1.jsonl")
    assert len(ds) == 2 and ds[1]["texts"]["hypothesis"] == "Severe pain." and ds[1]["labels"]["label"] == 0
    (tmp_path / "meqsum.csv").write_text(
        "CHQ,Summary\nI have had a headache for weeks what do I do,Headache treatment?\n")
    assert load_dataset("MeQSum", tmp_path, file="meqsum.csv")[0]["texts"]["summary"] == "Headache treatment?"


def test_iu_xray_family(tmp_path):
    from tests.data.test_readers import IU_XML

    (tmp_path / "ecgen-radiology").mkdir()
    (tmp_path / "ecgen-radiology" / "1.xml").write_bytes(IU_XML)
    _png(tmp_path / "NLMCXR_png" / "CXR42_IM-0001-1001.png")
    ds = load_dataset("IU-Xray", tmp_path)
    s = ds[0]
    assert len(ds) == 1 and s["report"].findings.startswith("The heart") and s["labels"]["mesh"] == ["normal"]
    assert s["images"]["XR"].array.shape == (1, 20, 16)
