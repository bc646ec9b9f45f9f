"""Keyed pseudonyms for identifiers (patient, study, series IDs; DICOM file names): HMAC-SHA256 with a secret key.

A plain hash of an identifier is not a pseudonym: a 7-digit PatientID is recovered from ``sha256(id)`` by trying
all ten million values in seconds. With a keyed HMAC, nobody without the key can test guesses.

The key, in order of precedence:

* ``MMFM_PSEUDONYM_KEY``       the key itself (any string; for multi-site projects, one key shared by the sites so
                               that the same patient gets the same pseudonym everywhere);
* ``MMFM_PSEUDONYM_KEY_FILE``  a file holding it;
* ``$MMFM_HOME/pseudonym.key``  a random 32-byte key created on first use with mode 0600 (per installation).

The key is never written into any output, log or export. Pseudonyms made with another key do not match: keep
the key with the data if splits by patient must agree across machines.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from functools import lru_cache
from pathlib import Path

from mmfm.data.sources.fetch import mmfm_home
from mmfm.errors import MMFMError

KEY_BYTES = 32


def key_path() -> Path:
    return mmfm_home() / "pseudonym.key"


@lru_cache(maxsize=4)
def _key(env_key: str | None, env_file: str | None, default: str) -> bytes:
    if env_key:
        return env_key.encode()
    path = Path(env_file) if env_file else Path(default)
    if env_file and not path.is_file():
        raise MMFMError(f"MMFM_PSEUDONYM_KEY_FILE={env_file} does not exist", "point it at the project's key file")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others
        except FileExistsError:  # another process created it first
            return path.read_bytes().strip()
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_hex(KEY_BYTES).encode())
    key = path.read_bytes().strip()
    if len(key) < 16:
        raise MMFMError(f"{path}: the pseudonym key is shorter than 16 bytes", "use a long random key")
    return key


def pseudonym_key() -> bytes:
    return _key(os.environ.get("MMFM_PSEUDONYM_KEY"), os.environ.get("MMFM_PSEUDONYM_KEY_FILE"), str(key_path()))


def pseudonym(value: str, kind: str) -> str:
    """``<kind>-<16 hex>``: HMAC-SHA256(key, kind + value). Stable for one key, unlinkable without it."""
    if not value:
        return ""
    digest = hmac.new(pseudonym_key(), f"{kind}\x00{value}".encode(), hashlib.sha256).hexdigest()
    return f"{kind}-{digest[:16]}"
