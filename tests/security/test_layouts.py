"""Attacks on the catalog layouts (issue 24, item 10): every path a table, JSON or option names (``labels.csv``,
``captions.csv``, ``annotations.json``, a VQA JSON, ``dataset.json``, IU X-ray report XMLs, a text file option)
must stay inside ``data.root``: no absolute path, no ``..`` escape, no link out. A refused path is an error naming
the table and the line or entry, with the hint ``data.allow_outside_root=true``, and that opt-in reads it."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from mmfm.data import spec
from mmfm.data.catalog import loaders
from mmfm.errors import ConfigError, InputFileError
from mmfm.workflows.config import load_config

HINT = "data.allow_outside_root=true"


@pytest.fixture()
def outside(tmp_path: Path) -> Path:
    """A folder beside the dataset holding what an attacker's table tries to pull in (a bright PNG)."""
    d = tmp_path / "outside"
    d.mkdir()
    Image.fromarray(np.full((12, 10), 222, np.uint8)).save(d / "secret.png")
    return d


def _png(path: Path, value: int = 10) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((12, 10), value, np.uint8)).save(path)


def _refused(call, where: str, table: str) -> str:  # noqa: ANN001
    """The error of ``call()``: names the table, says outside data.root at ``where``, hints the opt-in."""
    with pytest.raises(InputFileError) as e:
        call()
    msg = str(e.value)
    problem = msg.split("\n")[0]
    assert table in problem and "outside data.root" in problem and where in problem, msg
    assert HINT in e.value.hint, msg
    return msg


def test_image_csv_rows_stay_inside_the_root(tmp_path, outside):
    root = tmp_path / "data"
    _png(root / "img" / "a.png")
    _png(root / "img" / "b.png")
    (root / "labels.csv").write_text("image,label\nimg/a.png,x\nimg/b.png,y\n../outside/secret.png,y\n")
    _refused(lambda: loaders.image_csv(root), "line 4", "labels.csv")
    # a missing outside file gets the same answer: the error is no oracle for what exists outside
    (root / "labels.csv").write_text("image,label\nimg/a.png,x\n../outside/nothing.png,y\n")
    msg = _refused(lambda: loaders.image_csv(root), "line 3", "labels.csv")
    assert "missing" not in msg and "nothing.png" not in msg
    (root / "labels.csv").write_text("image,label\nimg/a.png,x\nimg/b.png,y\n../outside/secret.png,y\n")
    ds = loaders.image_csv(root, allow_outside_root=True)                      # the opt-in reads it as asked
    assert len(ds) == 3 and ds[2]["images"]["XR"].array.max() == 222


def test_multimodal_columns_stay_inside_the_root(tmp_path, outside):
    root = tmp_path / "mm"
    _png(root / "ct" / "1.png")
    _png(root / "pt" / "1.png")
    (root / "labels.csv").write_text(f"ct,pet,label\nct/1.png,pt/1.png,a\nct/1.png,{outside / 'secret.png'},b\n")
    _refused(lambda: loaders.image_csv(root, modality_columns={"CT": "ct", "PT": "pet"}), "line 3", "labels.csv")
    ds = loaders.image_csv(root, modality_columns={"CT": "ct", "PT": "pet"}, allow_outside_root=True)
    assert ds[1]["images"]["PT"].array.max() == 222


def test_image_text_csv_rows_linking_out_are_refused(tmp_path, outside):
    root = tmp_path / "pairs"
    _png(root / "files" / "a.png")
    (root / "files" / "b.png").symlink_to(outside / "secret.png")          # looks innocent, links out
    (root / "captions.csv").write_text('image,text\nfiles/a.png,"Clear lungs."\nfiles/b.png,"Normal."\n')
    _refused(lambda: loaders.image_text_csv(root), "line 3", "captions.csv")
    assert len(loaders.image_text_csv(root, allow_outside_root=True)) == 2


def test_a_table_that_links_out_is_refused(tmp_path, outside):
    root = tmp_path / "pairs"
    _png(root / "files" / "a.png")
    (outside / "captions.csv").write_text('image,text\nfiles/a.png,"Clear lungs."\n')
    root.joinpath("captions.csv").symlink_to(outside / "captions.csv")
    _refused(lambda: loaders.image_text_csv(root), "captions.csv", "captions.csv")
    assert len(loaders.image_text_csv(root, allow_outside_root=True)) == 1


def test_coco_file_names_stay_inside_the_root(tmp_path, outside):
    root = tmp_path / "coco"
    _png(root / "a.png")
    doc = {"images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "../outside/secret.png"}],
           "annotations": [{"id": 1, "image_id": 2, "bbox": [1, 1, 3, 3], "category_id": 1}],
           "categories": [{"id": 1, "name": "lesion"}]}
    (root / "annotations.json").write_text(json.dumps(doc))
    _refused(lambda: loaders.coco_boxes(root), "../outside/secret.png", "annotations.json")
    assert len(loaders.coco_boxes(root, allow_outside_root=True)) == 2


def test_vqa_image_names_stay_inside_the_root(tmp_path, outside):
    root = tmp_path / "slake"
    _png(root / "imgs" / "x1" / "source.png")
    (root / "train.json").write_text(json.dumps([
        {"img_name": "x1/source.png", "question": "Healthy?", "answer": "Yes"},
        {"img_name": "../../outside/secret.png", "question": "What is shown?", "answer": "secret"}]))
    _refused(lambda: loaders.vqa_json(root), "record 1", "train.json")
    (root / "other.json").write_text(json.dumps([{"img_name": "x1/\u0000", "question": "q", "answer": "a"}]))
    _refused(lambda: loaders.vqa_json(root, file="other.json"), "record 0", "other.json")   # refused, no crash
    assert loaders.vqa_json(root, allow_outside_root=True)[1]["images"]["XR"].array.max() == 222


def test_nifti_dataset_json_and_scanned_links_stay_inside_the_root(tmp_path):
    root, far = tmp_path / "msd", tmp_path / "far"
    for d in (root / "imagesTr", root / "labelsTr", far):
        d.mkdir(parents=True)
    vol = nib.Nifti1Image(np.zeros((6, 6, 4), np.float32), np.eye(4))
    for p in (root / "imagesTr" / "c1.nii.gz", root / "labelsTr" / "c1.nii.gz", far / "c2.nii.gz"):
        nib.save(vol, p)
    (root / "dataset.json").write_text(json.dumps({"training": [
        {"image": "./imagesTr/c1.nii.gz", "label": "./labelsTr/c1.nii.gz"},
        {"image": str(far / "c2.nii.gz"), "label": "../far/c2.nii.gz"}]}))
    _refused(lambda: loaders.nifti_folders(root), "training[1]", "dataset.json")
    assert len(loaders.nifti_folders(root, allow_outside_root=True)) == 2
    (root / "dataset.json").unlink()                                    # nnU-Net style: the images are scanned
    (root / "imagesTr" / "c2.nii.gz").symlink_to(far / "c2.nii.gz")
    _refused(lambda: loaders.nifti_folders(root), "c2.nii.gz", "imagesTr")
    assert len(loaders.nifti_folders(root, allow_outside_root=True)) == 2


IU = b"""<?xml version="1.0"?><eCitation><uId id="CXR7"/><MedlineCitation><Article><Abstract>
<AbstractText Label="FINDINGS">The heart is normal in size.</AbstractText>
<AbstractText Label="IMPRESSION">No acute disease.</AbstractText>
</Abstract></Article></MedlineCitation><parentImage id="%s"/></eCitation>"""


def test_iu_xray_image_ids_stay_inside_the_root(tmp_path, outside):
    root = tmp_path / "iu"
    (root / "ecgen-radiology").mkdir(parents=True)
    (root / "ecgen-radiology" / "7.xml").write_bytes(IU % b"../../outside/secret")
    _png(root / "NLMCXR_png" / "CXR7_1.png")
    _refused(lambda: loaders.iu_xray(root), "CXR7", "7.xml")
    assert loaders.iu_xray(root, allow_outside_root=True)[0]["images"]["XR"].array.max() == 222


def test_text_only_file_option_stays_inside_the_root(tmp_path, outside):
    root = tmp_path / "notes"
    root.mkdir()
    (root / "notes.csv").write_text("text\nFever.\n")
    (outside / "other.csv").write_text("text\nSomeone else's note.\n")
    _refused(lambda: loaders.text_only(root, file="../outside/other.csv"), "data.options.file", "other.csv")
    _refused(lambda: loaders.text_only(root, file=str(outside / "other.csv")), "data.options.file", "other.csv")
    assert len(loaders.text_only(root, file="notes.csv")) == 1
    read = loaders.text_only(root, file="../outside/other.csv", allow_outside_root=True)
    assert read[0]["texts"]["text"] == "Someone else's note."


def test_the_typed_key_reaches_every_layout_and_options_cannot_smuggle_it(tmp_path, outside):
    root = tmp_path / "cxr"
    _png(root / "a.png")
    (root / "labels.csv").write_text("image,label\na.png,normal\n../outside/secret.png,tb\n")
    data = lambda *o: load_config(None, ["data.dataset=MC-CXR", f"data.root={root}", *o]).data  # noqa: E731
    spec._LOADED.clear()
    with pytest.raises(InputFileError, match="line 3"):
        spec.all_samples(data())
    spec._LOADED.clear()
    assert len(spec.all_samples(data(f"{HINT}"))) == 2
    spec._LOADED.clear()
    with pytest.raises(ConfigError, match="data.allow_outside_root"):
        spec.all_samples(data("data.options.allow_outside_root=true"))
    with pytest.raises(ConfigError, match="data.allow_outside_root"):    # nor through the catalog's own entry
        loaders.load_dataset("MC-CXR", root, allow_outside_root=True)
    spec._LOADED.clear()
