"""Per-case segmentation evidence: one row per case (id, Dice, HD95, sizes, empty flags), written beside the results
and shown in report.md / report.html with a plain sentence when the model predicts nothing."""

from __future__ import annotations

import json

import numpy as np
import torch

from mmfm.data.datasets import ArrayDataset
from mmfm.evaluation.evaluate import evaluate
from mmfm.evaluation.figures import plot_case_overlays
from mmfm.evaluation.per_case import picks, write_cases
from mmfm.evaluation.report import write_report
from mmfm.evaluation.results import ResultRecord


class Fixed(torch.nn.Module):
    """A segmenter whose output is known: ``nothing`` predicts background everywhere, else the foreground is
    where the image is bright."""

    num_classes = 2

    def __init__(self, nothing: bool) -> None:
        super().__init__()
        self.nothing = nothing
        self.w = torch.nn.Parameter(torch.zeros(()))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        fg = torch.full_like(x, -5.0) if self.nothing else (x - 0.5) * 20
        return torch.cat([-fg, fg], dim=1) + self.w

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x).argmax(1, keepdim=True)


def volumes(n: int = 3, shape: tuple[int, ...] = (20, 18, 12)) -> ArrayDataset:
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"))
    masks = []
    for i in range(n):
        r = 3 + i
        masks.append((((grid - np.array(shape)[:, None, None, None] / 2) ** 2).sum(0) < r * r)[None])
    m = np.stack(masks).astype(np.int64)                       # (N, 1, *s), balls of radius 3, 4, 5
    return ArrayDataset(m.astype(np.float32), mask=m)


def test_an_empty_prediction_is_flagged_with_missing_hd95_and_said_plainly_in_the_reports(tmp_path):
    ds = volumes()
    rows: list[dict] = []
    metrics = evaluate(Fixed(nothing=True), ds, "segmentation", class_names=["background", "tumour"],
                       roi_size=(16, 16, 16), spacing=(1.0, 1.0, 2.0), cases=rows, split="test")
    assert metrics["dice_tumour"] == 0.0
    assert [r["case"] for r in rows] == ["test-000", "test-001", "test-002"]
    for r, radius in zip(rows, (3, 4, 5)):
        assert r["empty_prediction"] is True and r["empty_tumour"] is True
        assert r["dice_tumour"] == 0.0 and r["hd95_tumour"] is None          # missing, not a placeholder distance
        assert r["pred_tumour"] == 0.0 and r["size_unit"] == "ml"
        true_voxels = int(np.asarray(ds[r["index"]]["mask"]).sum())
        assert r["true_tumour"] == round(true_voxels * 2.0 / 1000, 4) and true_voxels > 4 * radius ** 2
    run = tmp_path / "run"
    write_cases(run, "test", rows)
    assert json.loads((run / "cases_test.json").read_text()) == rows
    csv_lines = (run / "cases_test.csv").read_text().splitlines()
    assert len(csv_lines) == 4 and "hd95_tumour" in csv_lines[0]
    rec = ResultRecord("segmentation", "toy", "test", "m", "dice_tumour", 0.0, 0, 1.0)
    write_report(run / "report.md", "toy", [rec], {}, [])
    md = (run / "report.md").read_text()
    assert "predicts NOTHING" in md and "| test-002 |" in md and "missing" in md
    page = (run / "report.html").read_text()
    assert "Per-case results: test" in page and "predicts NOTHING" in page and "test-001" in page


def test_per_case_rows_of_a_working_model_and_its_best_median_worst_overlays(tmp_path):
    ds = volumes()
    rows: list[dict] = []
    evaluate(Fixed(nothing=False), ds, "segmentation", cases=rows, split="val")   # no spacing: voxels, whole batch
    assert len(rows) == 3 and not any(r["empty_prediction"] for r in rows)
    assert all(r["dice_1"] == 1.0 and r["hd95_1"] == 0.0 and r["pred_1"] == r["true_1"] > 0 for r in rows)
    assert rows[0]["size_unit"] == "voxels" and rows[0]["hd95_unit"] == "voxels"
    assert set(picks(rows)) == {"worst", "median", "best"}
    png = plot_case_overlays(Fixed(nothing=False), ds, rows, tmp_path / "plots" / "cases.png", (16, 16, 16))
    assert png is not None and png.stat().st_size > 1000
    write_cases(tmp_path, "val", rows)
    md = write_report(tmp_path / "report.md", "toy", [], {}, []).read_text()
    assert "Per-case results (val" in md and "predicts" not in md
