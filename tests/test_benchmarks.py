"""The benchmarks run and compare fairly: each side's precision is found by trying (fp32 where the asked one fails,
and why), a fraction of an emulated peak is never printed, every results record carries its provenance, and each
benchmark runs to its ``ratio:`` line on a machine with native bf16 and on one without (``MMFM_NATIVE_BF16``
simulates the other kind). Benchmarks are never timed here: only that they run and what they write."""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


@pytest.fixture()
def common(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module("_common")


def test_a_failing_precision_falls_back_to_fp32_and_says_why(common):
    def step(p: str) -> None:
        if p == "bf16":
            raise RuntimeError("Index put requires the source and destination dtypes match\nmore")
    used, why = common.working_precision("bf16", step, torch.device("cpu"))
    assert used == "fp32" and why.startswith("bf16 failed (Index put requires") and "more" not in why
    assert common.working_precision("bf16", lambda p: None, torch.device("cpu"), compare_fp32=False) == ("bf16", "")
    assert common.working_precision("fp32", lambda p: None, torch.device("cpu")) == ("fp32", "")


def test_a_slower_low_precision_is_not_the_best(common):
    import time

    def step(p: str) -> None:
        time.sleep(0.05 if p == "bf16" else 0.0)
    used, why = common.working_precision("bf16", step, torch.device("cpu"), compare_fp32=True)
    assert used == "fp32" and "slower" in why
    assert common.working_precision("bf16", step, torch.device("cpu"), compare_fp32=False)[0] == "bf16"


def test_no_fraction_of_an_emulated_peak(common, monkeypatch):
    cpu, peaks = torch.device("cpu"), {"fp32": 100.0, "bf16": 2.0}
    monkeypatch.setattr(common, "cpu_has_native_bf16", lambda: False)
    frac, why = common.peak_fraction(50.0, "bf16", cpu, peaks)
    assert frac is None and "emulated" in why
    assert common.peak_fraction(50.0, "fp32", cpu, peaks) == (0.5, "")
    monkeypatch.setattr(common, "cpu_has_native_bf16", lambda: True)
    assert common.peak_fraction(1.0, "bf16", cpu, peaks) == (0.5, "")


def test_medians_need_three_rounds(common):
    assert common.check_rounds(3) == 3
    with pytest.raises(SystemExit, match="fewer than 3"):
        common.check_rounds(2)


def test_provenance_names_the_code_the_machine_and_the_precision(common, monkeypatch, tmp_path):
    from mmfm.evaluation.results import ResultRecord

    monkeypatch.setattr(sys, "argv", [str(BENCH / "mae_step.py"), "--json", str(tmp_path / "b.json")])
    prov = common.provenance(torch.device("cpu"), {"mmfm": "bf16", "monai": "fp32"}, ["monai: bf16 failed", ""])
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", prov["commit"]) and prov["torch"] == torch.__version__
    assert prov["device"].startswith("cpu") and prov["precision"] == {"mmfm": "bf16", "monai": "fp32"}
    assert set(prov["cpu_flags"]) <= set(common.FLAGS) and prov["notes"] == ["monai: bf16 failed"]
    assert prov["command"] == "python benchmarks/mae_step.py --json b.json"   # no machine-specific paths
    common.write_records(str(tmp_path / "b.json"), [ResultRecord("t", "d", "bench", "m", "x", 1.0, 0)], prov)
    (rec,) = json.loads((tmp_path / "b.json").read_text())
    assert rec["value"] == 1.0 and rec["provenance"] == prov


TINY = {
    "mae_step": ["--batch", "2", "--img", "32", "--patch", "8", "--steps", "1", "--rounds", "3"],
    "clip_step": ["--batch", "4", "--img", "32", "--steps", "3", "--loss-rounds", "3"],
    "promptable": ["--slices", "3", "--propagate-slices", "2"],
}


@pytest.mark.slow
@pytest.mark.parametrize("native", ["1", "0"], ids=["native-bf16", "no-bf16"])
@pytest.mark.parametrize("name", list(TINY))
def test_benchmark_runs_to_its_ratio_line(name, native, tmp_path):
    """Tiny settings, both kinds of machine; the output says the flags and precisions, the records carry their
    provenance. (Minutes in all on 2 cores: the benchmarks' own equality checks and peaks run too.)"""
    env = dict(os.environ, MMFM_NATIVE_BF16=native)
    out = tmp_path / f"{name}.json"
    run = subprocess.run([sys.executable, str(BENCH / f"{name}.py"), *TINY[name], "--device", "cpu",
                          "--json", str(out)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.strip().splitlines()
    assert re.fullmatch(r"ratio: \d+\.\d\d", lines[-1]), lines[-3:]
    assert "cpu flags: avx2" in run.stdout and "avx512_bf16" in run.stdout and "amx_bf16" in run.stdout
    asked = "bf16" if native == "1" else "fp32"
    assert f"precision asked: best ({asked} here)" in run.stdout
    records = json.loads(out.read_text())
    prov = records[0]["provenance"]
    assert all(r["provenance"] == prov for r in records)
    assert prov["native_bf16"] == (native == "1") and prov["precision"]["asked"] == f"best ({asked} here)"
    used = {k: v for k, v in prov["precision"].items() if k != "asked"}
    assert set(used.values()) <= {asked, "fp32"} and all(k in run.stdout for k in used)
    for side, p in used.items():
        if p != asked:   # a side that did not run the asked precision says why
            assert any(n.startswith(f"{side}: {asked}") for n in prov["notes"]), prov["notes"]
    if native == "0":   # no fraction of an emulated bf16 peak anywhere
        assert not any(r["metric"].startswith("fraction") and prov["precision"].get(r["method"]) == "bf16"
                       for r in records)


@pytest.mark.long
def test_app_second_prompt_benchmark_runs_to_its_ratio_line(tmp_path):
    """The app's second click against the decoder alone: both timed, no click embeds the slice again."""
    out = tmp_path / "app.json"
    run = subprocess.run([sys.executable, str(BENCH / "app_second_prompt.py"), "--rounds", "3", "--json", str(out)],
                         capture_output=True, text=True, cwd=ROOT, timeout=1200)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.strip().splitlines()
    assert re.fullmatch(r"ratio: \d+\.\d\d", lines[-1]), lines[-3:]
    assert "embedded: 1 " in run.stdout
    values = {r["metric"]: r["value"] for r in json.loads(out.read_text())}
    assert values["slices embedded"] == 1
    assert all(values[k] > 0 for k in ("s first click", "s per second click (app, HTTP)",
                                       "s per second prompt (decoder)"))
