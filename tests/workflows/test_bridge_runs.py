"""`mmfm report-gen` / `mmfm vqa` with ``task.decoder`` (a bridge into a language model) and `mmfm chat --model
RUN`, end to end on mini with ``llama_tiny`` (the stand-in for SmolLM2: the same code path, a model that trains in
milliseconds a step): stage 1, stage 2 with LoRA resuming exactly after a hard kill, the run loaded back for chat
answering as it did when it was written (greedy, deterministic), 3D images, and the errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmfm.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
TINY = ["train.progress=false", "train.batch_size=4", "encoder.name=resnet_tiny", "task.decoder=llama_tiny",
        "task.max_len=6", "data.size=[32,32]"]
RG2D = [str(ROOT / "configs/report_generation_2d.yaml"), *TINY]


def _run_cli(args: list[str], fault: list[str] | None = None) -> subprocess.CompletedProcess:
    """``mmfm ARGS`` in a process of its own; ``fault``: e.g. ["crash-after-step", "2"] (tests/engine/faults.py)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(torch.get_num_threads())}
    cmd = ["-m", "tests.engine.faults", *fault, "--"] if fault else ["-m", "mmfm.cli.main"]
    return subprocess.run([sys.executable, *cmd, *args], env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def stage1(mini_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("bridge") / "stage1"
    assert main(["report-gen", *RG2D, "train.max_steps=2", "task.freeze_encoder=true", "data.eval_splits=[test]",
                 f"out={out}"]) == 0
    return out


def test_stage1_trains_the_projector_alone_and_writes_a_run(stage1):
    info = json.loads((stage1 / "assistant.json").read_text())
    assert info["decoder"] == "llama_tiny" and info["stage"] == 1 and info["encoder"]["spatial_dims"] == 2
    state = json.loads((stage1 / "checkpoints" / "last" / "state.json").read_text())
    assert state["run_info"]["assistant"]["lm_sha256"] == info["lm_sha256"] and "peft" not in state["run_info"]
    assert state["run_info"]["parameters"]["trainable"] < state["run_info"]["parameters"]["total"] / 2
    weights = load_file(str(stage1 / "checkpoints" / "last" / "model.safetensors"))
    assert {k.split(".")[0] for k in weights} == {"encoder", "projector"}       # not the language model
    projector = sum(v.numel() for k, v in weights.items() if k.startswith("projector."))
    assert state["run_info"]["parameters"]["trainable"] == projector            # encoder and LM frozen
    results = json.loads((stage1 / "results.json").read_text())
    methods = {r["method"] for r in results}
    assert "resnet_tiny-llava-llama_tiny-stage1" in methods and "majority report (no image)" in methods
    rows = [json.loads(ln) for ln in (stage1 / "generated_test.jsonl").read_text().splitlines()]
    assert len(rows) == 67 and all(r["generated"] for r in rows)
    cfg = (stage1 / "config.yaml").read_text()
    assert "decoder: llama_tiny" in cfg and "dim:" not in cfg      # the small decoder's options were dropped


def test_stage2_lora_run_resumes_exactly_after_a_hard_kill(stage1, tmp_path):
    """3 steps of stage 2 (LoRA with dropout, so the restored RNG matters), killed after step 2 (checkpointed
    every step), resumed: every saved weight equals an uninterrupted run's."""
    args = ["report-gen", *RG2D, "task.stage=2", f"task.bridge_from={stage1}", "train.max_steps=3",
            "train.ckpt_every=1", "train.peft_dropout=0.1", "data.eval_splits=[]"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main([*args, f"out={full}"]) == 0
    r = _run_cli([*args, f"out={cut}"], ["crash-after-step", "2"])
    assert r.returncode == 137, r.stderr[-2000:]
    assert json.loads((cut / "checkpoints" / "last" / "state.json").read_text())["step"] == 2
    assert main([*args, f"out={cut}"]) == 0
    a = load_file(str(full / "checkpoints" / "last" / "model.safetensors"))
    b = load_file(str(cut / "checkpoints" / "last" / "model.safetensors"))
    assert any("lora_A" in k for k in a) and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    s1 = load_file(str(stage1 / "checkpoints" / "last" / "model.safetensors"))
    assert not torch.equal(a["projector.0.weight"], s1["projector.0.weight"])   # started from stage 1, trained on
    assert (full / "adapter" / "adapter.safetensors").exists()
    steps = [json.loads(ln)["step"] for ln in (cut / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 3


def test_a_loaded_run_answers_as_it_did_when_written_and_greedy_is_deterministic(stage1, tmp_path):
    from mmfm.data import spec as dataspec
    from mmfm.data.batches import image_batches
    from mmfm.encoders.text.llm import load_language_model
    from mmfm.workflows.bridge import load_bridge_run
    from mmfm.workflows.config import load_config

    run = tmp_path / "stage2"
    assert main(["report-gen", *RG2D, "task.stage=2", f"task.bridge_from={stage1}", "train.max_steps=2",
                 "optim.lr=0.01", "optim.warmup_steps=0", "data.eval_splits=[test]", f"out={run}"]) == 0
    written = [json.loads(ln)["generated"] for ln in (run / "generated_test.jsonl").read_text().splitlines()]
    ds = dataspec.pairs(load_config(run / "config.yaml").data, "test")
    first, _, _ = load_bridge_run(run)
    again, _, _ = load_bridge_run(run)
    a = [t for x in image_batches(ds, 32) for t in first.generate(x)]
    b = [t for x in image_batches(ds, 32) for t in again.generate(x)]
    assert a == written and b == written and any(a)
    base = load_language_model("llama_tiny").model.model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(first.lm.model.layers[0].self_attn.q_proj.weight, base)   # the LoRA update, merged
    assert first.lm is not load_language_model("llama_tiny").model                    # into a copy


def test_chat_with_a_run_and_an_image(stage1, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    img = tmp_path / "slice.png"
    Image.fromarray((np.random.default_rng(0).random((48, 40)) * 255).astype("uint8")).save(img)
    answers = []
    for _ in range(2):
        assert main(["chat", "--model", str(stage1), "--image", str(img), "--json", "--max-tokens", "5",
                     "Describe the image."]) == 0
        answers.append(json.loads(capsys.readouterr().out))
    assert answers[0]["answer"] == answers[1]["answer"] and answers[0]["new_tokens"] == 5
    assert "not a diagnosis" in answers[0]["label"] and "llava bridge" in answers[0]["model"]
    assert main(["chat", "--model", str(stage1), "--image", str(img), "Describe the image."]) == 0
    assert "research output, not a diagnosis" in capsys.readouterr().out


def test_vqa_3d_with_a_bridge(mini_root, tmp_path):
    out = tmp_path / "vqa3d"
    assert main(["vqa", str(ROOT / "configs/vqa_3d.yaml"), "train.progress=false", "train.batch_size=4",
                 "train.max_steps=2", "encoder.name=resnet_tiny", "task.decoder=llama_tiny", "task.max_len=4",
                 "data.eval_splits=[test]", f"out={out}"]) == 0
    rows = [json.loads(ln) for ln in (out / "answers_test.jsonl").read_text().splitlines()]
    closed = [r for r in rows if r["type"] == "CLOSED"]
    assert closed and all(r["predicted"] in ("yes", "no") for r in closed)
    info = json.loads((out / "assistant.json").read_text())
    assert info["encoder"]["spatial_dims"] == 3 and info["task"] == "vqa"
    methods = {r["method"] for r in json.loads((out / "results.json").read_text())}
    assert "majority answer per question (no image)" in methods


def test_qformer_bridge_on_3d_crops_then_chat_about_a_volume(mini_root, tmp_path, capsys):
    import nibabel as nib
    import numpy as np

    out = tmp_path / "qformer3d"
    assert main(["report-gen", str(ROOT / "configs/report_generation_3d.yaml"), "train.progress=false",
                 "train.batch_size=4", "train.max_steps=2", "encoder.name=resnet_tiny", "task.decoder=llama_tiny",
                 "task.bridge=qformer", "task.num_queries=4", "task.qformer_width=32", "task.max_len=4",
                 "data.eval_splits=[test]", f"out={out}"]) == 0
    info = json.loads((out / "assistant.json").read_text())
    assert info["bridge"] == "qformer" and info["bridge_options"] == {"num_queries": 4, "width": 32}
    state = json.loads((out / "checkpoints" / "last" / "state.json").read_text())
    weights = load_file(str(out / "checkpoints" / "last" / "model.safetensors"))
    assert not info["freeze_encoder"] and state["run_info"]["parameters"]["trainable"] == sum(
        v.numel() for k, v in weights.items() if "running_" not in k and "num_batches" not in k)  # from scratch
    assert "resnet_tiny-qformer-llama_tiny-stage1" in {r["method"] for r in
                                                       json.loads((out / "results.json").read_text())}
    vol = tmp_path / "crop.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((40, 40, 20)).astype(np.float32), np.eye(4)), vol)
    capsys.readouterr()
    assert main(["chat", "--model", str(out), "--image", str(vol), "--modality", "CT", "--json", "--max-tokens",
                 "3", "Describe the image."]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["new_tokens"] == 3 and rec["prompt_tokens"] == 4 + len(
        load_tokens("Describe the image."))      # four query tokens before the chat


def load_tokens(question: str) -> list[int]:
    from mmfm.encoders.text.llm import load_language_model

    tok = load_language_model("llama_tiny").tokenizer
    return list(tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                        tokenize=True, return_dict=True)["input_ids"])


@pytest.mark.parametrize(("extra", "message"), [
    (["task.dimm=3"], "unknown option 'task.dimm'"),
    (["task.stage=3"], "task.stage=3"),
    (["train.peft=lora"], "stage 1 trains the bridge alone"),
    (["task.decoder=smolm2"], "unknown language model 'smolm2'"),
    (["task.bridge=qformerr"], "unknown bridge"),
    (["task.num_queries=8"], "another bridge than task.bridge=llava"),
])
def test_bad_options_are_one_line_errors(extra, message, tmp_path, capsys):
    assert main(["report-gen", *RG2D, "train.max_steps=1", *extra, f"out={tmp_path / 'x'}"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_bad_runs_and_images_are_one_line_errors(stage1, tmp_path, capsys):
    import shutil

    import nibabel as nib
    import numpy as np

    def error(args: list[str]) -> str:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        return err

    # bridge_from must be a stage-1 run of the same language model
    assert "not a finished training run" in error(["report-gen", *RG2D, "task.stage=2",
                                                   f"task.bridge_from={tmp_path}", f"out={tmp_path / 'a'}"])
    assert "not a finished training run" in error(["chat", "--model", str(tmp_path), "hi"])
    vol = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)), vol)
    assert "2D" in error(["chat", "--model", str(stage1), "--image", str(vol), "hi"])
    changed = tmp_path / "changed"
    shutil.copytree(stage1, changed)
    state = changed / "checkpoints" / "last" / "state.json"
    s = json.loads(state.read_text())
    s["run_info"]["assistant"]["lm_sha256"] = "0" * 64
    state.write_text(json.dumps(s))
    assert "SHA-256" in error(["chat", "--model", str(changed), "hi"])


@pytest.mark.slow
def test_stage1_on_the_real_smollm2_then_chat_about_an_image(mini_root, tmp_path, capsys):
    """The same commands on SmolLM2-135M (a few minutes on 2 CPU cores)."""
    pytest.importorskip("gguf")
    import numpy as np
    from PIL import Image

    out = tmp_path / "smollm2"
    assert main(["report-gen", *RG2D, "task.decoder=smollm2", "train.max_steps=2", "data.eval_splits=[test]",
                 f"out={out}"]) == 0
    info = json.loads((out / "assistant.json").read_text())
    assert info["decoder"] == "smollm2" and info["lm_sha256"].startswith("b179c952")
    rows = [json.loads(ln) for ln in (out / "generated_test.jsonl").read_text().splitlines()]
    assert len(rows) == 67
    img = tmp_path / "slice.png"
    Image.fromarray((np.random.default_rng(0).random((32, 32)) * 255).astype("uint8")).save(img)
    capsys.readouterr()
    assert main(["chat", "--model", str(out), "--image", str(img), "--json", "--max-tokens", "6",
                 "Describe the image."]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["new_tokens"] >= 1 and "not a diagnosis" in rec["label"]


@pytest.mark.parametrize("layout", ["MIMIC-CXR", "IU-Xray"])
def test_a_bridge_on_the_users_image_report_pairs(layout, tmp_path, capsys):
    """image_text_csv (MIMIC-CXR style) and iu_xray folders train a bridge; the run answers about one of the
    files in that layout."""
    from tests.userdata import write_iu_xray, write_mimic_style_pairs

    root = (write_mimic_style_pairs if layout == "MIMIC-CXR" else write_iu_xray)(tmp_path / "data", n=12)
    out = tmp_path / "rg"
    assert main(["report-gen", *RG2D, "train.max_steps=2", f"data.dataset={layout}", f"data.root={root}",
                 "data.eval_splits=[test]", f"out={out}"]) == 0
    rows = [json.loads(ln) for ln in (out / "generated_test.jsonl").read_text().splitlines()]
    assert rows and all("lungs" in r["reference"].lower() or "effusion" in r["reference"].lower() for r in rows)
    assert json.loads((out / "assistant.json").read_text())["data"] == layout
    image = next(p for p in sorted(root.rglob("*.png")))
    capsys.readouterr()
    assert main(["chat", "--model", str(out), "--image", str(image), "--json", "--max-tokens", "3", "Findings?"]) == 0
    assert json.loads(capsys.readouterr().out)["new_tokens"] == 3


def test_a_bridge_answers_a_slake_style_vqa_json(tmp_path):
    from tests.cli.test_cli_vision_language import _slake

    root = tmp_path / "slake"
    _slake(root)
    out = tmp_path / "vqa"
    assert main(["vqa", str(ROOT / "configs/vqa_2d.yaml"), *TINY, "train.max_steps=2", "data.dataset=SLAKE",
                 f"data.root={root}", "data.modalities=[XR]", "data.eval_splits=[test]",
                 "task.encoder_from=random:vit_micro", f"out={out}"]) == 0
    rows = [json.loads(ln) for ln in (out / "answers_test.jsonl").read_text().splitlines()]
    closed = [r for r in rows if r["type"] == "CLOSED"]
    assert closed and all(r["predicted"] in ("Yes", "No") for r in closed)
    assert {r["question"] for r in rows} >= {"Is the image bright?", "What organ is shown?"}
    assert json.loads((out / "assistant.json").read_text())["encoder"]["name"] == "vit_micro"   # encoder_from
    from mmfm.workflows.bridge import load_bridge_run

    assert type(load_bridge_run(out)[0].encoder).__name__ == "ViTEncoder"
