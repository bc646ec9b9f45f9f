"""The tutorials in examples/ are jupytext percent scripts that `make examples` executes (scripts/run_examples.py;
too slow for this suite): here, fast, each parses as a notebook of markdown and code cells, compiles, uses the
public API, and is listed on the docs page; and the runner executes a notebook in a fresh kernel in a temporary
folder and names the failing cell in one line."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def test_there_are_tutorials_and_every_one_is_listed_in_the_docs_and_the_readme():
    assert len(EXAMPLES) >= 5
    page = (ROOT / "docs" / "tutorials.md").read_text()
    for path in EXAMPLES:
        assert f"`examples/{path.name}`" in page, f"docs/tutorials.md does not list {path.name}"
    assert "tutorials.md" in (ROOT / "mkdocs.yml").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make examples" in readme and "docs/tutorials.md" in readme


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_each_tutorial_is_a_percent_notebook_that_compiles_and_asserts(path):
    text = path.read_text()
    nb = jupytext.reads(text, fmt="py:percent")
    kinds = [c.cell_type for c in nb.cells]
    assert kinds[0] == "markdown" and nb.cells[0].source.startswith("# "), "start with a markdown title cell"
    assert kinds.count("markdown") >= 3 and kinds.count("code") >= 3
    tree = ast.parse(text, filename=str(path))                                 # the script as a whole compiles
    for cell in nb.cells:
        if cell.cell_type == "code":
            compile(cell.source, f"{path.name} cell", "exec")                  # and each cell on its own
    assert any(isinstance(n, ast.Import) and any(a.name == "mmfm" for a in n.names) for n in ast.walk(tree))
    assert any(isinstance(n, ast.Assert) for n in ast.walk(tree)), "a tutorial checks its own outputs"
    assert "subprocess" not in text, "tutorials call the Python API, not the CLI"


def test_the_runner_executes_in_a_fresh_kernel_elsewhere_and_names_the_failing_cell(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import run_examples
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    monkeypatch.chdir(tmp_path)
    good, bad = tmp_path / "good.py", tmp_path / "bad.py"
    good.write_text("# %% [markdown]\n# # A title\n\n# %%\nopen('written.txt', 'w').write('x')\n")
    bad.write_text("# %% [markdown]\n# # A title\n\n# %%\nx = 1\n\n# %%\nassert x == 2, 'x is not 2'\n")
    assert run_examples.run_one(good, timeout=60, keep=None) is None
    assert not (tmp_path / "written.txt").exists()               # the kernel ran in a temporary folder
    error = run_examples.run_one(bad, timeout=60, keep=tmp_path / "kept")
    assert error is not None and "\n" not in error
    assert "bad.py: cell 2 (line 8: assert x == 2, 'x is not 2') failed: AssertionError: x is not 2" in error
    assert (tmp_path / "kept" / "bad.ipynb").exists()
    with pytest.raises(SystemExit, match="no such example"):
        run_examples.examples(["no_such_tutorial.py"])
