"""`mmfm train ... train.peft=lora` end to end on mini: adapter written on its own, fraction stored, the run
reloads (adapters merged) with the same predictions it was evaluated with."""

from __future__ import annotations

import json

import pytest

from mmfm.cli.main import main


@pytest.mark.realdata
def test_train_with_lora_writes_the_adapter_and_reloads_merged(mini_root, tmp_path, capsys):
    out = tmp_path / "lora"
    args = ["train", "configs/quickstart_classification.yaml", f"out={out}", f"data.root={mini_root}",
            "encoder.name=vit_micro", "train.max_steps=3", "train.batch_size=8", "train.progress=false",
            "data.eval_splits=[test]", "train.peft=lora", "train.peft_rank=2"]
    assert main(args) == 0
    said = capsys.readouterr().out
    assert "lora adapters on" in said and "parameters train" in said
    info = json.loads((out / "adapter" / "adapter.json").read_text())
    assert info["method"] == "lora" and info["rank"] == 2 and 0 < info["fraction"] < 1
    state = json.loads((out / "checkpoints" / "last" / "state.json").read_text())
    assert state["run_info"]["peft"]["fraction"] == info["fraction"]

    from mmfm.data import spec
    from mmfm.encoders.adapters import has_adapters
    from mmfm.evaluation.evaluate import evaluate
    from mmfm.workflows.config import load_config
    from mmfm.workflows.supervised import load_trained

    model, _ = load_trained(out)
    assert not has_adapters(model)        # merged on load: a plain model
    cfg = load_config(out / "config.yaml")
    ds, _ = spec.labelled(cfg.data, "test", "classification")
    rec = {r["metric"]: r["value"] for r in json.loads((out / "results.json").read_text())}
    again = evaluate(model, ds, "classification")
    assert again["accuracy"] == pytest.approx(rec["accuracy"], abs=1e-6)   # the reloaded model is the evaluated one
    # a typo in the method is an error with the list, before any training
    assert main([*args[:-2], "train.peft=lorra", f"out={tmp_path / 'x'}"]) == 2
    assert "lora, dora, loha, lokr" in capsys.readouterr().err
    assert main([*args[:-2], "train.peft_targets=[qkv]", f"out={tmp_path / 'y'}"]) == 2
    assert "train.peft is empty" in capsys.readouterr().err
