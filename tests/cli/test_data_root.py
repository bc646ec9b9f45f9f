"""``--data-root DIR`` without ``--dataset``: DIR is read as what it holds (a folder of images, shards, or a mini
corpus; mini without a root), decided in one place (mmfm.data.spec.dataset_at) for evaluate, zeroshot and
retrieve; ``--dataset`` or ``data.dataset=`` still name it outright."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from mmfm.cli.main import main
from mmfm.data.spec import dataset_at
from mmfm.errors import InputFileError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from userdata import write_labelled_folder  # noqa: E402


def test_dataset_at_reads_what_the_root_holds(tmp_path, mini_root):
    assert dataset_at(None) == "mini"
    assert dataset_at(mini_root) == "mini"
    lab = write_labelled_folder(tmp_path / "lab", n_per_class=2, size=8)
    assert dataset_at(lab) == "folder"
    (tmp_path / "copy").mkdir()                         # a mini corpus copied without its card
    (tmp_path / "copy" / "patches2d.npz").write_bytes((mini_root / "patches2d.npz").read_bytes())
    assert dataset_at(tmp_path / "copy") == "mini"
    (tmp_path / "sh").mkdir()
    (tmp_path / "sh" / "shards.json").write_text("{}")
    assert dataset_at(tmp_path / "sh") == "shards"
    with pytest.raises(InputFileError, match="not found"):
        dataset_at(tmp_path / "nowhere")
    with pytest.raises(InputFileError, match="not a folder"):
        dataset_at(lab / "labels.csv")


def test_evaluate_on_a_folder_of_pngs_without_dataset(tmp_path, capsys):
    lab = write_labelled_folder(tmp_path / "lab", n_per_class=10, size=16)
    out = tmp_path / "eval"
    rc = main(["evaluate", "--encoder", "random:resnet_tiny", "--data-root", str(lab), "--label", "label",
               "--protocol", "knn", "linear", "--fractions", "1.0", "--seeds", "0", "--out", str(out),
               "data.size=[16,16]"])
    assert rc == 0, capsys.readouterr().err
    rows = json.loads((out / "results.json").read_text())
    rows = rows["records"] if isinstance(rows, dict) else rows
    assert {r["dataset"] for r in rows} == {"folder"}
    assert {r["task"] for r in rows} == {"classification/knn", "classification/linear"}
    assert (out / "report.md").is_file()
    # a root that is not there: one line naming it, exit 2, nothing written
    capsys.readouterr()
    assert main(["evaluate", "--encoder", "random:resnet_tiny", "--data-root", str(tmp_path / "nowhere"),
                 "--out", str(tmp_path / "e2")]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "not found" in err and "Traceback" not in err
    assert not (tmp_path / "e2").exists()


@pytest.mark.parametrize("command", ["zeroshot", "retrieve"])
def test_zeroshot_and_retrieve_decide_the_same_way(command, tmp_path, monkeypatch):
    import mmfm.workflows.vision_language as vl

    seen = {}

    def fake(cfg):
        seen.setdefault("data", []).append((cfg.data.dataset, cfg.data.root))
        return []

    monkeypatch.setattr(vl, f"run_{command}", fake)
    lab = write_labelled_folder(tmp_path / "lab", n_per_class=2, size=8)
    base = [command, "--model", "runs/x", "--out", str(tmp_path / "o")]
    assert main([*base, "--data-root", str(lab)]) == 0
    assert main([*base, "--data-root", str(lab), "--dataset", "MSD"]) == 0          # named outright
    assert main([*base, "--data-root", str(lab), "data.dataset=folder"]) == 0
    assert main([*base, f"data.root={lab}"]) == 0                                     # the root as an override
    assert main(base) == 0
    assert seen["data"] == [("folder", str(lab)), ("MSD", str(lab)), ("folder", str(lab)), ("folder", str(lab)),
                            ("mini", None)]
