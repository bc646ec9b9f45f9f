"""Where the library's log lines go when it runs as the `mmfm` command.

The library logs through ``logging.getLogger(__name__)`` and prints nothing; a Python user decides where its
messages go. The command installs one handler on the ``mmfm`` logger that writes INFO and above to standard
output, one line each, as ``[mmfm] message``: the text the command has always shown (a record may name another
tag with ``extra={"tag": "..."}``). Standard output, not standard error, because those lines always were there
and read in order with the training loop's own lines; a command's results (JSON, paths) are printed by its
handler in ``mmfm/cli/``, not logged.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO


class _Tagged(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"[{getattr(record, 'tag', 'mmfm')}] {record.getMessage()}"


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to ``sys.stdout`` as it is at each message (a test's capture, a redirect), flushed per line."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(_Tagged())

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stdout

    @stream.setter
    def stream(self, value: TextIO) -> None:  # logging sets it once in __init__; the property always wins
        pass


def setup(level: int = logging.INFO) -> None:
    """Show the library's INFO lines on standard output (once per process; calling again changes nothing)."""
    logger = logging.getLogger("mmfm")
    if not any(isinstance(h, _StdoutHandler) for h in logger.handlers):
        logger.addHandler(_StdoutHandler())
    if logger.level == logging.NOTSET or logger.level > level:
        logger.setLevel(level)
