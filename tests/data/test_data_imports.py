"""The data layer imports in one direction (no module of mmfm/data imports, even inside a function, a module that
imports it back), and only mmfm/data knows which kind of data source it reads: everything else asks the
:class:`mmfm.data.source.DataSource`."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from mmfm.data.source import CatalogSource, DataSource, MiniSource, ShardSource, source
from mmfm.workflows.config import load_config

PKG = Path(__file__).resolve().parents[2] / "mmfm"
DATA = PKG / "data"


def _module(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(node: ast.AST, here: str, is_pkg: bool, known: set[str]) -> set[str]:
    """The mmfm.data modules an import statement loads: ``from a.b import c`` loads ``a.b.c`` when that is a
    module, else ``a.b``; relative imports are resolved against ``here``."""
    names: list[str] = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            pkg = here.split(".") if is_pkg else here.split(".")[:-1]
            pkg = pkg[:len(pkg) - node.level + 1]
            base = ".".join(pkg + ([base] if base else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    return {n for n in names if n in known}


def import_graph(root: Path = DATA) -> dict[str, set[str]]:
    """module -> the mmfm.data modules it imports anywhere in its file (top level and inside functions)."""
    files = {_module(p): p for p in root.rglob("*.py")}
    known = set(files)
    graph = {}
    for mod, path in files.items():
        out: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            out |= _targets(node, mod, path.name == "__init__.py", known)
        graph[mod] = out - {mod}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}     # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                return path[path.index(t):] + [t]
            if t not in state:
                found = visit(t)
                if found:
                    return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_finder_sees_a_circle_through_a_function_level_import(tmp_path):
    pkg = tmp_path / "mmfm" / "data"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from mmfm.data.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from mmfm.data import a\n    return a\n")
    global PKG
    old, PKG = PKG, tmp_path / "mmfm"
    try:
        graph = import_graph(pkg)
    finally:
        PKG = old
    assert graph["mmfm.data.b"] == {"mmfm.data.a"}
    assert find_cycle(graph) in (["mmfm.data.a", "mmfm.data.b", "mmfm.data.a"],
                                 ["mmfm.data.b", "mmfm.data.a", "mmfm.data.b"])


def test_mmfm_data_imports_have_no_circle():
    graph = import_graph()
    assert "mmfm.data.spec" in graph["mmfm.data.shards"]          # the finder sees real edges
    assert "mmfm.data.sources.mini_reader" in graph["mmfm.data.catalog.loaders"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


KIND = re.compile(r"\bis_mini\b|\bis_shards\b|\blayout\s*(==|!=|\bin\b)|data\.dataset\s*(==|!=)\s*[\"'](mini|shards)")


def test_only_mmfm_data_knows_the_kind_of_source():
    bad = [f"{p.relative_to(PKG.parent)}:{i}: {line.strip()}"
           for p in PKG.rglob("*.py") if DATA not in p.parents
           for i, line in enumerate(p.read_text().splitlines(), 1) if KIND.search(line)]
    assert not bad, "ask mmfm.data.source.source(data) instead:\n" + "\n".join(bad)


def _data(*over: str):
    return load_config(None, list(over)).data


@pytest.mark.parametrize("over, kind", [(["data.dataset=mini"], MiniSource), (["data.dataset=shards"], ShardSource),
                                        (["data.dataset=folder"], CatalogSource),
                                        (["data.dataset=MedMNIST"], CatalogSource)])
def test_every_kind_implements_the_one_interface(over, kind):
    src = source(_data(*over))
    members = {m for m in vars(DataSource) if not m.startswith("_")} | set(DataSource.__annotations__)
    assert isinstance(src, kind) and {"name", "card", "contract", "class_names", "split_sizes"} <= members
    assert all(hasattr(kind, m) or m in vars(src) for m in members), members - set(dir(src))
    for flag in ("preprocessed", "streamed", "fixed_splits", "synthetic_text", "text_only"):
        assert isinstance(getattr(src, flag), bool), flag


def test_the_properties_say_what_each_kind_is():
    mini, shards, folder = (source(_data(f"data.dataset={d}")) for d in ("mini", "shards", "folder"))
    assert (mini.preprocessed, mini.streamed, mini.fixed_splits, mini.synthetic_text) == (True, False, True, True)
    assert (shards.preprocessed, shards.streamed, shards.fixed_splits) == (True, True, True)
    assert (folder.preprocessed, folder.streamed, folder.fixed_splits) == (False, False, False)
    assert source(_data("data.dataset=MedMNIST")).fixed_splits
    assert source(_data("data.dataset=mini", "data.set=reports")).text_only and not mini.text_only
    assert mini.name == "mini/patches2d" and folder.name == "folder"


def test_a_folder_and_its_shards_answer_the_same_through_the_interface(tmp_path):
    """Samples per split, class names and the card agree between a folder and the shards written from it; only
    the shards say they arrive preprocessed (at the size they were written with) and are a stream."""
    import sys

    from mmfm.data import spec
    from mmfm.data.card import user_card
    from mmfm.data.shards import write_shards

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from userdata import write_labelled_folder

    spec._LOADED.clear()
    folder = load_config(None, ["data.dataset=folder", f"data.root={write_labelled_folder(tmp_path / 'f', 6)}",
                                "data.size=[16,16]"]).data
    write_shards(folder, tmp_path / "s", shard_size=4, progress=False)
    shards = load_config(None, ["data.dataset=shards", f"data.root={tmp_path / 's'}"]).data
    a, b = source(folder), source(shards)
    splits = ["train", "val", "test"]
    assert a.split_sizes(splits)[0] == b.split_sizes(splits)[0] and sum(a.split_sizes(splits)[0].values()) == 12
    assert a.class_names() == b.class_names() == ["class0", "class1"]
    assert a.card() == b.card() == user_card(folder)
    assert b.name == "shards:folder" and b.contract()["size"] == a.contract()["size"] == [16, 16]
    assert (a.preprocessed, a.streamed, b.preprocessed, b.streamed) == (False, False, True, True)
