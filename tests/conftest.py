"""Shared fixtures. ``mini`` is built once per machine into $MMFM_HOME (default ~/.cache/mmfm)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def mini_root() -> Path:
    from mmfm.data.sources.mini import build_mini

    return build_mini(progress=False)


@pytest.fixture()
def dicom_path():
    from pydicom.data import get_testdata_file

    def get(name: str) -> str:
        p = get_testdata_file(name, download=False)
        if p is None:
            pytest.skip(f"pydicom test file {name} not available")
        return str(p)

    return get
