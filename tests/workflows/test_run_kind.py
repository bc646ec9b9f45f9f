"""`run_kind`: one owner for "what is this run folder?", from what the run recorded in its checkpoint."""

from __future__ import annotations

import json

from mmfm.workflows.run_kind import run_kind


def _run(tmp_path, name, run_info):
    ckpt = tmp_path / name / "checkpoints" / "last"
    ckpt.mkdir(parents=True)
    (ckpt / "state.json").write_text(json.dumps({"step": 1, "run_info": run_info}))
    return tmp_path / name


def test_a_run_is_known_by_what_it_recorded(tmp_path):
    assert run_kind(_run(tmp_path, "a", {"kind": "promptable_segmentation", "task": "x"})) == "promptable_segmentation"
    assert run_kind(_run(tmp_path, "b", {"task": "segmentation"})) == "segmentation"          # before "kind"
    assert run_kind(_run(tmp_path, "c", {"task": "report_generation", "assistant": {"bridge": "llava"}})) == \
        "assistant"
    assert run_kind(_run(tmp_path, "d", {"kind": "pretrain", "config": {}})) == "pretrain"
    (tmp_path / "e" / "dual").mkdir(parents=True)
    assert run_kind(tmp_path / "e") == "image_text"
    # the text "promptable" in a config is not what decides (the old `mmfm serve` searched config.yaml for it)
    cls = _run(tmp_path, "f", {"task": "classification"})
    (cls / "config.yaml").write_text("note: not a promptable model\n")
    assert run_kind(cls) == "classification"
    assert run_kind(tmp_path / "missing") is None and run_kind(tmp_path / "e" / "dual") is None
