"""The library logs, the command shows (issue 31): `mmfm` puts the library's INFO lines on stdout as `[mmfm] ...`,
the text users saw when the library printed them; a Python user who configures nothing sees no INFO line."""

from __future__ import annotations

import logging
import subprocess
import sys

from mmfm.cli import logs


def test_the_command_shows_library_lines_as_before(capsys):
    logs.setup()
    logs.setup()                                                     # a second call adds no second handler
    logging.getLogger("mmfm.workflows.quickstart").info("mini corpus: /x (data card: /x/card.md)")
    logging.getLogger("mmfm.data.sources.mini").info("building", extra={"tag": "mini"})
    logging.getLogger("mmfm.engine.federated_guard").warning("federation: round 1: rejected")
    logging.getLogger("other").warning("not ours")                   # another library's logger: not ours to show
    out = capsys.readouterr().out
    assert out.splitlines() == ["[mmfm] mini corpus: /x (data card: /x/card.md)", "[mini] building",
                                "[mmfm] federation: round 1: rejected"]


def _run(code: str) -> str:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout + r.stderr


def test_a_library_user_sees_no_info_line_and_the_command_does():
    line = "import logging; logging.getLogger('mmfm.workflows.evaluate').info('evaluating x')"
    assert "evaluating x" not in _run(line)                                     # the library alone: silent
    assert "[mmfm] evaluating x" in _run(f"from mmfm.cli.main import main; main([]); {line}")   # `mmfm ...`
