"""``data.dataset=folder`` with a ``captions.csv`` (image,text[,patient]) is image-text pairs, read by the catalog's
pairs layout (image_text_csv): a CLIP pretrain reads them, and bad tables stop with one line naming file and row."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import mmfm
from mmfm.cli.main import main
from mmfm.data import spec
from mmfm.data.source import source
from mmfm.errors import InputFileError
from mmfm.workflows.config import DataConfig

WORDS = ("liver", "brain", "lung", "kidney")


@pytest.fixture(autouse=True)
def _fresh_scans():
    spec._LOADED.clear()
    yield
    spec._LOADED.clear()


def write_pairs(root: Path, n: int = 16, rows: list[dict] | None = None) -> Path:
    """``root/images/*.png`` (real PNGs) + ``captions.csv``; ``rows`` replaces the table's rows."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True, exist_ok=True)
    table = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (24, 24), dtype=np.uint8)).save(root / f"images/p{i}.png")
        table.append({"image": f"images/p{i}.png", "text": f"CT of the {WORDS[i % 4]}, case {i}.",
                      "patient": f"pt{i // 2}"})
    rows = table if rows is None else rows
    with open(root / "captions.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root


def _pairs(root: Path, split: str = "train", **options: str):
    return source(DataConfig(dataset="folder", root=str(root), size=[16, 16], options=options)).pairs(split)


def test_folder_with_captions_serves_pairs_split_by_patient(tmp_path):
    root = write_pairs(tmp_path / "pairs")
    train = _pairs(root, patient_column="patient")
    texts = [t for t in train.texts if t]
    assert texts and all(t.startswith("CT of the") for t in texts)
    assert tuple(train[0]["image"].shape) == (1, 16, 16)
    sizes = {s: len(_pairs(root, s, patient_column="patient")) for s in ("train", "val", "test")}
    assert sum(sizes.values()) == 16 and sizes["test"] > 0   # held out: retrieval scores unseen pairs
    # the same table under other names, as the catalog's layout options name them
    (root / "captions.csv").rename(root / "reports.csv")
    spec._LOADED.clear()
    txt = json.dumps(_pairs(root, captions="reports.csv").texts)
    assert "CT of the" in txt


def test_clip_pretrain_reads_a_pairs_folder(tmp_path):
    root = write_pairs(tmp_path / "pairs")
    run = mmfm.pretrain({
        "encoder": {"name": "resnet_tiny"}, "text_encoder": {"name": "minilm"},
        "objective": {"name": "clip", "embed_dim": 16, "freeze_text": True, "max_length": 16},
        "data": {"dataset": "folder", "root": str(root), "size": [16, 16]},
        "train": {"max_steps": 2, "batch_size": 4, "ckpt_every": 2, "progress": False},
        "out": str(tmp_path / "clip")})
    assert (run / "dual").is_dir() and (run / "encoder").is_dir()
    assert json.loads((run / "status.json").read_text())["status"] == "complete"


@pytest.mark.parametrize(("rows", "said"), [
    ([{"image": "images/p0.png", "caption": "x"}], "has no column(s) ['text']"),
    ([{"image": "images/p0.png", "text": "x"}, {"image": "images/nope.png", "text": "y"}], "line 3"),
    ([{"image": "images/p0.png", "text": "x"}, {"image": "../outside.png", "text": "y"}], "line 3"),
    ([{"image": "images/p0.png", "text": "x"}, {"image": "images/p1.png", "text": "w" * 200_000}], "line 3"),
])
def test_bad_caption_tables_stop_with_one_line_naming_file_and_row(tmp_path, rows, said):
    root = write_pairs(tmp_path / "pairs", n=2, rows=rows)
    (tmp_path / "outside.png").write_bytes((root / "images/p0.png").read_bytes())
    with pytest.raises(InputFileError) as e:
        _pairs(root)
    first, *hint = str(e.value).splitlines()   # one line, then the project's "hint: ..." line
    assert said in first and "captions.csv" in first and len(hint) <= 1


def test_cli_says_one_line_for_a_bad_caption_row(tmp_path, capsys):
    root = write_pairs(tmp_path / "pairs", n=2, rows=[{"image": "images/gone.png", "text": "x"}])
    rc = main(["pretrain", "configs/pretrain/clip_2d.yaml", "data.dataset=folder", f"data.root={root}",
               "data.size=[16,16]", "train.max_steps=1", f"out={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert rc != 0 and "captions.csv" in err and "line 2" in err and "Traceback" not in err
