"""mini's generated captions carry more than the label: position, lesion size from the mask, tissue; the wording is
fixed by the sample's identity, and the label-only caption stays beside it."""

from __future__ import annotations

import numpy as np

from mmfm.data.sources import mini_captions as cap
from mmfm.data.sources.mini_reader import load_mini_arrays
from mmfm.tasks.zero_shot import DEFAULT_TEMPLATES


def test_a_tumour_slice_names_its_size_and_position_and_keeps_the_label_caption():
    small, label = cap.lits_slice("lits-117:3", "first third", 210)
    large, _ = cap.lits_slice("lits-117:3", "last third", 1500)
    assert "small" in small and "210 pixels" in small and "first third" in small
    assert "large" in large and "last third" in large
    assert label == "Axial CT slice of the abdomen showing the liver with a tumour."
    assert "no liver tumour" in cap.lits_slice("lits-117:3", "middle third", 5)[0]


def test_thirds_and_size_bins():
    assert [cap.third(z, 0, 127, cap.LITS_THIRDS) for z in (0, 42, 43, 84, 85, 127)] == \
        ["first third", "first third", "middle third", "middle third", "last third", "last third"]
    assert [cap.size_word(a, cap.TUMOUR_AREA_BINS) for a in (20, 599, 600, 1199, 1200)] == \
        ["small", "small", "medium", "medium", "large"]


def test_wording_is_deterministic_varied_and_not_a_prompt_template():
    keys = [f"mni152:{z}" for z in range(40)]
    first = [cap.brain_slice(k, "middle third", True)[0] for k in keys]
    assert first == [cap.brain_slice(k, "middle third", True)[0] for k in keys]   # same key, same words
    assert len(set(first)) == 3                                                     # all three wordings occur
    prompts = {t.format(name=n).lower() for t in DEFAULT_TEMPLATES for n in ("liver", "liver tumour")}
    assert not prompts & {cap.patch(f"k{i}", "CT", "liver", "liver", "first third")[0].lower() for i in range(30)}


def test_built_mini_captions_follow_the_masks(mini_root):
    d = load_mini_arrays(mini_root, "slices2d")
    lits = d["patient_id"] == "lits-117"
    tum = np.array([(m == 2).sum() for m in d["mask"][lits]])
    caps = d["caption"][lits]
    for c, t in zip(caps, tum):       # every tumour slice names a size bin and its area in pixels
        assert ("no liver tumour" in c) == (t < 20)
        if t >= 20:
            assert cap.size_word(t, cap.TUMOUR_AREA_BINS) in c and f"{round(int(t), -1)} pixels" in c
    positions = {w for c in caps for w in cap.LITS_THIRDS if w in c}
    assert positions == set(cap.LITS_THIRDS)              # positions differ across the volume's slices
    assert set(d["caption_label"][lits]) <= {"Axial CT slice of the abdomen showing the liver with a tumour.",
                                             "Axial CT slice of the abdomen showing the liver."}
    for name in ("patches2d", "crops3d"):
        s = load_mini_arrays(mini_root, name, "train")
        assert len(set(s["caption"])) > len(set(s["caption_label"]))


def test_an_older_mini_build_is_not_current(mini_root, tmp_path):
    import json
    import shutil

    from mmfm.data.sources.mini import is_current_mini, is_mini_folder

    assert is_current_mini(mini_root)
    old = tmp_path / "mini"
    old.mkdir()
    card = json.loads((mini_root / "card.json").read_text())
    (old / "card.json").write_text(json.dumps({**card, "version": 1}))   # v1: label-only captions
    shutil.copy(mini_root / "crops3d.npz", old / "crops3d.npz")
    assert is_mini_folder(old) and not is_current_mini(old)              # build_mini rebuilds it
