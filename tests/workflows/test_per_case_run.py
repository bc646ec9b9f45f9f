"""A supervised segmentation run writes its per-case evidence: cases_<split>.json/.csv beside results.json, the
best/median/worst overlays (plots/cases.png) and the per-case table in report.md and report.html."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from mmfm.cli.main import main
from mmfm.data import spec
from mmfm.workflows.config import load_config


@pytest.mark.realdata
def test_a_2d_segmentation_run_writes_per_case_rows_overlays_and_the_report_table(mini_root, tmp_path):
    out = tmp_path / "seg"
    overrides = [f"out={out}", f"data.root={mini_root}", "train.max_steps=2", "train.batch_size=4",
                 "train.progress=false", "data.size=[32,32]", "data.augment=[]"]
    assert main(["train", "configs/quickstart_segmentation.yaml", *overrides]) == 0

    cfg = load_config("configs/quickstart_segmentation.yaml", overrides)
    test_masks = spec.mini_arrays(cfg.data, "test")["mask"]          # the split's slices, in evaluation order
    rows = json.loads((out / "cases_test.json").read_text())
    assert [r["case"] for r in rows] == [f"test-{i:03d}" for i in range(len(test_masks))]
    assert all(r["split"] == "test" for r in rows)
    assert not any(str(mini_root) in json.dumps(r) for r in rows)    # case ids, never file names
    for r in rows:
        assert {"dice_liver", "dice_tumour", "hd95_liver", "pred_liver", "true_liver", "empty_prediction"} <= set(r)
        assert r["dice_liver"] is None or 0.0 <= r["dice_liver"] <= 1.0
    # row i is slice i of the split: its reference size is that mask's pixel count on the evaluated 32x32 grid
    assert rows[0]["size_unit"] == "pixels"
    assert [r["true_liver"] for r in rows] == [float((m == 1).sum()) for m in test_masks]
    assert [r["true_tumour"] for r in rows] == [float((m == 2).sum()) for m in test_masks]
    assert sum(r["true_liver"] for r in rows) > 0
    assert not (out / "cases_val.json").exists()                     # eval_splits: [test] only
    with open(out / "cases_test.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [t["case"] for t in table] == [r["case"] for r in rows]
    assert np.allclose([float(t["true_liver"]) for t in table], [r["true_liver"] for r in rows])

    png = out / "plots" / "cases.png"
    assert png.is_file() and png.stat().st_size > 1000
    report_md = (out / "report.md").read_text()
    assert "## Per-case results (test" in report_md and "plots/cases.png" in report_md
    page = (out / "report.html").read_text()
    assert "Per-case results: test" in page
    assert all(f"<td>{r['case']}</td>" in page for r in rows[:5])
    assert 'alt="cases"' in page                                     # the overlays, embedded
