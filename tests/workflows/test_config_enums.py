"""String options with a fixed set of values are enums coerced when the config loads (issue 31): a typo fails at
load, before any data is read, naming the key, the value and the valid values; every such option round-trips
through config.yaml as its plain string."""

from __future__ import annotations

import dataclasses
import enum
import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml

from mmfm.errors import ConfigError
from mmfm.options import Prompt, Schedule
from mmfm.workflows.config import PROMPTABLE, RunConfig, dump_config, load_config


def _enum_fields(cls=RunConfig, where=""):
    """(dotted key, enum type) of every enum option of the run config, found from the dataclasses' types."""
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            yield from _enum_fields(tp, f"{where}{f.name}.")
        elif isinstance(tp, type) and issubclass(tp, enum.Enum):
            yield f"{where}{f.name}", tp


ENUM_FIELDS = list(_enum_fields())
ROOT = Path(__file__).resolve().parents[2]


def _get(cfg, dotted):
    for k in dotted.split("."):
        cfg = getattr(cfg, k)
    return cfg


def test_the_options_named_in_the_issue_are_enums():
    assert {"optim.schedule", "train.strategy", "train.precision", "train.peft", "federate.strategy",
            "continual.method", "data.missing_modalities"} <= {k for k, _ in ENUM_FIELDS}


def test_a_typo_in_optim_schedule_fails_at_load_with_the_valid_values(tmp_path):
    # in a fresh process: the error comes from loading the config alone, before torch or any data module is imported
    probe = ("import sys\nfrom mmfm.errors import ConfigError\nfrom mmfm.workflows.config import load_config\n"
             "try:\n    load_config('configs/quickstart_classification.yaml', ['optim.schedule=cosin'])\n"
             "except ConfigError as e:\n    print(str(e))\n"
             "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('mmfm.data')))")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "[]"
    msg = r.stdout
    assert "optim.schedule='cosin'" in msg and "did you mean optim.schedule=cosine" in msg
    assert "valid: cosine, constant" in msg
    cfg_file = tmp_path / "typo.yaml"                   # the same from a config file
    cfg_file.write_text("train: {precision: bf61}\n")
    with pytest.raises(ConfigError, match=r"train.precision='bf61'.*\n.*valid: auto, fp32, bf16, fp16"):
        load_config(cfg_file)


def test_a_typo_from_the_cli_is_a_one_line_error_before_training(tmp_path, capsys):
    from mmfm.cli.main import main

    assert main(["train", "configs/quickstart_classification.yaml", "train.strategy=fdsp",
                 f"out={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert "train.strategy='fdsp'" in err and "did you mean train.strategy=fsdp" in err and "valid: ddp, fsdp" in err
    assert not (tmp_path / "run").exists()


def test_task_prompt_of_promptable_segmentation_is_checked_and_a_bridge_prompt_is_free_text():
    with pytest.raises(ConfigError, match=r"task.prompt='boxx'.*\n.*did you mean task.prompt=box"):
        load_config(None, [f"task={{name: {PROMPTABLE}, prompt: boxx}}"])
    cfg = load_config(None, [f"task={{name: {PROMPTABLE}, prompt: text+box}}"])
    assert cfg.task["prompt"] == Prompt.TEXT_BOX and type(cfg.task["prompt"]) is str
    assert load_config(None, ["task={name: vqa, prompt: 'Describe the image'}"]).task["prompt"] == "Describe the image"


@pytest.mark.parametrize(("key", "kind"), ENUM_FIELDS, ids=[k for k, _ in ENUM_FIELDS])
def test_every_enum_option_round_trips_through_config_yaml_as_its_string(key, kind, tmp_path):
    for member in kind:
        cfg = load_config(None, [f"{key}={json.dumps(member.value)}"])   # as a user writes it on the command line
        assert _get(cfg, key) is member and _get(cfg, key) == member.value
        dump_config(cfg, tmp_path / "config.yaml")
        text = (tmp_path / "config.yaml").read_text()
        assert "!!python" not in text                                      # plain YAML, readable by any tool
        section, name = key.split(".")
        assert yaml.safe_load(text)[section][name] == member.value and type(member.value) is str
        assert _get(load_config(tmp_path / "config.yaml"), key) is member
        assert json.loads(json.dumps(cfg.to_dict()))[section][name] == member.value


def test_enum_values_read_as_strings_downstream():
    cfg = load_config(None, ["optim.schedule=constant", "train.peft=''"])
    assert cfg.optim.schedule == "constant" and f"{cfg.optim.schedule}" == "constant"
    assert str(Schedule.COSINE) == "cosine" and f"{Schedule.COSINE:>8}" == "  cosine"
    assert not cfg.train.peft                           # "" (no adapters) stays falsy
    assert json.dumps({"schedule": cfg.optim.schedule}) == '{"schedule": "constant"}'
