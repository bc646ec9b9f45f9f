"""A registry source that cannot be fetched is skipped with its one-line reason (named in the card), not a crash."""

from __future__ import annotations

import pytest

import mmfm.data.sources.mini as mini
from mmfm.errors import InputFileError, MMFMError


def test_errors_keep_their_problem_and_hint():
    e = MMFMError("a thing is wrong", "fix it")
    assert (e.problem, e.hint) == ("a thing is wrong", "fix it")
    assert InputFileError("x.nii", "bad header").problem == "x.nii: bad header"


@pytest.mark.realdata
def test_a_missing_source_is_skipped_with_its_reason(tmp_path, monkeypatch, capsys):
    def gone(*_a, **_k):
        raise MMFMError("colin27 is not installable here", "pip download mricron-data")

    monkeypatch.setattr(mini, "_colin", gone)
    root = mini.build_mini(tmp_path / "mini", progress=True)
    assert "skipped Colin27 MRI (mricron-data): colin27 is not installable here" in capsys.readouterr().out
    card = (root / "card.json").read_text() if (root / "card.json").exists() else (root / "card.md").read_text()
    assert "colin27 is not installable here" in card
    assert (root / "slices2d.npz").exists()   # the other sources still built
