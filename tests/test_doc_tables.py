"""Docs numbers come from result files: scripts/doc_tables.py rewrites every marked block, and no result number is
pasted outside one."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("doc_tables", ROOT / "scripts" / "doc_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_blocks_are_written_from_the_results_file(tmp_path, monkeypatch):
    dt = _module()
    monkeypatch.setattr(dt, "RESULTS", tmp_path)
    recs = [{"task": "section_matching", "dataset": "d", "split": "test", "method": m, "metric": k, "value": v,
             "seed": s, "label_fraction": 1.0}
            for m, k, v, s in [("minilm", "R@1", 0.07, 0), ("rsm", "R@1", 0.30, 0), ("rsm", "R@1", 0.40, 1),
                               ("rsm", "chance_R@1", 0.02, 0)]]
    (tmp_path / "section_matching.json").write_text(json.dumps(recs))
    doc = tmp_path / "doc.md"
    doc.write_text("x\n<!-- table:section-matching -->\nold pasted 0.999\n<!-- /table:section-matching -->\ny\n")
    monkeypatch.setattr(dt, "DOCS", [doc])
    dt.write()
    text = doc.read_text()
    assert "0.999" not in text and "| test | rsm | 0.350 ± 0.071 (n=2)" in text and "| test | minilm | 0.070" in text
    assert text.startswith("x\n") and text.endswith("y\n")
    (tmp_path / "section_matching.json").unlink()
    dt.write()
    assert "No results file" in doc.read_text()


def test_every_block_in_the_docs_has_a_generator_and_nothing_is_pasted():
    dt = _module()
    for path in dt.DOCS:
        text = path.read_text()
        for name in re.findall(r"<!-- table:([\w-]+) -->", text):
            assert name in dt.GENERATORS, (path, name)
        outside = dt.BLOCK.sub("", text)
        pasted = [ln for ln in outside.splitlines() if ln.startswith("|") and re.search(r"\d\.\d{3}", ln)]
        assert not pasted, (path, pasted[:3])
