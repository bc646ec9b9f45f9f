"""`mmfm segment` with several labelled structures: one label map (PNG / NIfTI) with the names in the JSON, from
repeated --box/--label or a --prompts file; mismatched prompts are one-line errors with exit status 2."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from mmfm.cli.main import main


def _two_discs(path, h=120, w=100):
    yy, xx = np.mgrid[:h, :w]
    a = (yy - 35) ** 2 + (xx - 30) ** 2 <= 14 ** 2
    b = (yy - 85) ** 2 + (xx - 65) ** 2 <= 16 ** 2
    img = np.full((h, w), 40, np.uint8)
    img[a], img[b] = 210, 150
    Image.fromarray(img).save(path)
    return a, b


def _box(disc):
    rows, cols = np.nonzero(disc)
    return [str(v) for v in (cols.min() - 2, rows.min() - 2, cols.max() + 2, rows.max() + 2)]


def _dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def test_two_labelled_boxes_give_one_label_map_with_named_labels(tmp_path, capsys):
    a, b = _two_discs(tmp_path / "img.png")
    out = tmp_path / "labels.png"
    assert main(["segment", str(tmp_path / "img.png"), "--box", *_box(a), "--label", "left", "--box", *_box(b),
                 "--label", "right", "--out", str(out), "--quiet"]) == 0
    labels = np.asarray(Image.open(out))
    assert labels.shape == a.shape and set(np.unique(labels)) == {0, 1, 2}
    assert _dice(labels == 1, a) > 0.85 and _dice(labels == 2, b) > 0.85
    rec = json.loads((tmp_path / "labels.json").read_text())
    assert rec["labels"] == {"1": "left", "2": "right"} and rec["mask"]["label_values"] == rec["labels"]
    assert [s["prompt"]["box"] for s in rec["structures"]] == [[float(v) for v in _box(d)] for d in (a, b)]
    assert rec["structures"][1]["foreground_pixels_in_label_map"] == int((labels == 2).sum())
    assert "1 = left" in capsys.readouterr().out
    # the same from a prompts file, the second structure with a point inside it as well
    rows, cols = np.nonzero(b)
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([{"label": "left", "box": [float(v) for v in _box(a)]},
                                   {"label": "right", "box": [float(v) for v in _box(b)],
                                    "points": [[float(cols.mean()), float(rows.mean())]]}]))
    assert main(["segment", str(tmp_path / "img.png"), "--prompts", str(prompts), "--out",
                 str(tmp_path / "p.png"), "--quiet"]) == 0
    again = np.asarray(Image.open(tmp_path / "p.png"))
    assert np.array_equal(again == 1, labels == 1) and _dice(again == 2, b) > 0.85


def test_a_single_box_is_unchanged_and_bad_labels_are_refused(tmp_path, capsys):
    a, b = _two_discs(tmp_path / "img.png")
    assert main(["segment", str(tmp_path / "img.png"), "--box", *_box(a), "--out", str(tmp_path / "one.png"),
                 "--quiet"]) == 0
    one = np.asarray(Image.open(tmp_path / "one.png"))
    assert set(np.unique(one)) == {0, 255} and "labels" not in json.loads((tmp_path / "one.json").read_text())
    bad = [(["--box", *_box(a), "--box", *_box(b)], "one label each"),
           (["--box", *_box(a), "--label", "x", "--box", *_box(b), "--label", "x"], "its own non-empty label"),
           (["--box", *_box(a), "--label", "x", "--point", "3", "3"], "--point belongs to one structure"),
           (["--prompts", str(tmp_path / "missing.json")], "cannot read it as JSON"),
           (["--prompts", str(tmp_path / "one.json"), "--box", *_box(a)], "not combined")]
    for args, message in bad:
        capsys.readouterr()
        assert main(["segment", str(tmp_path / "img.png"), *args, "--out", str(tmp_path / "bad.png")]) == 2, args
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
        assert not (tmp_path / "bad.png").exists()
