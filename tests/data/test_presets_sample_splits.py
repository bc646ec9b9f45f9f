"""Modality presets, the sample schema, and leak-free splits."""

from __future__ import annotations

import numpy as np
import pytest

from mmfm.data.modality import canonical_modality
from mmfm.data.presets import PRESETS, Preset, default_preset, get_preset
from mmfm.data.sample import Ids, Image, Report, early_fuse, make_sample
from mmfm.data.splits import check_no_leakage, group_split
from mmfm.errors import ConfigError, SampleError, UnknownNameError


@pytest.mark.parametrize("name,width,level", [("ct_abdomen", 400, 40), ("ct_lung", 1500, -600),
                                              ("ct_bone", 1800, 400), ("ct_brain", 80, 40)])
def test_ct_windows(name, width, level):
    hu = np.array([[level - width, level - width / 2, level, level + width / 2, level + width]], np.float32)
    out = get_preset(name)(hu)
    np.testing.assert_allclose(out, [[0, 0, 0.5, 1, 1]], atol=1e-6)


def test_mri_zscore_over_foreground():
    x = np.zeros((1, 10, 10), np.float32)
    x[0, 2:8, 2:8] = np.arange(1, 37).reshape(6, 6)
    out = get_preset("mri_zscore")(x)
    fg = x != 0
    assert abs(out[fg].mean()) < 1e-5 and abs(out[fg].std() - 1) < 1e-2 and (out[~fg] == 0).all()


def test_rgb_preset_and_roundtrip():
    p = get_preset("fundus")
    x = np.full((3, 4, 4), 255.0, np.float32)
    np.testing.assert_allclose(p(x)[:, 0, 0], (1 - np.array(p.mean)) / np.array(p.std), rtol=1e-5)
    for preset in PRESETS.values():
        assert Preset.from_dict(preset.to_dict()) == preset
    assert default_preset("CR").name == "xray" and default_preset("mri").name == "mri_percentile"


def test_unknown_names():
    with pytest.raises(UnknownNameError, match="ct_abdomen"):
        get_preset("ct_abdomin")
    with pytest.raises(UnknownNameError):
        canonical_modality("ultrasoundx")


def test_sample_schema_and_fusion():
    ct = Image(np.zeros((1, 8, 8, 4), np.float32), "CT", np.diag([0.7, 0.7, 2.5, 1]))
    pet = Image(np.ones((1, 8, 8, 4), np.float32), "PT", np.diag([0.7, 0.7, 2.5, 1]))
    s = make_sample({"CT": ct, "PT": pet}, mask=np.zeros((1, 8, 8, 4), np.int64), labels={"lesion": 1},
                    report=Report(text="FINDINGS: x", findings="x"), ids=Ids("s1", patient_id="p1", slice_index=3))
    assert early_fuse(s["images"], ["CT", "PT"]).shape == (2, 8, 8, 4)
    assert ct.spacing == pytest.approx((0.7, 0.7, 2.5)) and ct.orientation == "RAS"
    with pytest.raises(SampleError, match="missing modalities"):
        early_fuse(s["images"], ["CT", "MR"])


def test_group_split_has_no_leakage_and_follows_fractions():
    rng = np.random.default_rng(1)
    groups = [f"p{int(g)}" for g in rng.integers(0, 60, size=600)]
    splits = group_split(groups, {"train": 0.7, "val": 0.15, "test": 0.15}, seed=3)
    check_no_leakage(groups, splits)
    frac = {s: splits.count(s) / len(splits) for s in ("train", "val", "test")}
    assert abs(frac["train"] - 0.7) < 0.06 and abs(frac["test"] - 0.15) < 0.06
    assert splits == group_split(groups, {"train": 0.7, "val": 0.15, "test": 0.15}, seed=3)
    with pytest.raises(ConfigError, match="leakage"):
        check_no_leakage(["a", "a"], ["train", "test"])
    with pytest.raises(ConfigError):
        group_split(["a"], {"train": 0.5, "test": 0.2})
