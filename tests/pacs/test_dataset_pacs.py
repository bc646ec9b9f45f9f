"""`data.dataset=dicomweb data.root=URL data.query=[...]`: a PACS query's series retrieved once into
$MMFM_HOME/dicomweb and read as a folder by pretraining; the run's config names the local copy, and a second run
reads it without the network."""

from __future__ import annotations

import json

import pydicom
import pytest
import yaml

from mmfm.cli.main import main
from tests.pacs.test_dicomweb import _first

FAST = ["train.max_steps=2", "train.batch_size=2", "train.ckpt_every=2", "train.progress=false"]


def test_pretraining_reads_a_pacs_query_once_then_from_its_local_copy(pacs, pacs_login, monkeypatch, tmp_path,
                                                                      capsys):
    monkeypatch.setenv("MMFM_HOME", str(tmp_path / "home"))
    series = _first(pacs.series)
    data = ["data.dataset=dicomweb", f"data.root={pacs.root}",
            f"data.query=[SeriesInstanceUID={series.SeriesInstanceUID}]", "data.size=[32,32]"]
    assert main(["pretrain", "configs/pretrain/simclr_2d.yaml", *data, "encoder.name=vit_micro",
                 f"out={tmp_path / 'pre'}", *FAST]) == 0
    copies = list((tmp_path / "home" / "dicomweb").iterdir())
    assert len(copies) == 1 and len(list(copies[0].rglob("*.dcm"))) == 4
    # the cache is de-identified: none of the uploaded series' identifiers is in any of its files
    for f in copies[0].rglob("*.dcm"):
        ds = pydicom.dcmread(str(f))
        assert ds.SeriesInstanceUID != series.SeriesInstanceUID
        assert str(ds.get("PatientName", "")) != str(series.PatientName) and not ds.get("PatientBirthDate")
    saved = yaml.safe_load((tmp_path / "pre" / "config.yaml").read_text())["data"]
    assert (saved["dataset"], saved["root"]) == ("folder", str(copies[0]))
    assert json.loads((tmp_path / "pre" / "status.json").read_text())["status"] == "complete"
    monkeypatch.setenv("MMFM_DICOMWEB_PASSWORD", "wrong")                  # the network would now answer 401
    assert main(["pretrain", "configs/pretrain/simclr_2d.yaml", *data, "encoder.name=vit_micro",
                 f"out={tmp_path / 'again'}", *FAST]) == 0


def test_data_query_without_the_dicomweb_dataset_is_refused(capsys):
    assert main(["pretrain", "configs/pretrain/simclr_2d.yaml", "data.query=[Modality=CT]"]) == 2
    assert "data.query selects series on a PACS" in capsys.readouterr().err


@pytest.mark.parametrize("root", ["null", "/some/folder"])
def test_the_dicomweb_dataset_needs_a_url(root, capsys):
    assert main(["pretrain", "configs/pretrain/simclr_2d.yaml", "data.dataset=dicomweb", f"data.root={root}"]) == 2
    assert "data.root is its URL" in capsys.readouterr().err
