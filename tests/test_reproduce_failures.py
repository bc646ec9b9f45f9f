"""A run that fails in a Python reproduce script is recorded as failed and shown as FAILED under its table, never
silently left out; the runs that finished are still tabulated, and the script's exit status says it failed."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import reproduce_runs  # noqa: E402  (the helper both scripts share)

# A stand-in for the mmfm executable: finishes a run (results.json, status.json, continual.json) unless its
# arguments name the method to fail, which exits 2 with mmfm's kind of one-line error.
FAKE_MMFM = '''#!{python}
import json, sys
from pathlib import Path
args = sys.argv[1:]
if any(a in args for a in {fail!r}):
    print("[mmfm] error: the forced failure of this test (hint: none)", file=sys.stderr)
    sys.exit(2)
out = Path(next(a for a in args if a.startswith("out="))[4:])
out.mkdir(parents=True, exist_ok=True)
method = next((a.split("=", 1)[1] for a in args if a.startswith("method=")), "m")
seed = int(next((a.split("=", 1)[1] for a in args if a.startswith("train.seed=")), 0))
recs = [{{"task": "classification", "dataset": "mini/patches2d", "split": split, "method": method, "metric": m,
          "value": v, "seed": seed, "label_fraction": 1.0}}
        for split in ("val", "test") for m, v in (("balanced_accuracy", 0.5 + seed / 10), ("ece", 0.1),
                                                  ("ece_unscaled", 0.2), ("brier", 0.3), ("brier_unscaled", 0.4),
                                                  ("temperature", 1.5))]
(out / "results.json").write_text(json.dumps(recs))
(out / "continual.json").write_text(json.dumps({{"mean_forgetting": 0.1, "final_mean": 0.4,
                                                 "oracle_mean_forgetting": 0.0, "routing_accuracy": [[1.0]]}}))
(out / "status.json").write_text(json.dumps({{"status": "complete"}}))
'''


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_under_test", ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture()
def isolated(tmp_path, monkeypatch):
    """The scripts' runs and results in tmp_path, the doc tables rendered from there (the repo is not touched)."""
    monkeypatch.setattr(reproduce_runs, "FAILURES", [])
    monkeypatch.setattr(reproduce_runs, "write_tables", lambda: None)
    dt = _load("doc_tables")
    monkeypatch.setattr(dt, "RESULTS", tmp_path / "results")

    def fake(fail: list[str]) -> str:
        exe = tmp_path / "mmfm"
        exe.write_text(FAKE_MMFM.format(python=sys.executable, fail=fail))
        exe.chmod(0o755)
        return str(exe)

    def script(name: str, fail: list[str]):
        mod = _load(name)
        monkeypatch.setattr(mod, "MMFM", fake(fail))
        monkeypatch.setattr(mod, "RUNS", tmp_path / "runs")
        monkeypatch.setattr(mod, "RESULTS", tmp_path / "results")
        monkeypatch.setattr(mod, "SEEDS", [0, 1])
        return mod

    return script, dt, reproduce_runs


def test_trust_calibration_lists_the_failed_encoder_under_its_table(isolated, tmp_path):
    script, dt, shared = isolated
    trust = script("reproduce_trust", ["encoder.name=vit_mini"])
    trust.calibration()
    recs = json.loads((tmp_path / "results" / "trust_calibration.json").read_text())
    failed = [r for r in recs if r["metric"] == "failed"]
    assert [(r["method"], r["seed"]) for r in failed] == [("vit_mini-scratch", 0), ("vit_mini-scratch", 1)]
    assert all("exit 2" in r["error"] and "forced failure" in r["error"] and r["value"] is None for r in failed)
    assert all(r.get("provenance") for r in recs)
    table = dt.render("trust-calibration")
    assert "| resnet_tiny-scratch | test | 0.550 ± 0.071 (n=2)" in table          # the runs that finished
    assert "vit_mini-scratch |" not in table                                     # no row of numbers for it...
    assert "2 run(s) FAILED" in table and "- FAILED: `vit_mini-scratch` seed 1" in table   # ...it is listed
    assert shared.exit_status() == 1


def test_adaptation_continual_records_the_failed_method_and_keeps_the_others(isolated, tmp_path):
    script, dt, shared = isolated
    adapt = script("reproduce_adaptation", ["continual.method=replay"])
    adapt.continual()
    recs = json.loads((tmp_path / "results" / "adapt_continual.json").read_text())
    failed = {(r["method"], r["seed"]) for r in recs if r["metric"] == "failed"}
    assert failed == {("continual-replay", 0), ("continual-replay", 1)}
    assert {r["method"] for r in recs if r["metric"] == "mean_forgetting"} == \
        {"continual-sequential", "continual-moe", "continual-moe-oracle"}
    table = dt.render("adapt-continual")
    assert "- FAILED: `continual-replay` seed 0" in table and "| continual-moe |" in table
    assert shared.exit_status() == 1


def test_nothing_failed_nothing_listed(isolated, tmp_path):
    script, dt, shared = isolated
    script("reproduce_trust", ["no-such-argument"]).calibration()
    assert "FAILED" not in dt.render("trust-calibration") and shared.exit_status() == 0


def test_collect_takes_the_failed_runs_a_shell_script_lists(isolated, tmp_path):
    _, dt, _ = isolated
    run = tmp_path / "eval"
    run.mkdir()
    rec = {"task": "classification/linear", "dataset": "mini/patches2d", "split": "test", "method": "m",
           "metric": "balanced_accuracy", "value": 0.5, "seed": 0, "label_fraction": 0.1}
    (run / "results.json").write_text(json.dumps([rec]))
    failed = dt.failed_record("classification/linear", "mini/patches2d", "simclr_2d", 0, "pretraining failed")
    (run / "failed.jsonl").write_text(json.dumps(failed) + "\n")
    dt.collect("vfm", str(run), ["test"])
    table = dt.render("label-efficiency")
    assert "| linear | m | 0.500 |" in table and "- FAILED: `simclr_2d` seed 0" in table
