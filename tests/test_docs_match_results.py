"""The committed docs are what scripts/doc_tables.py writes from docs/results/*.json today, and no result number is
written by hand in their prose: a number with a decimal point outside the generated blocks (and outside code) must
be a value that some results file holds, at the precision the prose gives."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# a decimal number standing alone: not a version (3.10.1), part of a name (ViT-B/16, resnet3.5x) or a path
NUMBER = re.compile(r"(?<![\w.\-/])(\d+\.\d+)(?![\w.]*\d)")


def _module():
    spec = importlib.util.spec_from_file_location("doc_tables_check", ROOT / "scripts" / "doc_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _values(obj, out: set[float]) -> set[float]:
    """Every number of a results file, except its records' provenance (a date or flag is not a result)."""
    if isinstance(obj, bool):
        return out
    if isinstance(obj, (int, float)):
        out.add(float(obj))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if k != "provenance":
                _values(v, out)
    elif isinstance(obj, list):
        for v in obj:
            _values(v, out)
    return out


def prose(text: str, block: re.Pattern) -> str:
    """``text`` without its generated blocks, fenced code and inline code (settings, commands)."""
    text = block.sub("", text)
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def unbacked_numbers(text: str, values: set[float], block: re.Pattern) -> list[str]:
    """Decimal numbers of ``text``'s prose that no value rounds to (as a fraction or as a percentage)."""
    missing = []
    for m in NUMBER.finditer(prose(text, block)):
        x, half = float(m.group(1)), 0.5 * 10 ** -len(m.group(1).split(".")[1]) + 1e-12
        if not any(abs(v - x) <= half or abs(100 * v - x) <= half for v in values):
            missing.append(m.group(1))
    return missing


def test_committed_docs_equal_the_generators_output_and_check_writes_nothing():
    before = {p: p.read_bytes() for p in _module().DOCS}
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "doc_tables.py"), "write", "--check"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr       # names each stale doc and block
    assert {p: p.read_bytes() for p in before} == before


def test_check_names_a_stale_block_and_leaves_it(tmp_path, monkeypatch):
    dt = _module()
    monkeypatch.setattr(dt, "RESULTS", tmp_path)
    monkeypatch.setattr(dt, "ROOT", tmp_path)
    (tmp_path / "labeller.json").write_text(json.dumps([
        {"task": "labeller/effusion", "dataset": "d", "split": part, "method": "rules", "metric": m, "value": v,
         "seed": 0, "label_fraction": 1.0}
        for part in ("dev", "held_out") for m, v in (("support", 30), ("precision", 0.8), ("recall", 0.9),
                                                     ("F1", 0.847), ("reports", 100))]))
    doc = tmp_path / "doc.md"
    doc.write_text("a\n<!-- table:labeller -->\n| pasted | 0.999 |\n<!-- /table:labeller -->\n")
    monkeypatch.setattr(dt, "DOCS", [doc])
    assert dt.check() == ["doc.md: labeller"] and "0.999" in doc.read_text()
    dt.write()
    assert dt.check() == [] and "| effusion | 30 | 0.847 | 30 | 0.800 | 0.900 | 0.847 |" in doc.read_text()


# Decimal numbers in prose that are facts about inputs, not results, each with its reason: (doc, number, count).
FACTS = {
    ("downstream.md", "1.5", 3): "the registration test's target grid (1.5 mm voxels), MedSAM's training set "
                                 "(1.5 M image-mask pairs, Ma et al. 2024) and the former propagation's box margin "
                                 "(1.5 voxels, a constant of the old code)",
    ("vision_pretraining.md", "1.5", 1): "MedSAM's training set (1.5 M image-mask pairs)",
}


def test_no_result_number_in_the_docs_prose_is_missing_from_the_results_files():
    dt = _module()
    values: set[float] = set()
    for p in sorted(dt.RESULTS.glob("*.json")):
        _values(json.loads(p.read_text()), values)
    bad = {p.name: found for p in sorted((ROOT / "docs").glob("*.md"))
           if (found := unbacked_numbers(p.read_text(), values, dt.BLOCK))}
    for (doc, number, count) in FACTS:   # a listed fact must still be there, exactly as often: no blanket pass
        # counted in the prose itself: a results file may hold a value that rounds to it (then it is not "bad")
        raw = unbacked_numbers((ROOT / "docs" / doc).read_text(), set(), dt.BLOCK)
        assert raw.count(number) == count, (doc, number, raw)
        bad[doc] = [n for n in bad.get(doc, []) if n != number]
        if not bad[doc]:
            del bad[doc]
    assert not bad, f"numbers written by hand (move them into a generated block, or delete them): {bad}"


def test_the_prose_check_catches_a_pasted_number_and_ignores_blocks_and_code():
    block = _module().BLOCK
    text = ("Dice was 0.812 here.\n<!-- table:x -->\n| 0.555 |\n<!-- /table:x -->\n`lr=0.003` and\n```\n1.25\n```\n"
            "Python 3.10.1, ResNet-1.5x, 93.5% of it.\n")
    assert unbacked_numbers(text, {0.8121, 0.935}, block) == []        # 0.812 and 93.5 (%) are backed
    assert unbacked_numbers(text, {0.935}, block) == ["0.812"]
    assert unbacked_numbers(text, {0.8121}, block) == ["93.5"]


def test_the_killed_client_table_names_the_sites_its_mean_covers(tmp_path, monkeypatch):
    dt = _module()
    monkeypatch.setattr(dt, "RESULTS", tmp_path)
    base = {"method": "killed-client", "seed": 0, "label_fraction": 1.0}
    recs = [{**base, "task": "federation", "dataset": "d", "split": f"round {k}", "metric": "sites_trained",
             "value": 2 if k < 3 else 1} for k in (1, 2, 3)]
    recs += [{**base, "task": "classification", "dataset": ds, "split": "test", "metric": "balanced_accuracy",
              "value": 0.622} for ds in ("d@CT", "d")]
    (tmp_path / "adapt_federated_kill.json").write_text(json.dumps(recs))
    table = dt.render("adapt-federated-kill")
    assert "| sites that trained | 2 | 2 | 1 | - |" in table
    assert "| test balanced accuracy, mean over the sites that evaluated (CT) | - | - | - | 0.622 |" in table
    assert "overall" not in table
