"""The built-in corpus, built from real registry data: its card matches its files; splits do not leak."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from mmfm.data.catalog import load_dataset
from mmfm.data.sources.mini_reader import iter_reports, load_mini_arrays
from mmfm.data.splits import check_no_leakage

pytestmark = pytest.mark.realdata


def test_card_counts_match_files(mini_root):
    card = json.loads((mini_root / "card.json").read_text())
    for name in ("slices2d", "patches2d", "crops3d"):
        d = load_mini_arrays(mini_root, name)
        counts = card["sets"][name]["counts"]
        assert counts["total"] == len(d["split"]) == len(d["image"])
        for split in ("train", "val", "test"):
            keep = d["split"] == split
            assert counts[split]["n"] == int(keep.sum())
            assert counts[split]["by_modality"] == dict(Counter(d["modality"][keep].tolist()))
        assert list(d["image"].shape[1:]) == card["sets"][name]["shape"]
        assert np.isfinite(d["image"]).all()
    reports = list(iter_reports(mini_root))
    assert len(reports) == card["sets"]["reports"]["n"] == 3955
    assert sum(bool(r["findings"]) for r in reports) == 3425
    assert (mini_root / "card.md").read_text().startswith("# Data card: mini")


def test_real_sources_present(mini_root):
    card = json.loads((mini_root / "card.json").read_text())
    assert {"lits", "colin27", "mni152", "single_images", "iu_reports"} <= set(card["sources"])
    d = load_mini_arrays(mini_root, "slices2d")
    lits = d["patient_id"] == "lits-117"
    assert lits.sum() > 100 and set(np.unique(d["mask"][lits])) == {0, 1, 2}
    assert {"CT", "MR", "XR"} <= set(d["modality"].tolist())
    assert any("tumour" in c for c in d["caption"][lits])


def test_splits_do_not_leak(mini_root):
    for name in ("slices2d", "patches2d", "crops3d"):
        d = load_mini_arrays(mini_root, name)
        check_no_leakage(d["split_group"].tolist(), d["split"].tolist())
        # within a volume, train / val / test slabs do not overlap along the slice axis
        for pid in np.unique(d["patient_id"]):
            sel = d["patient_id"] == pid
            ranges = {s: d["slice_index"][sel & (d["split"] == s)] for s in ("train", "val", "test")}
            ranges = {s: (r.min(), r.max()) for s, r in ranges.items() if len(r)}
            spans = sorted(ranges.values())
            assert all(a[1] < b[0] for a, b in zip(spans, spans[1:])), (name, pid, ranges)
    splits = {}
    for r in iter_reports(mini_root):
        assert splits.setdefault(r["uid"], r["split"]) == r["split"]


def test_mini_through_the_catalog(mini_root):
    s = load_dataset("mini", mini_root, set="slices2d", split="val")[0]
    assert s["mask"].shape == (1, 128, 128) and s["texts"]["caption"]
    r = load_dataset("mini", mini_root, set="reports", split="test")
    assert len(r) == 396 and r[0]["report"].text


def test_data_size_resizes_mini_and_unset_keeps_the_stored_size(mini_root):
    """data.size is honoured for mini too (it used to be ignored silently); unset, mini keeps its stored size."""
    from mmfm.data import spec
    from mmfm.errors import ConfigError
    from mmfm.workflows.config import load_config

    base = [f"data.root={mini_root}", "data.set=slices2d", "data.options={patient_id: lits-117}"]
    stored = spec.mini_arrays(load_config(None, base).data, "train")
    assert stored["image"].shape[2:] == (128, 128)
    small = spec.mini_arrays(load_config(None, [*base, "data.size=[32,40]"]).data, "train")
    assert small["image"].shape == (len(stored["image"]), 1, 32, 40) and small["mask"].shape[2:] == (32, 40)
    assert set(np.unique(small["mask"])) <= set(np.unique(stored["mask"]))           # nearest: no new labels
    assert abs(float(small["image"].mean()) - float(stored["image"].mean())) < 0.01     # area: the mean is kept
    cfg = load_config(None, [*base, "data.size=[32,40]"]).data
    assert spec.contract(cfg, None)["shape"] == [1, 32, 40]
    with pytest.raises(ConfigError, match="is 3D but mini/slices2d is 2D"):
        spec.mini_arrays(load_config(None, [*base, "data.size=[8,8,8]"]).data, "train")
