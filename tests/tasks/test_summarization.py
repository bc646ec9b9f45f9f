"""Findings -> impression: the baselines against naive computations, the prompted model deterministic under greedy
decoding, and `mmfm summarize` end to end on mini's IU X-ray reports (MiniLM and the llama_tiny stand-in)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest
import torch

from mmfm.errors import ConfigError
from mmfm.tasks import summarization as summ


def test_most_frequent_impression_is_the_training_mode():
    train = ["No acute disease.", "No  acute disease.", "Cardiomegaly.", "Small effusion.", "No acute disease. "]
    mode = Counter(" ".join(t.split()) for t in train).most_common(1)[0][0]
    assert summ.most_frequent_impression(train, 3) == [mode] * 3 == ["No acute disease."] * 3
    with pytest.raises(ConfigError, match="no impression"):
        summ.most_frequent_impression(["", "  "], 2)


def test_last_sentence_copies_the_findings_last_sentence():
    findings = ["The heart is normal. The lungs are clear.", "Large effusion!  Possible mass?", "One sentence",
                ""]
    assert summ.last_sentence(findings) == ["The lungs are clear.", "Possible mass?", "One sentence", ""]


def _bag_of_letters(texts):
    """A real (if crude) text embedding: letter counts."""
    return torch.tensor([[t.lower().count(c) for c in "abcdefghijklmnopqrstuvwxyz"] for t in texts],
                        dtype=torch.float32)


def test_nearest_neighbour_matches_a_brute_force_search():
    train_f = ["heart enlarged", "lungs clear no effusion", "pneumothorax on the left", "zzz"]
    train_i = ["Cardiomegaly.", "Normal chest.", "Left pneumothorax.", "Odd."]
    queries = ["the heart is enlarged", "no effusion, lungs clear", "left sided pneumothorax"]
    got = summ.nearest_neighbour_impressions(_bag_of_letters, train_f, train_i, queries)
    bank, q = _bag_of_letters(train_f), _bag_of_letters(queries)
    expected = []
    for row in q:
        cos = [float(torch.dot(row, b) / (row.norm() * b.norm())) for b in bank]
        expected.append(train_i[max(range(len(cos)), key=cos.__getitem__)])
    assert got == expected == ["Cardiomegaly.", "Normal chest.", "Left pneumothorax."]
    with pytest.raises(ConfigError, match="one impression per training report"):
        summ.nearest_neighbour_impressions(_bag_of_letters, train_f, train_i[:2], queries)


def test_prompted_impressions_are_deterministic_one_line_answers():
    from mmfm.tasks.assistant import GenerationOptions
    from mmfm.workflows.chat import load_assistant

    bot = load_assistant("llama_tiny", precision="fp32")
    findings = ["The heart is normal. The lungs are clear.", "Large right pleural effusion."]
    options = GenerationOptions(max_new_tokens=12)
    seen = []
    first = summ.prompted_impressions(bot, findings, options, progress=seen.append)
    assert first == summ.prompted_impressions(bot, findings, options)          # greedy: the same every time
    assert len(first) == 2 and all("\n" not in t for t in first) and seen == [1, 2]
    chat = summ.prompt(findings[1])
    assert chat[0]["role"] == "user" and "Large right pleural effusion." in chat[0]["content"]
    assert summ.prompt("a {b} c.", "Findings: {findings}")[0]["content"] == "Findings: a {b} c."   # no format()
    with pytest.raises(ConfigError, match="no {findings} field"):
        summ.prompt("x", "Summarise the report.")


@pytest.mark.long      # MiniLM embeds the 2,732 training findings (about a minute on 2 cores)
def test_summarize_scores_every_method_on_held_out_reports(mini_root, tmp_path):
    import mmfm

    out = tmp_path / "summ"
    records = mmfm.summarize(mini_root, model="llama_tiny", max_new_tokens=8, max_reports=6, splits=["val"],
                             out=out, overrides=["train.precision=fp32", "train.progress=false"])
    methods = {r.method for r in records}
    assert methods == {"most frequent impression (no model)", "last sentence of the findings (no model)",
                       "nearest-neighbour impression (minilm)", "llama_tiny prompted (no training)"}
    for m in methods:
        got = {r.metric: r.value for r in records if r.method == m}
        assert {"BLEU-4", "ROUGE-L", "CIDEr-D", "reports"} <= set(got) and got["reports"] == 6
        assert 0 <= got["ROUGE-L"] <= 1
    rows = [json.loads(line) for line in (out / "impressions_val_last_sentence.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(r["generated"] == summ.last_sentence([r["findings"]])[0] for r in rows)
    saved = json.loads((out / "results.json").read_text())
    assert {r["method"] for r in saved} == methods and {r["split"] for r in saved} == {"val"}
    assert (out / "report.md").exists() and json.loads((out / "status.json").read_text())["status"] == "complete"


def test_summarize_refuses_the_bank_split_and_unknown_methods(tmp_path):
    import mmfm

    with pytest.raises(ConfigError, match="retrieve from"):
        mmfm.summarize(splits=["train"], methods=["last_sentence"], out=tmp_path / "a")
    with pytest.raises(ConfigError, match="unknown option") as e:
        mmfm.summarize(methods=["last_sentense"], out=tmp_path / "b")
    assert "last_sentence" in e.value.hint
    r = subprocess.run([sys.executable, "-m", "mmfm.cli.main", "summarize", "--methods", "copy", "--out",
                        str(tmp_path / "c")], capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "most_frequent" in r.stdout + r.stderr


def test_summarize_reads_your_reports_from_a_csv(tmp_path):
    """A user's reports (MIMIC-III's layout: the report in TEXT), split by patient; the baselines that need no
    model, scored against each report's own impression."""
    import csv

    import mmfm

    findings = ["The heart is normal in size. The lungs are clear.", "Small right pleural effusion. Heart normal.",
                "Cardiomegaly is present. No pneumothorax."]
    impressions = ["No acute disease.", "Small right effusion.", "Cardiomegaly."]
    with open(tmp_path / "notes.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ROW_ID", "SUBJECT_ID", "TEXT"])
        for i in range(60):
            w.writerow([i, 1000 + i, f"FINDINGS: {findings[i % 3]}\n\nIMPRESSION: {impressions[i % 3]}"])
    out = tmp_path / "run"
    records = mmfm.summarize(tmp_path, dataset="MIMIC-III", methods=["most_frequent", "last_sentence"], out=out,
                             overrides=["data.options.file=notes.csv"])
    rows = [json.loads(line) for line in (out / "impressions_test_most_frequent.jsonl").read_text().splitlines()]
    assert rows and all(r["reference"] in impressions and r["findings"] in findings for r in rows)
    assert len({r["generated"] for r in rows}) == 1 and rows[0]["generated"] in impressions
    n = {r.value for r in records if r.metric == "reports"}
    assert n == {float(len(rows))} and 0 < len(rows) < 60          # the test split only
