"""What a cached item's key depends on: a MetaImage header's own data file, read the way the reader reads it."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from mmfm.data.cache import _detached


def test_a_detached_header_keys_on_its_data_file_only(tmp_path):
    sitk.WriteImage(sitk.GetImageFromArray(np.arange(24, dtype=np.int16).reshape(2, 3, 4)), str(tmp_path / "ct.mhd"))
    (tmp_path / "notes.txt").write_text("another file beside the header")
    assert _detached(tmp_path / "ct.mhd") == [tmp_path / "ct.raw"]
    (tmp_path / "bad.mhd").write_text("ElementDataFile = ../outside.raw\n")      # refused by the reader
    assert sorted(p.name for p in _detached(tmp_path / "bad.mhd")) == ["ct.mhd", "ct.raw", "notes.txt"]
