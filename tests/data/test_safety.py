"""Safety and privacy: mmfm never deletes what it did not create, pseudonyms are keyed, malformed headers are
refused before anything is allocated, names from JSON never escape the output folder, no apt-get update."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import stat
import struct
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mmfm.cli.main import main
from mmfm.errors import InputFileError, MMFMError


# -- 1. `mmfm data prepare mini --root DIR` ---------------------------------------------------------------------
def test_prepare_refuses_a_foreign_folder_and_keeps_it(tmp_path, capsys):
    user = tmp_path / "datasets"
    user.mkdir()
    (user / "precious.nii.gz").write_bytes(b"do not delete")
    for extra in ([], ["--force"]):
        assert main(["data", "prepare", "mini", "--root", str(user), *extra]) == 2
        assert "not a mini corpus built by mmfm" in capsys.readouterr().err
        assert (user / "precious.nii.gz").read_bytes() == b"do not delete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["datasets"]  # no partial folder left either


def test_a_fake_card_does_not_make_a_folder_deletable(tmp_path):
    from mmfm.data.sources.mini import build_mini, is_mini_folder

    user = tmp_path / "mine"
    user.mkdir()
    (user / "card.json").write_text(json.dumps({"name": "mini"}))
    (user / "thesis.tex").write_text("years of work")
    assert not is_mini_folder(user)
    with pytest.raises(MMFMError):
        build_mini(user, force=True, progress=False)
    assert (user / "thesis.tex").exists()


def test_rebuild_with_force_replaces_only_an_own_corpus(tmp_path, monkeypatch, mini_root):
    """--force on a folder mmfm built swaps it for a new build; its parent and neighbours are untouched."""
    import shutil

    from mmfm.data.sources import mini

    own = tmp_path / "mini"
    shutil.copytree(mini_root, own)
    (tmp_path / "neighbour.txt").write_text("keep")
    assert mini.is_mini_folder(own)
    monkeypatch.setattr(mini, "_lits", lambda b, cache: _fake_step(b))
    for name in ("_colin", "_mni", "_singles"):
        monkeypatch.setattr(mini, name, lambda *a: {})
    monkeypatch.setattr(mini, "_reports", lambda cache, out: out.write_text("") or {})
    monkeypatch.setattr(mini, "_save", lambda path, d: path.write_bytes(b""))
    monkeypatch.setattr(mini, "card_markdown", lambda card: "card")
    mini.build_mini(own, force=True, progress=False)
    assert mini.is_mini_folder(own) and (tmp_path / "neighbour.txt").read_text() == "keep"
    assert not list(tmp_path.glob("mini.*"))  # no .old or .partial folders left


def _fake_step(b):
    img = np.zeros((128, 128), np.float32)
    b.add_slice(img, img, "abdomen", 0, "CT", "p", 0, "train", ("c", "c"), "s")
    return {}


# -- 2. keyed pseudonyms ----------------------------------------------------------------------------------------
def test_pseudonyms_are_keyed_and_the_key_is_private(tmp_path, monkeypatch):
    from mmfm.data import pseudonym as ps

    monkeypatch.setenv("MMFM_HOME", str(tmp_path))
    monkeypatch.delenv("MMFM_PSEUDONYM_KEY", raising=False)
    monkeypatch.delenv("MMFM_PSEUDONYM_KEY_FILE", raising=False)
    p = ps.pseudonym("1234567", "patient")
    key = tmp_path / "pseudonym.key"
    assert key.exists() and stat.S_IMODE(key.stat().st_mode) == 0o600
    assert p == ps.pseudonym("1234567", "patient") and p != ps.pseudonym("1234568", "patient")
    # the old unkeyed scheme (and any plain hash) no longer reproduces it: enumeration without the key fails
    assert p[len("patient-"):] not in hashlib.sha256(b"mmfm:patient:1234567").hexdigest()
    assert p[len("patient-"):] not in hashlib.sha256(b"1234567").hexdigest()
    # a user-set key (multi-site): the same pseudonym at every site, another one under another key
    monkeypatch.setenv("MMFM_PSEUDONYM_KEY", "site-shared-secret-0123456789")
    a = ps.pseudonym("1234567", "patient")
    assert a != p and a == ps.pseudonym("1234567", "patient")
    assert "site-shared-secret" not in a and key.read_bytes().decode() not in a


def test_csv_patient_ids_get_the_same_pseudonym_as_dicom(tmp_path, monkeypatch):
    from PIL import Image as PILImage

    from mmfm.data.catalog.loaders import image_csv
    from mmfm.data.pseudonym import pseudonym

    monkeypatch.setenv("MMFM_PSEUDONYM_KEY", "k" * 32)
    PILImage.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "labels.csv").write_text("image,label,patient\na.png,x,7654321\n")
    s = image_csv(tmp_path, patient_column="patient")[0]
    assert s["ids"].patient_id == pseudonym("7654321", "patient")
    assert "7654321" not in json.dumps(s["ids"].__dict__)


def test_dicom_file_names_do_not_become_sample_ids(tmp_path, dicom_path, monkeypatch):
    import shutil

    from mmfm.data.catalog.loaders import image_csv

    name = "DOE_JOHN_ACC123456"
    shutil.copy(dicom_path("CT_small.dcm"), tmp_path / f"{name}.dcm")
    (tmp_path / "labels.csv").write_text(f"image,label\n{name}.dcm,x\n")
    monkeypatch.delenv("MMFM_KEEP_FILE_NAMES", raising=False)
    assert name not in image_csv(tmp_path, modality="CT")[0]["ids"].sample_id
    monkeypatch.setenv("MMFM_KEEP_FILE_NAMES", "1")
    assert image_csv(tmp_path, modality="CT")[0]["ids"].sample_id == name


def test_no_phi_in_any_output_of_inspect_and_train(tmp_path, dicom_path):
    """A DICOM with PHI (name, ID, birth date, accession, institution) and an identifying file name: nothing of it
    in stdout, stderr or any file a run writes."""
    import pydicom

    phi = {"PatientName": "Doe^Jane", "PatientID": "PID7654321", "PatientBirthDate": "19450101",
           "AccessionNumber": "ACC998877", "InstitutionName": "St Elsewhere Hospital"}
    data = tmp_path / "data"
    data.mkdir()
    rows = ["image,label"]
    for i in range(12):
        ds = pydicom.dcmread(dicom_path("CT_small.dcm"))
        for k, v in phi.items():
            setattr(ds, k, v)
        ds.PixelData = (ds.pixel_array + i * (1 if i % 2 else -1)).astype(ds.pixel_array.dtype).tobytes()
        fname = f"Doe_Jane_ACC998877_{i}.dcm"
        ds.save_as(data / fname)
        rows.append(f"{fname},{'a' if i % 2 else 'b'}")
    (data / "labels.csv").write_text("\n".join(rows) + "\n")
    env = {**os.environ, "MMFM_HOME": str(tmp_path / "home")}
    run = lambda *a: subprocess.run([os.sys.executable, "-m", "mmfm.cli.main", *a], capture_output=True,  # noqa
                                    text=True, env=env, cwd=tmp_path, timeout=600)
    r1 = run("data", "inspect", str(data / "Doe_Jane_ACC998877_0.dcm"), "--json")
    assert r1.returncode == 0, r1.stderr
    out = tmp_path / "run"
    r2 = run("train", str(Path(__file__).resolve().parents[2] / "configs" / "quickstart_classification.yaml"),
             "data.dataset=MC-CXR", f"data.root={data}", "data.label=label", "data.size=[32,32]",
             "data.options={modality: CT}",
             "encoder.name=resnet_tiny", "train.max_steps=2", "train.batch_size=4", "train.progress=false",
             "train.workers=0", f"out={out}")
    assert r2.returncode == 0, r2.stderr
    texts = [r1.stdout, r1.stderr, r2.stdout, r2.stderr]
    texts += [p.read_bytes().decode("latin-1") for p in out.rglob("*") if p.is_file()]
    for needle in ["Doe", "Jane", "PID7654321", "19450101", "ACC998877", "Elsewhere"]:
        assert not any(needle in t for t in texts), needle


# -- 3/4. malformed headers ---------------------------------------------------------------------------------------
def _nifti_with_dims(path: Path, dims: tuple[int, ...], gz: bool = False) -> Path:
    img = nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), np.eye(4))
    raw = bytearray(img.to_bytes())
    struct.pack_into("<8h", raw, 40, len(dims), *dims, *([1] * (7 - len(dims))))
    path.write_bytes(gzip.compress(bytes(raw)) if gz else bytes(raw))
    return path


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dims", [(400, 400, 400), (30000, 30000, 30000), (4, 0, 6)])
def test_nifti_header_promising_more_than_the_file_is_refused(tmp_path, dims, gz, capsys):
    p = _nifti_with_dims(tmp_path / ("x.nii.gz" if gz else "x.nii"), dims, gz)
    assert main(["data", "inspect", str(p)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and ("promises" in err or "no voxels" in err or "memory" in err)


def test_dicom_rows_promising_more_than_pixel_data_is_refused(tmp_path, dicom_path):
    import pydicom

    from mmfm.data.io import read_image

    ds = pydicom.dcmread(dicom_path("CT_small.dcm"))
    ds.Rows = 60000
    ds.save_as(tmp_path / "big.dcm")
    with pytest.raises(InputFileError, match="promises|memory"):
        read_image(tmp_path / "big.dcm")
    ds.Rows = 0
    ds.save_as(tmp_path / "zero.dcm")
    with pytest.raises(InputFileError, match="no voxels"):
        read_image(tmp_path / "zero.dcm")


def test_npz_and_mrc_headers_are_checked(tmp_path):
    import mrcfile

    from mmfm.data.io.mrc import read_mrc
    from mmfm.data.io.npz import read_medmnist_npz

    f = tmp_path / "x.npz"
    np.savez(f, train_images=np.zeros((3, 0, 8), np.uint8), train_labels=np.zeros((3, 1)))
    with pytest.raises(InputFileError, match="no voxels"):
        read_medmnist_npz(f, "train")
    m = tmp_path / "x.mrc"
    with mrcfile.new(m) as mf:
        mf.set_data(np.zeros((4, 4, 4), np.float32))
    raw = bytearray(m.read_bytes())
    struct.pack_into("<3i", raw, 0, 4000, 4000, 4000)
    m.write_bytes(bytes(raw))
    with pytest.raises(InputFileError, match="promises"):
        read_mrc(m)


# -- 4b. names that become paths ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../../escape", "/etc/passwd", "a/../../b", "..", "", "x\x00y"])
def test_slug_keeps_names_inside_the_folder(tmp_path, name):
    from mmfm.naming import slug

    s = slug(name)
    assert s and "/" not in s and ".." not in s and "\x00" not in s
    assert (tmp_path / s).resolve().parent == tmp_path.resolve()


# -- 5. no apt-get update ---------------------------------------------------------------------------------------
def test_fetch_never_runs_apt_get_update(tmp_path, monkeypatch):
    from mmfm.data.sources import fetch as f

    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd)
        raise subprocess.CalledProcessError(100, cmd, stderr="E: Can't select candidate version")

    monkeypatch.setattr(f.subprocess, "run", fake_run)
    monkeypatch.delenv("MMFM_SOURCES", raising=False)
    src = f.Source("mricron-data", "1", "debian", "none.deb", "0" * 64, "", "")
    with pytest.raises(MMFMError) as e:
        f.fetch(src, tmp_path)
    assert all("update" not in c for c in calls) and len(calls) == 1
    assert "apt-get update" in e.value.hint
