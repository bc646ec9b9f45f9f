"""Detection: boxes from masks and COCO files, metric values against hand-computed cases (empty images included),
RetinaNet on a registry encoder learning to find squares (2D) and running in 3D, and `mmfm train` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mmfm.errors import InputFileError
from mmfm.evaluation.metrics.detection import froc, match, mean_ap
from mmfm.tasks import detection as D


def test_boxes_from_mask_one_per_component_and_class():
    m = np.zeros((20, 16), int)
    m[2:5, 3:7] = 2            # a lesion
    m[10:12, 10:11] = 2        # another (2 voxels: below min_voxels=4)
    m[12:18, 1:4] = 1          # an organ, not a target class
    boxes, labels = D.boxes_from_mask(m, classes=[2], min_voxels=4)
    assert boxes.tolist() == [[2, 3, 5, 7]] and labels.tolist() == [0]
    boxes, labels = D.boxes_from_mask(m, classes=[1, 2], min_voxels=1)
    assert sorted(map(tuple, boxes.tolist())) == [(2, 3, 5, 7), (10, 10, 12, 11), (12, 1, 18, 4)]
    assert sorted(labels.tolist()) == [0, 1, 1]
    v = np.zeros((8, 8, 8), int)
    v[1:3, 2:5, 4:8] = 1
    b3, _ = D.boxes_from_mask(v, [1])
    assert b3.tolist() == [[1, 2, 4, 3, 5, 8]]


def test_read_coco_and_its_errors(tmp_path):
    doc = {"images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}, {"id": 2, "file_name": "b.png"}],
           "categories": [{"id": 7, "name": "nodule"}, {"id": 3, "name": "mass"}],
           "annotations": [{"image_id": 1, "category_id": 7, "bbox": [5, 6, 10, 4]},
                           {"image_id": 1, "category_id": 3, "bbox": [0, 0, 2, 2]}]}
    (tmp_path / "ann.json").write_text(json.dumps(doc))
    out = D.read_coco(tmp_path / "ann.json")
    assert out["__categories__"] == ["mass", "nodule"]
    assert out["a.png"]["boxes"].tolist() == [[5, 6, 15, 10], [0, 0, 2, 2]]
    assert out["a.png"]["labels"].tolist() == [1, 0]
    assert out["b.png"]["boxes"].shape == (0, 4)
    doc["annotations"][0]["bbox"] = [1, 1, 0, 3]
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(InputFileError, match="zero area"):
        D.read_coco(tmp_path / "bad.json")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(InputFileError, match="not a COCO"):
        D.read_coco(tmp_path / "x.json")


def _b(*rows):
    return np.asarray(rows, np.float32).reshape(-1, 4)


def test_metrics_against_hand_computed_cases():
    # greedy matching by score: the higher-scored duplicate takes the reference, the other is a false positive
    assert match(_b([0, 0, 10, 10], [0, 0, 10, 9]), np.array([0.5, 0.9]), _b([0, 0, 10, 10])).tolist() == [False, True]
    gts = [{"boxes": _b([0, 0, 10, 10], [20, 20, 30, 30]), "labels": np.array([0, 0])},
           {"boxes": _b(), "labels": np.zeros(0, int)}]                                    # an image with none
    preds = [{"boxes": _b([0, 0, 10, 10], [50, 50, 60, 60]), "labels": np.array([0, 0]), "scores": np.array([.9, .8])},
             {"boxes": _b([1, 1, 5, 5]), "labels": np.array([0]), "scores": np.array([.7])}]
    f = froc(preds, gts)
    # 2 images, 2 lesions: at score >= .9 one TP and no FP -> sensitivity 1/2 at every FP rate; the second lesion
    # is never found
    assert all(f[f"sensitivity@{r:g}fp"] == 0.5 for r in (0.125, 1, 8)) and f["froc"] == 0.5
    # AP (101-point interpolation): precision 1 up to recall 1/2, nothing after -> 51/101
    assert mean_ap(preds, gts, ["lesion"])["map@0.1"] == pytest.approx(51 / 101)
    perfect = [{"boxes": g["boxes"], "labels": g["labels"], "scores": np.ones(len(g["boxes"]))} for g in gts]
    assert froc(perfect, gts)["froc"] == 1.0 and mean_ap(perfect, gts, ["lesion"])["map@0.5"] == pytest.approx(1.0)
    empty = [{"boxes": _b(), "labels": np.zeros(0, int)}] * 2
    assert np.isnan(froc(preds, empty)["froc"]) and np.isnan(mean_ap(preds, empty, ["lesion"])["map@0.1"])
    none = [{"boxes": _b(), "labels": np.zeros(0, int), "scores": np.zeros(0)}] * 2
    assert froc(none, gts)["froc"] == 0.0


def test_retinanet_on_a_registry_encoder_learns_to_find_squares():
    torch.manual_seed(0)
    task = D.detection(spatial_dims=2, in_channels=1, encoder={"name": "vit_micro", "patch_size": 4},
                       classes=[1], image_size=[32, 32], anchor_sizes=[6, 10])
    rng = np.random.default_rng(0)
    images, masks = [], []
    for _ in range(4):
        m = np.zeros((32, 32), np.int64)
        for _ in range(2):
            i, j = rng.integers(2, 22, size=2)
            m[i:i + 8, j:j + 8] = 1
        images.append(m.astype(np.float32))
        masks.append(m)
    batch = {"image": torch.from_numpy(np.stack(images))[:, None], "mask": torch.from_numpy(np.stack(masks))[:, None]}
    opt = torch.optim.AdamW(task.parameters(), lr=2e-3)
    for _ in range(150):
        loss = task(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    preds = [{k: v.numpy() for k, v in p.items()} for p in task.predict(batch["image"])]
    gts = [{k: v.numpy() for k, v in g.items()} for g in task.targets(batch)]
    assert froc(preds, gts)["sensitivity@1fp"] >= 0.75


def test_retinanet_runs_in_3d():
    task = D.detection(spatial_dims=3, in_channels=1, encoder={"name": "vit_micro", "patch_size": 4},
                       classes=[1], image_size=[16, 16, 16])
    m = torch.zeros(2, 1, 16, 16, 16, dtype=torch.long)
    m[:, :, 2:7, 3:9, 4:8] = 1
    out = task({"image": m.float(), "mask": m})
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    grads = [p.grad for p in task.detector.network.feature_extractor.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    pred = task.predict(m.float())
    assert len(pred) == 2 and pred[0]["boxes"].shape[-1] == 6


@pytest.mark.realdata
def test_train_detection_on_mini_tumours(mini_root, tmp_path):
    from mmfm.cli.main import main

    out = tmp_path / "det"
    rc = main(["train", "configs/detection_2d.yaml", f"out={out}", "encoder.name=vit_micro", "data.size=[32,32]",
               "train.max_steps=2", "train.batch_size=4", "train.progress=false"])
    assert rc == 0
    rows = {r["metric"]: r for r in json.loads((out / "results.json").read_text())}
    assert {"map@0.1", "map@0.5", "froc", "sensitivity@1fp", "objects"} <= set(rows)
    assert rows["objects"]["value"] > 0 and rows["froc"]["method"] == "retinanet:vit_micro-scratch"


def _coco_folder(root, n=12):
    """n grey PNGs (48 wide, 40 high) with one or two bright rectangles each, some with none, and their COCO JSON."""
    from PIL import Image

    rng = np.random.default_rng(0)
    images, anns = [], []
    (root / "imgs").mkdir(parents=True)
    for i in range(n):
        a = (rng.random((40, 48)) * 40).astype(np.uint8)
        for _ in range(i % 3):      # 0, 1 or 2 boxes
            x, y, w, h = int(rng.integers(0, 30)), int(rng.integers(0, 24)), 12, 10
            a[y:y + h, x:x + w] = 250
            anns.append({"id": len(anns), "image_id": i, "bbox": [x, y, w, h], "category_id": 5})
        Image.fromarray(a).save(root / "imgs" / f"im{i:02d}.png")
        images.append({"id": i, "file_name": f"im{i:02d}.png", "width": 48, "height": 40})
    (root / "annotations.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                       "categories": [{"id": 5, "name": "lesion"}]}))
    return anns


def test_coco_boxes_dataset_scales_boxes_and_batches_them(tmp_path):
    from mmfm.data import spec
    from mmfm.data.datasets import collate_samples
    from mmfm.workflows.config import load_config

    anns = _coco_folder(tmp_path / "coco")
    cfg = load_config("configs/detection_2d.yaml", ["data.dataset=coco_boxes", f"data.root={tmp_path / 'coco'}",
                                                    "data.options={image_dir: imgs}", "data.size=[24,20]"])
    ds, names = spec.labelled(cfg.data, "train", "detection", train=True)
    assert names == ["background", "lesion"]
    by_file = {}
    for a in anns:
        by_file.setdefault(a["image_id"], []).append(a["bbox"])
    seen = 0
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (1, 24, 20)
        n = int(ds.samples.records[i]["case"][2:])
        want = [[x * 0.5, y * 0.5, (x + w) * 0.5, (y + h) * 0.5] for x, y, w, h in by_file.get(n, [])]
        assert item["boxes"].tolist() == want and item["box_labels"].tolist() == [0] * len(want)
        seen += len(want)
    assert seen > 0
    batch = collate_samples([ds[i] for i in range(len(ds))])
    assert batch["image"].shape[0] == len(ds) and isinstance(batch["boxes"], list)
    assert [len(b) for b in batch["boxes"]] == [len(ds[i]["boxes"]) for i in range(len(ds))]


@pytest.mark.realdata
def test_train_detection_on_coco_boxes_from_the_cli(tmp_path, capsys):
    from mmfm.cli.main import main
    from mmfm.workflows.supervised import load_trained

    _coco_folder(tmp_path / "coco", n=20)
    out = tmp_path / "run"
    rc = main(["train", "configs/detection_2d.yaml", "data.dataset=coco_boxes", f"data.root={tmp_path / 'coco'}",
               "data.options={image_dir: imgs}", "data.size=[32,32]", "encoder.name=vit_micro",
               "encoder.patch_size=4", "train.max_steps=2", "train.batch_size=4", "train.progress=false",
               "data.eval_splits=[test]", f"out={out}"])
    assert rc == 0
    assert "box annotations name 1 categories (lesion)" in capsys.readouterr().out
    rows = {r["metric"]: r["value"] for r in json.loads((out / "results.json").read_text())}
    assert {"map@0.1", "map@0.5", "sensitivity@1fp"} <= set(rows)
    assert rows["objects"] > 0 and 0.0 <= rows["froc"] <= 1.0
    model, state = load_trained(out)
    assert state["run_info"]["task_options"]["classes"] == [1] and model.classes == [1]
