"""The documentation site (`make docs`, mkdocs.yml): it builds offline with --strict (a broken link, anchor or API
reference fails), the README is its home page with working links into docs/, every public name of `mmfm` is on
the API page, and the coordinate conventions have their page."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_every_public_name_is_on_the_api_page():
    import mmfm
    from mmfm import api

    assert set(mmfm.__all__) <= set(api.__all__)         # docs/api.md renders mmfm.api (its __all__)
    assert "::: mmfm.api" in (ROOT / "docs" / "api.md").read_text()


def test_site_builds_strict_and_offline(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    pytest.importorskip("mkdocstrings_handlers.python")
    # the tree as CI sees it, without build outputs: mkdocs.yml, docs/, README, the hook and the package sources
    for name in ("mkdocs.yml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    for name in ("docs", "scripts", "mmfm"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (tmp_path / "docs" / "conventions.md").write_text((ROOT / "docs" / "conventions.md").read_text()
                                                     + "\nSee [the app](app.md#no-such-section).\n")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    broken = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert broken.returncode != 0 and "no-such-section" in broken.stderr          # a broken anchor fails the build
    shutil.copy(ROOT / "docs" / "conventions.md", tmp_path / "docs" / "conventions.md")
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    site = tmp_path / "site"
    index = (site / "index.html").read_text()
    assert "mmfm — medical multimodal foundation models" in index and 'href="app.html"' in index
    assert 'href="docs/' not in index                                      # README's links rewritten for the site
    api = (site / "api.html").read_text()
    assert all(f'id="mmfm.api.{name}"' in api for name in ("read_image", "create_encoder", "load_trained"))
    assert "RAS" in (site / "conventions.html").read_text()
    pages = b"".join(p.read_bytes() for p in site.glob("*.html"))
    assert b"fonts.googleapis.com" not in pages and b"fonts.gstatic.com" not in pages    # nothing fetched to read it
