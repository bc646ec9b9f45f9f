"""`mmfm chat` end to end (in-process `main`, the real SmolLM2; loaded once per process)."""

from __future__ import annotations

import io
import json

import pytest

from mmfm.cli.main import main

pytest.importorskip("gguf")


def test_chat_json_answer_is_labelled(capsys):
    assert main(["chat", "--model", "smollm2", "--json", "--max-tokens", "4", "What is an MRI?"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["answer"] and rec["model"] == "smollm2" and rec["new_tokens"] <= 4
    assert "research output, not a diagnosis" in rec["label"] and "What is an MRI" not in json.dumps(rec)


def test_interactive_loop_ends_at_exit(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("What is an MRI?\n\nexit\nnever asked\n"))
    assert main(["chat", "--json", "--max-tokens", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["answer"]


def test_unknown_model_is_one_error_with_a_hint(capsys):
    assert main(["chat", "--model", "smollm", "hi"]) == 2
    err = capsys.readouterr().err
    assert "unknown language model 'smollm'" in err and "did you mean smollm2" in err and "Traceback" not in err


def test_image_needs_a_vision_bridge(capsys):
    assert main(["chat", "--image", "scan.png", "hi"]) == 2
    err = capsys.readouterr().err
    assert "without a vision bridge" in err and "Traceback" not in err
