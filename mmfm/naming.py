"""Names that become parts of file paths: a method name read from a run's JSON must never escape ``--out``."""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9._+\-\[\]=]+")


def slug(name: str, max_len: int = 80) -> str:
    """One safe path component: separators, ``..``, control and shell characters become ``_``.

    >>> slug("../../etc/passwd")
    'etc_passwd'
    """
    s = _UNSAFE.sub("_", str(name)).replace("..", "_").strip("._-")
    return (s or "unnamed")[:max_len]
