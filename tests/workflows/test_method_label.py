"""The method label results.json records says where the encoder's weights started: a zoo encoder built with the
weights its package ships is ``<name>-pretrained``, not ``-scratch`` (it was recorded as ``litemedsam-scratch``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from mmfm.cli.main import main
from mmfm.workflows.config import RunConfig
from mmfm.workflows.supervised import Prepared, method_name

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from userdata import write_labelled_folder  # noqa: E402


def _label(encoder: dict, task: dict | None = None) -> str:
    cfg = RunConfig(task=task or {"name": "classification"}, encoder=encoder)
    spec = {"name": encoder.get("name"), "options": {k: v for k, v in encoder.items() if k != "name"}}
    return method_name(cfg, Prepared(None, None, {}, cfg.task["name"], 2, spec))


@pytest.mark.parametrize(("encoder", "label"), [
    ({"name": "litemedsam", "pretrained": True}, "litemedsam-pretrained"),
    ({"name": "litemedsam"}, "litemedsam-pretrained"),              # the builder's default loads the weights
    ({"name": "litemedsam", "pretrained": True, "input_size": 64}, "litemedsam-pretrained[input_size=64]"),
    ({"name": "litemedsam", "pretrained": False}, "litemedsam-scratch"),
    ({"name": "merlin"}, "merlin-pretrained"),
    ({"name": "resnet_tiny"}, "resnet_tiny-scratch"),                # no shipped weights
])
def test_label_says_where_the_weights_started(encoder, label):
    assert _label(encoder) == label


def test_a_network_that_does_not_use_the_encoder_keeps_its_own_label():
    assert _label({"name": "litemedsam"}, {"name": "segmentation", "network": "basicunet"}) == "basicunet-scratch"
    # promptable task.network=litemedsam fine-tunes the shipped LiteMedSAM
    assert _label({"name": "vit_micro"}, {"name": "promptable_segmentation"}) == "litemedsam-pretrained"
    assert _label({"name": "vit_micro"}, {"name": "promptable_segmentation", "network": "encoder"}) \
        == "vit_micro-scratch"


@pytest.mark.slow
def test_results_json_of_a_litemedsam_run_says_pretrained(tmp_path):
    lab = write_labelled_folder(tmp_path / "lab", n_per_class=6, size=32)
    out = tmp_path / "run"
    assert main(["train", "configs/quickstart_classification.yaml", "data.dataset=folder", f"data.root={lab}",
                 f"out={out}", "encoder.name=litemedsam", "encoder.pretrained=true", "encoder.input_size=64",
                 "calibrate=", "train.max_steps=1", "train.batch_size=4", "train.progress=false",
                 "data.eval_splits=[test]", "data.size=[32,32]"]) == 0
    rows = json.loads((out / "results.json").read_text())
    assert rows and {r["method"] for r in rows} == {"litemedsam-pretrained[input_size=64]"}
