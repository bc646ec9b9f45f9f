"""Attacks through a downloaded shard folder (issue 24, item 4): ``shards.json`` names what WebDataset opens, so a
hostile index could run a shell command (``pipe:``), fetch a URL or read files outside the folder. Every shard must
be a relative path that resolves, symlinks followed, to a file inside the shard folder; anything else is refused
with a clear error before a byte is read."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from mmfm.errors import MMFMError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from userdata import write_labelled_folder  # noqa: E402


@pytest.fixture()
def shards(tmp_path):
    from mmfm.data import spec
    from mmfm.data.shards import write_shards
    from mmfm.workflows.config import load_config

    root = write_labelled_folder(tmp_path / "lab", n_per_class=4)
    spec._LOADED.clear()
    data = load_config(None, ["data.dataset=folder", f"data.root={root}", "data.size=[16,16]"]).data
    write_shards(data, tmp_path / "shards", shard_size=100, progress=False)
    return tmp_path / "shards"


def _point_train_at(folder: Path, name: str, size: int) -> None:
    index = json.loads((folder / "shards.json").read_text())
    index["splits"]["train"] = [{"file": name, "samples": 1, "bytes": size, "sha256": "0" * 64}]
    (folder / "shards.json").write_text(json.dumps(index))


def _stream(folder: Path | str) -> list:
    from mmfm.data.shards import ShardDataset

    return list(ShardDataset(folder, "train", shuffle=False))


def test_pipe_shard_never_runs_a_command(shards, tmp_path, monkeypatch):
    """The attack: a file literally named ``pipe:touch ...`` shipped in the folder (so it "exists" with the right
    size) and the user trains from inside the folder (data.root=.): WebDataset ran the command."""
    marker = tmp_path / "pwned"
    name = f"pipe:touch {marker}"
    decoy = shards / name
    decoy.parent.mkdir(parents=True, exist_ok=True)
    decoy.write_bytes(b"x")
    _point_train_at(shards, name, 1)
    monkeypatch.chdir(shards)
    with pytest.raises(MMFMError, match="shards.json"):
        _stream(".")
    assert not marker.exists()


def _outside_tar(shards: Path, tmp_path: Path) -> Path:
    """A valid shard placed outside the folder: a hostile index would stream (and hash) it."""
    outside = tmp_path / "outside" / "secret.tar"
    outside.parent.mkdir()
    outside.write_bytes(next((shards / "val").glob("*.tar")).read_bytes())
    return outside


@pytest.mark.parametrize("scheme", ["file://", "http://127.0.0.1:9"])
def test_url_schemes_are_refused(shards, tmp_path, monkeypatch, scheme):
    """``file://<outside tar>`` with a decoy of that name in the folder streamed the outside file (data.root=.)."""
    outside = _outside_tar(shards, tmp_path)
    name = scheme + str(outside)
    decoy = shards / name
    decoy.parent.mkdir(parents=True, exist_ok=True)
    decoy.write_bytes(outside.read_bytes())
    _point_train_at(shards, name, outside.stat().st_size)
    monkeypatch.chdir(shards)
    with pytest.raises(MMFMError, match="shards.json"):
        _stream(".")


def test_absolute_and_dotdot_paths_are_refused(shards, tmp_path):
    from mmfm.data.shards import verify_shards

    outside = _outside_tar(shards, tmp_path)
    for name in (str(outside), "../outside/secret.tar", "train/../../outside/secret.tar"):
        _point_train_at(shards, name, outside.stat().st_size)
        with pytest.raises(MMFMError, match="shards.json") as err:
            _stream(shards)
        assert str(outside) not in str(err.value) or name == str(outside)
        with pytest.raises(MMFMError, match="shards.json"):
            verify_shards(shards)            # never hashes (and so never reports on) an outside file


def test_symlink_escaping_the_folder_is_refused(shards, tmp_path):
    outside = _outside_tar(shards, tmp_path)
    (shards / "train" / "link.tar").symlink_to(outside)
    _point_train_at(shards, "train/link.tar", outside.stat().st_size)
    with pytest.raises(MMFMError, match="outside the shard folder"):
        _stream(shards)


def test_honest_shards_still_stream_from_a_relative_root(shards, monkeypatch):
    """Honest input keeps working, also with data.root=. (the case the pipe attack needed)."""
    n = json.loads((shards / "shards.json").read_text())["splits"]["train"][0]["samples"]
    monkeypatch.chdir(shards)
    assert len(_stream(".")) == n > 0
    inner = shards / "train" / "alias.tar"            # a symlink that stays inside the folder is fine
    inner.symlink_to(next((shards / "train").glob("train-*.tar")))
    index = json.loads((shards / "shards.json").read_text())
    index["splits"]["train"][0]["file"] = "train/alias.tar"
    (shards / "shards.json").write_text(json.dumps(index))
    assert len(_stream(".")) == n


def test_malformed_index_is_a_clear_error(shards):
    (shards / "shards.json").write_text('{"splits": {"train": [{"file": 3}]}}')
    with pytest.raises(MMFMError, match="shards.json"):
        _stream(shards)
    (shards / "shards.json").write_text("{not json")
    with pytest.raises(MMFMError, match="shards.json"):
        _stream(shards)


def test_a_hostile_sample_is_a_clear_error(shards):
    """A shard whose member lacks what mmfm wrote (here: no image) is named, not a traceback."""
    import io
    import tarfile

    tar = next((shards / "train").glob("train-*.tar"))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        data = b'{"patient": 1, "position": 0.0}'
        info = tarfile.TarInfo("x000000001.json")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    tar.write_bytes(buf.getvalue())
    index = json.loads((shards / "shards.json").read_text())
    index["splits"]["train"] = [{"file": f"train/{tar.name}", "samples": 1, "bytes": tar.stat().st_size,
                                 "sha256": "0" * 64}]
    (shards / "shards.json").write_text(json.dumps(index))
    with pytest.raises(MMFMError, match="cannot be decoded"):
        _stream(shards)
