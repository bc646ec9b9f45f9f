"""The labeller's check is split: rules are developed on the dev part of the IU reports and scored on the held-out
part; the part of a report is fixed by its id, and the rule developer sees the dev disagreements only."""

from __future__ import annotations

import json

from mmfm.data.labeller import report_part
from mmfm.workflows.vision_language import run_labeller_check


def test_a_report_keeps_its_part_and_the_parts_are_halves():
    ids = [f"CXR{i}" for i in range(1, 4001)]
    parts = [report_part(u) for u in ids]
    assert parts == [report_part(u) for u in ids]                       # deterministic
    assert dict(zip(reversed(ids), reversed(parts))) == dict(zip(ids, parts))   # order plays no part
    held = parts.count("held_out") / len(parts)
    assert 0.45 < held < 0.55 and set(parts) == {"dev", "held_out"}
    assert report_part("CXR1", held_out=0.0) == "dev" and report_part("CXR1", held_out=1.0) == "held_out"


def test_the_check_scores_each_part_and_shows_only_dev_disagreements(tmp_path):
    rows = []
    for i in range(200):   # effusion in MeSH for every third report; the text says so for every other one
        uid = f"CXR{i}"
        eff = i % 3 == 0
        rows.append({"uid": uid, "findings": "Small left pleural effusion." if i % 2 == 0 else "Lungs are clear.",
                     "impression": "", "mesh": ["Pleural Effusion/left/small"] if eff else ["normal"],
                     "split": "train"})
    (tmp_path / "reports.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recs = run_labeller_check(tmp_path / "out", tmp_path, min_support=20)
    got = {(r.task, r.split, r.metric): r.value for r in recs}
    for part in ("dev", "held_out"):
        mine = [r for r in rows if report_part(r["uid"]) == part]
        support = sum(r["split"] == "train" and r["mesh"][0].startswith("Pleural") for r in mine)
        tp = sum(int(r["uid"][3:]) % 6 == 0 for r in mine)                 # said and indexed: i % 6 == 0
        said = sum(int(r["uid"][3:]) % 2 == 0 for r in mine)
        assert got[("labeller/effusion", part, "support")] == support
        assert got[("labeller/effusion", part, "reports")] == len(mine)
        assert abs(got[("labeller/effusion", part, "precision")] - tp / said) < 1e-9
        assert abs(got[("labeller/effusion", part, "recall")] - tp / support) < 1e-9
    shown = [json.loads(line) for line in (tmp_path / "out" / "disagreements_dev.jsonl").read_text().splitlines()]
    assert shown and {report_part(d["uid"]) for d in shown} == {"dev"}
    assert all(r.provenance and r.provenance["precision"]["train"] is None for r in recs)
