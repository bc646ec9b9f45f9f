"""MkDocs hook (mkdocs.yml `hooks:`): the README is the site's home page.

README.md lives at the repository root and links into docs/ (`docs/app.md`); on the site it is `index.md` inside
docs/, so those links lose their `docs/` prefix. Nothing is fetched: the build stays offline.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_as_index(text: str) -> str:
    """README's Markdown with its links into docs/ made relative to docs/ (``](docs/app.md)`` -> ``](app.md)``)."""
    return re.sub(r"\]\(docs/", "](", text)


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the README, its links rewritten, as the site's ``index.md``."""
    files.append(File.generated(config, "index.md", content=readme_as_index(README.read_text(encoding="utf-8"))))
    return files
