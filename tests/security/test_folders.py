"""Attacks on folder datasets (issue 24, item 10): ``labels.csv`` rows and links that leave ``data.root``. A
folder stays inside its root unless the user opts in with ``data.allow_outside_root=true``."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmfm.data import spec
from mmfm.data.catalog.folder import folder
from mmfm.errors import InputFileError
from mmfm.workflows.config import load_config
from tests.userdata import write_dicom_series, write_labelled_folder


@pytest.fixture()
def secret(tmp_path: Path) -> Path:
    """An image outside the dataset folder (what an attacker's folder tries to pull into training)."""
    p = tmp_path / "outside" / "secret.png"
    p.parent.mkdir()
    Image.fromarray(np.full((24, 24), 200, np.uint8)).save(p)
    return p


def _with_row(root: Path, image: str) -> None:
    with open(root / "labels.csv", "a") as f:
        f.write(f"{image},class0,pX\n")


def _names(samples) -> list[str]:  # noqa: ANN001
    return [str(r["path"]) for r in samples.records]


def test_a_labels_row_with_dotdot_is_refused_unless_the_user_opts_in(tmp_path, secret):
    root = write_labelled_folder(tmp_path / "data", n_per_class=2)
    _with_row(root, "../outside/secret.png")
    with pytest.raises(InputFileError, match=r"outside data.root \(line 6\)"):
        folder(root)
    data = lambda *o: load_config(None, ["data.dataset=folder", f"data.root={root}", *o]).data  # noqa: E731
    spec._LOADED.clear()
    with pytest.raises(InputFileError, match="allow_outside_root"):
        spec.all_samples(data())
    spec._LOADED.clear()
    every = spec.all_samples(data("data.allow_outside_root=true"))      # honest opt-in: read as asked
    assert len(every) == 5 and any(Path(n).resolve() == secret for n in _names(every))


def test_an_absolute_labels_row_is_a_clear_error_not_a_crash(tmp_path, secret):
    root = write_labelled_folder(tmp_path / "data", n_per_class=2)
    _with_row(root, str(secret))
    with pytest.raises(InputFileError, match="outside data.root"):
        folder(root)
    assert len(folder(root, allow_outside_root=True)) == 5


def test_a_labels_row_naming_a_link_out_is_refused(tmp_path, secret):
    root = write_labelled_folder(tmp_path / "data", n_per_class=2)
    (root / "images" / "innocent.png").symlink_to(secret)
    _with_row(root, "images/innocent.png")
    with pytest.raises(InputFileError, match="outside data.root"):
        folder(root)


def test_a_scanned_link_out_is_skipped_with_its_reason(tmp_path, secret):
    root = tmp_path / "scan"
    (root / "a").mkdir(parents=True)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "a" / "real.png")
    (root / "a" / "leak.png").symlink_to(secret)
    (root / "a" / "fine.png").symlink_to(root / "a" / "real.png")         # a link inside the root stays usable
    found = folder(root)
    assert sorted(Path(n).name for n in _names(found)) == ["fine.png", "real.png"]
    (skip,) = found.scan["skipped"]
    assert skip["file"] == "a/leak.png" and "outside data.root" in skip["reason"]
    assert sorted(Path(n).name for n in _names(folder(root, allow_outside_root=True))) == \
        ["fine.png", "leak.png", "real.png"]


def test_a_dicom_series_folder_with_a_link_out_is_skipped(tmp_path, dicom_path):
    src = dicom_path("CT_small.dcm")
    write_dicom_series(src, tmp_path / "outside_series", n=2)
    root = tmp_path / "d"
    write_dicom_series(src, root / "series", n=3)
    shutil.copy(tmp_path / "outside_series" / "slice_0.dcm", tmp_path / "elsewhere.dcm")
    (root / "series" / "x.dcm").symlink_to(tmp_path / "elsewhere.dcm")
    with pytest.raises(InputFileError, match="no readable image"):
        folder(root)
    assert len(folder(root, allow_outside_root=True)) == 2         # the series and the linked file's own series


def test_data_options_cannot_smuggle_the_key(tmp_path):
    from mmfm.errors import ConfigError

    root = write_labelled_folder(tmp_path / "data", n_per_class=1)
    spec._LOADED.clear()
    with pytest.raises(ConfigError, match="data.allow_outside_root"):
        spec.all_samples(load_config(None, ["data.dataset=folder", f"data.root={root}",
                                            "data.options.allow_outside_root=true"]).data)
