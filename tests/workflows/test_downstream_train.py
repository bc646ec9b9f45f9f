"""`mmfm train` for the promptable and registration tasks, end to end on mini's LiTS slices (tiny settings)."""

from __future__ import annotations

import json

import pytest

from mmfm.cli.main import main


@pytest.mark.realdata
def test_train_promptable_from_scratch_and_segment_with_the_run(mini_root, tmp_path, capsys):
    out = tmp_path / "prompt"
    rc = main(["train", "configs/promptable_segmentation.yaml", f"out={out}", "task.network=encoder",
               "encoder.name=vit_micro", "task.input_size=32", "task.decoder_dim=32", "data.size=[32,32]",
               "train.max_steps=3", "train.batch_size=4", "train.progress=false", "data.eval_splits=[test]"])
    assert rc == 0
    rows = {r["metric"]: r for r in json.loads((out / "results.json").read_text())}
    assert {"dice_liver", "dice_tumour", "dice_foreground"} <= set(rows)
    assert rows["dice_liver"]["method"] == "vit_micro-scratch"
    assert all(0.0 <= r["value"] <= 1.0 for r in rows.values())
    # the trained run is a --model for `mmfm segment`
    import numpy as np
    from PIL import Image

    Image.fromarray((np.random.default_rng(0).random((40, 40)) * 255).astype(np.uint8)).save(tmp_path / "x.png")
    assert main(["segment", str(tmp_path / "x.png"), "--box", "5", "5", "30", "30", "--model", str(out),
                 "--out", str(tmp_path / "m.png"), "--quiet"]) == 0
    rec = json.loads((tmp_path / "m.json").read_text())
    assert rec["model"]["name"] == "run:prompt" and len(rec["model"]["sha256"]) == 64
    capsys.readouterr()
    assert main(["segment", str(tmp_path / "x.png"), "--box", "5", "5", "30", "30", "--model", str(tmp_path),
                 "--out", str(tmp_path / "m2.png")]) == 2
    assert "training run folder" in capsys.readouterr().err


@pytest.mark.realdata
def test_train_voxelmorph_on_mini_slices(mini_root, tmp_path):
    out = tmp_path / "reg"
    rc = main(["train", "configs/registration_2d.yaml", f"out={out}", "data.size=[32,32]", "train.max_steps=3",
               "data.augment=[flip,intensity]",
               "train.batch_size=4", "train.progress=false"])
    assert rc == 0
    rows = {r["metric"]: r for r in json.loads((out / "results.json").read_text())}
    assert {"folding_fraction", "pairs", "dice_before", "dice_after"} <= set(rows)
    assert rows["pairs"]["value"] > 1 and rows["dice_after"]["method"] == "voxelmorph-scratch"
    assert 0.0 <= rows["folding_fraction"]["value"] <= 1.0


@pytest.mark.realdata
def test_text_prompted_run_segments_by_name_in_2d_and_3d(mini_root, tmp_path, capsys):
    import nibabel as nib
    import numpy as np
    from PIL import Image

    out = tmp_path / "text"
    rc = main(["train", "configs/promptable_segmentation.yaml", f"out={out}", "task.network=encoder",
               "task.prompt=text", "encoder.name=vit_micro", "task.input_size=32", "task.decoder_dim=32",
               "data.size=[32,32]", "train.max_steps=2", "train.batch_size=4", "train.progress=false",
               "data.eval_splits=[test]"])
    assert rc == 0
    rows = {r["metric"] for r in json.loads((out / "results.json").read_text())}
    assert {"dice_liver", "dice_tumour"} <= rows
    Image.fromarray((np.random.default_rng(0).random((40, 30)) * 255).astype(np.uint8)).save(tmp_path / "x.png")
    assert main(["segment", str(tmp_path / "x.png"), "--text", "the liver", "--model", str(out),
                 "--out", str(tmp_path / "t.png"), "--quiet"]) == 0
    rec = json.loads((tmp_path / "t.json").read_text())
    assert rec["prompt"]["text"] == "the liver" and rec["prompt"]["closest_trained_class"]["name"] == "liver"
    assert np.asarray(Image.open(tmp_path / "t.png")).shape == (40, 30)
    affine = np.diag([0.7, 0.7, 3.0, 1.0])
    nib.save(nib.Nifti1Image(np.random.default_rng(1).random((24, 20, 5)).astype(np.float32), affine),
             tmp_path / "v.nii.gz")
    assert main(["segment", str(tmp_path / "v.nii.gz"), "--text", "tumour", "--model", str(out),
                 "--out", str(tmp_path / "v_mask.nii.gz"), "--quiet"]) == 0
    nii = nib.load(tmp_path / "v_mask.nii.gz")
    assert nii.shape == (24, 20, 5) and np.allclose(nii.affine, affine)
    capsys.readouterr()
    assert main(["segment", str(tmp_path / "x.png"), "--text", "liver", "--out", str(tmp_path / "l.png")]) == 2
    assert "takes no text prompt" in capsys.readouterr().err and not (tmp_path / "l.png").exists()


@pytest.mark.realdata
def test_segmentation_label_fraction_and_union_of_splits(mini_root, tmp_path):
    """data.label_fraction keeps a seeded subset of the labelled slices; data.train_split=train+val trains on both
    slabs (the quickstart's setting); the written report states how many slices were used."""
    import numpy as np

    from mmfm.data import spec
    from mmfm.workflows.config import load_config
    from mmfm.workflows.supervised import labelled_subset

    cfg = load_config("configs/quickstart_segmentation.yaml", [f"data.root={mini_root}"])
    union = spec.mini_arrays(cfg.data, "train+val")
    parts = [spec.mini_arrays(cfg.data, s) for s in ("train", "val")]
    assert len(union["split"]) == sum(len(p["split"]) for p in parts) > 0
    assert set(union["split"]) == {"train", "val"}

    class Items:
        def __len__(self) -> int:
            return 50

    keep = labelled_subset(Items(), "segmentation", 0.1, seed=3)
    assert len(keep) == 5 and len(set(keep.tolist())) == 5
    assert np.array_equal(keep, labelled_subset(Items(), "segmentation", 0.1, seed=3))
    assert not np.array_equal(keep, labelled_subset(Items(), "segmentation", 0.1, seed=4))
    assert len(labelled_subset(Items(), "segmentation", 0.001, seed=0)) == 1   # at least one image

    out = tmp_path / "seg"
    assert main(["train", "configs/quickstart_segmentation.yaml", f"out={out}", f"data.root={mini_root}",
                 "data.label_fraction=0.1", "train.max_steps=2", "train.progress=false",
                 "data.size=[32,32]"]) == 0
    n = len(union["split"])
    assert f"- {round(0.1 * n)} training samples" in (out / "report.md").read_text()
    recs = json.loads((out / "results.json").read_text())
    assert {r["split"] for r in recs} == {"test"} and {r["label_fraction"] for r in recs} == {0.1}
