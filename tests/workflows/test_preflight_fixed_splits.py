"""Checks before training for datasets whose files fix the splits (issue 32): the built-in mini corpus, shards and
a MedMNIST ``.npz`` -- an empty split the run uses and a label value beyond task.num_classes stop `mmfm train`
before the model is built, with the fix as key=value. Real files on disk: mini as built, an ``.npz`` written here,
shards written by `mmfm data shard`'s library function."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from mmfm.cli.main import main
from mmfm.data import spec
from mmfm.errors import ConfigError
from mmfm.workflows.config import load_config
from mmfm.workflows.preflight import preflight

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from userdata import write_labelled_folder  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh():
    spec._LOADED.clear()
    spec._SAID.clear()


def medmnist(path: Path, n_val: int = 4, labels=(0, 1, 2)) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 12), ("val", n_val), ("test", 6)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = np.array([[labels[i % len(labels)]] for i in range(n)], dtype=np.int64)
    np.savez(path, **arrays)
    return path


def mm_cfg(npz: Path, *extra: str):
    return load_config("configs/medmnist_example.yaml", [f"data.root={npz}", *extra])


def test_medmnist_empty_eval_split_is_refused_before_training(tmp_path, capsys):
    npz = medmnist(tmp_path / "pneumoniamnist.npz", n_val=0)
    out = tmp_path / "run"
    assert main(["train", "configs/medmnist_example.yaml", f"data.root={npz}", "data.eval_splits=[val,test]",
                 "train.max_steps=1", f"out={out}"]) == 2
    err = capsys.readouterr().err
    assert "split val of data.eval_splits is empty" in err and "data.eval_splits=[test]" in err
    assert not (out / "checkpoints").exists()


def test_medmnist_label_beyond_num_classes_is_refused(tmp_path):
    npz = medmnist(tmp_path / "pneumoniamnist.npz")
    with pytest.raises(ConfigError, match="holds the value 2, but task.num_classes=2") as e:
        preflight(mm_cfg(npz, "task.num_classes=2"))
    assert "task.num_classes=3" in e.value.hint
    preflight(mm_cfg(npz, "task.num_classes=3"))          # the values it knows: no error
    preflight(mm_cfg(npz))                                # unset: taken from the data


def test_medmnist_split_the_run_does_not_use_may_be_absent(tmp_path):
    npz = tmp_path / "m.npz"
    full = dict(np.load(medmnist(tmp_path / "full.npz")))
    np.savez(npz, **{k: v for k, v in full.items() if not k.startswith("val")})
    preflight(mm_cfg(npz, "data.eval_splits=[test]"))
    with pytest.raises(Exception, match="val_images"):
        preflight(mm_cfg(npz, "data.eval_splits=[val]"))


def test_mini_mask_value_beyond_num_classes_and_empty_split(mini_root):
    cfg = load_config("configs/segmentation_3d.yaml", [f"data.root={mini_root}", "task.num_classes=2"])
    with pytest.raises(ConfigError, match="mask of the (train|val|test) split holds the value 2"):
        preflight(cfg)
    preflight(load_config("configs/segmentation_3d.yaml", [f"data.root={mini_root}"]))    # 3 classes: fine
    empty = load_config("configs/segmentation_lits.yaml", [f"data.root={mini_root}",
                                                           "data.options={patient_id: nobody}"])
    with pytest.raises(ConfigError, match="training split 'train' is empty"):
        preflight(empty)


def test_shards_with_an_empty_split_are_refused(tmp_path):
    from mmfm.data.shards import INDEX, write_shards

    root = write_labelled_folder(tmp_path / "lab", n_per_class=6)
    data = load_config(None, ["data.dataset=folder", f"data.root={root}", "data.size=[16,16]"]).data
    write_shards(data, tmp_path / "shards", shard_size=4, progress=False)
    cfg = load_config("configs/quickstart_classification.yaml", ["data.dataset=shards",
                                                                 f"data.root={tmp_path / 'shards'}"])
    preflight(cfg)                                         # every split has samples
    index = json.loads((tmp_path / "shards" / INDEX).read_text())
    index["splits"]["test"] = []
    (tmp_path / "shards" / INDEX).write_text(json.dumps(index))
    with pytest.raises(ConfigError, match="split test of data.eval_splits is empty") as e:
        preflight(cfg)
    assert "data.eval_splits=[val]" in e.value.hint
