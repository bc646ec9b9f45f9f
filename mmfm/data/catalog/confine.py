"""The one rule every catalog layout follows for the files it reads: a path named by a table, a JSON, an XML or a
loader option stays inside ``data.root`` (a downloaded dataset is as hostile as any file). No absolute path, no
``..`` escape, no link resolving outside; refused before anything there is opened, so an error never tells whether
an outside file exists. The user opts out with ``data.allow_outside_root=true`` (passed to each layout as
``allow_outside_root``).

Hand-written because it is mmfm's own policy: ``Path.resolve`` + ``is_relative_to`` is the whole check.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from mmfm.errors import InputFileError

KEY = "data.allow_outside_root"
OUTSIDE = f"links to a file outside data.root (not followed; set {KEY}=true to follow it)"
HINT = (f"write paths relative to data.root and inside it, or set {KEY}=true if you mean to read files outside "
        "it")


def inside(root: Path, path: Path) -> bool:
    """Whether ``path``, links resolved, is ``root`` or under it. A path that cannot be resolved (a NUL byte, a
    link loop, a name too long) is not: it is refused like one that leaves, instead of crashing later."""
    try:
        return Path(path).resolve().is_relative_to(Path(root).resolve())
    except (OSError, ValueError, RuntimeError):
        return False


def leaves(root: Path, name: str | Path) -> bool:
    """Whether ``name``, a path as a table writes it (relative to ``root``), leaves ``root``: absolute, a ``..``
    escape, or a link out anywhere along it."""
    try:
        absolute = Path(name).is_absolute()
    except TypeError:   # not a path at all (a number in a JSON): refused, never guessed at
        return True
    return absolute or not inside(root, Path(root) / name)


def confine(root: Path, table: str | Path, named: Iterable[tuple[str, str | Path]], allow_outside_root: bool,
            what: str = "row(s) name files") -> None:
    """Refuse the entries of ``table`` whose path leaves ``root``: ``named`` holds (where in the table, e.g.
    ``line 6`` or ``record 3``; the path it names, relative to ``root``). One error for all of them, naming the
    first five places (never what lies outside); ``what`` says what they are (``file(s) link to files`` for a
    scanned folder)."""
    if allow_outside_root:
        return
    out = [where for where, name in named if leaves(root, name)]
    if out:
        shown = ", ".join(out[:5]) + (f" and {len(out) - 5} more" if len(out) > 5 else "")
        raise InputFileError(table, f"{len(out)} {what} outside data.root ({shown})", HINT)


def confine_rows(root: Path, table: Path, rows: list[tuple[int, dict[str, str]]], column: str,
                 allow_outside_root: bool, prefix: str = "", suffix: str = "") -> None:
    """:func:`confine` for a CSV's ``column`` (``rows`` as ``(line, row)``); ``prefix``: the folder the column is
    relative to (``image_dir``), ``suffix``: what the loader appends. Empty cells are left to the loader."""
    confine(root, table, ((f"line {n}", Path(prefix) / f"{row[column]}{suffix}") for n, row in rows
                          if (row.get(column) or "").strip()), allow_outside_root)


def inside_root(root: Path, name: str | Path, what: str, allow_outside_root: bool) -> Path:
    """``root / name`` for a file or folder a loader option names (a table, a report folder, ...), refused when it
    leaves ``root``; ``what`` names the option (``data.options.file``) or the file (``the table``)."""
    path = Path(root) / name
    if not allow_outside_root and leaves(root, name):
        raise InputFileError(name, f"{what} leads outside data.root", HINT)
    return path
