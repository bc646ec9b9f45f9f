"""Loopback helpers shared by the tests that start servers or process groups."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A loopback port nobody listens on now (two servers on one fixed port would meet each other)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
