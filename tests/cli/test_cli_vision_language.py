"""The vision-language commands end to end on tiny budgets: pretrain (CLIP, report section matching),
zeroshot, retrieve, report-gen, vqa; each writes results.json and a complete status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmfm.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
TINY = ["train.max_steps=2", "train.progress=false", "train.batch_size=8"]


def _results(out: Path) -> dict:
    assert json.loads((out / "status.json").read_text())["status"] == "complete"
    assert (out / "report.md").exists()
    return {(r["split"], r["metric"]): r["value"] for r in json.loads((out / "results.json").read_text())}


@pytest.fixture(scope="module")
def clip_run(mini_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("clip")
    assert main(["pretrain", str(ROOT / "configs/pretrain/clip_2d.yaml"), *TINY, "encoder.name=resnet_tiny",
                 "text_encoder.name=bert_tiny", "objective.freeze_text=false", f"out={out}"]) == 0
    for f in ("encoder/encoder.json", "text_encoder/text_encoder.json", "dual/dual.json", "dual/dual.safetensors"):
        assert (out / f).exists(), f
    return out


def test_zeroshot(clip_run, tmp_path, capsys):
    out = tmp_path / "zs"
    assert main(["zeroshot", "--model", str(clip_run), "--templates", "a {name}.", "{name}", "--out", str(out)]) == 0
    r = _results(out)
    assert 0.0 <= r[("test", "balanced_accuracy")] <= 1.0 and r[("test", "chance_balanced_accuracy")] == 0.2
    prompts = json.loads((out / "prompts.json").read_text())
    assert prompts["liver_tumour"] == ["a liver tumour.", "liver tumour"]
    assert "zeroshot" in capsys.readouterr().out


def test_retrieve_images_and_texts(clip_run, tmp_path):
    out = tmp_path / "rt"
    assert main(["retrieve", "--model", str(clip_run), "--out", str(out)]) == 0
    r = _results(out)
    for k in ("i2t_R@1", "i2t_R@5", "i2t_R@10", "t2i_R@1", "t2i_chance_R@1"):
        assert 0.0 <= r[("test", k)] <= 1.0
    assert (out / "plots" / "retrieval_test.png").exists()
    assert "retrieval test" in (out / "report.html").read_text()     # the examples are on the report page


def test_report_pretraining_then_section_matching(mini_root, tmp_path):
    run = tmp_path / "rsm"
    assert main(["pretrain", str(ROOT / "configs/pretrain/rsm_minilm.yaml"), *TINY, "text_encoder.name=bert_tiny",
                 "objective.max_length=32", f"out={run}"]) == 0
    assert (run / "text_encoder" / "text_encoder.safetensors").exists() and not (run / "encoder").exists()
    out = tmp_path / "sm"
    assert main(["retrieve", "--text-encoder", str(run), "--out", str(out), "task.max_length=32"]) == 0
    r = _results(out)
    assert r[("test", "queries")] > 300 and 0 <= r[("test", "R@1")] <= r[("test", "R@5")] <= 1


def test_report_generation(mini_root, tmp_path):
    out = tmp_path / "rg"
    assert main(["report-gen", str(ROOT / "configs/report_generation_2d.yaml"), *TINY, "encoder.name=resnet_tiny",
                 "task.max_len=8", "data.eval_splits=[test]", f"out={out}"]) == 0
    r = _results(out)
    for k in ("BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr-D", "CE_F1"):
        assert ("test", k) in r
    rows = [json.loads(ln) for ln in (out / "generated_test.jsonl").read_text().splitlines()]
    assert len(rows) == 67 and {"generated", "reference"} <= set(rows[0])


def test_vqa(mini_root, tmp_path):
    out = tmp_path / "vqa"
    assert main(["vqa", str(ROOT / "configs/vqa_2d.yaml"), *TINY, "encoder.name=resnet_tiny",
                 "text_encoder.name=bert_tiny", "data.eval_splits=[test]", f"out={out}"]) == 0
    r = _results(out)
    assert {"closed_accuracy", "open_exact_match", "open_token_f1"} <= {m for _, m in r}
    rows = [json.loads(ln) for ln in (out / "answers_test.jsonl").read_text().splitlines()]
    closed = [x for x in rows if x["type"] == "CLOSED"]
    assert closed and all(x["predicted"] in ("yes", "no") for x in closed)


def test_zeroshot_without_a_vision_language_run_is_a_clear_error(tmp_path, capsys):
    assert main(["zeroshot", "--model", str(tmp_path), "--out", str(tmp_path / "z")]) == 2
    assert "dual.json" in capsys.readouterr().err


def _slake(root: Path) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    split_files = {"train": "train.json", "val": "validate.json", "test": "test.json"}
    for split, name in split_files.items():
        items = []
        for i in range(6):
            bright = i % 2 == 0
            img = (rng.random((24, 24)) * 60 + (180 if bright else 20)).astype("uint8")
            rel = f"xmlab{split}{i}/source.png"
            (root / "imgs" / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(root / "imgs" / rel)
            items += [{"img_name": rel, "question": "Is the image bright?", "answer": "Yes" if bright else "No",
                       "answer_type": "CLOSED", "q_lang": "en"},
                      {"img_name": rel, "question": "What organ is shown?", "answer": "lung" if bright else "liver",
                       "answer_type": "OPEN", "q_lang": "en"},
                      {"img_name": rel, "question": "图像亮吗?", "answer": "是", "q_lang": "zh"}]
        (root / name).write_text(json.dumps(items))


def test_vqa_on_a_slake_style_dataset(tmp_path):
    root = tmp_path / "slake"
    _slake(root)
    out = tmp_path / "vqa"
    assert main(["vqa", str(ROOT / "configs/vqa_2d.yaml"), *TINY, "encoder.name=resnet_tiny",
                 "text_encoder.name=bert_tiny", "data.dataset=SLAKE", f"data.root={root}", "data.modalities=[XR]",
                 "data.size=[32,32]", "data.eval_splits=[val,test]", f"out={out}"]) == 0
    r = _results(out)
    assert r[("test", "questions")] == 12 and r[("val", "questions")] == 12     # English questions only
    rows = [json.loads(ln) for ln in (out / "answers_test.jsonl").read_text().splitlines()]
    assert {x["type"] for x in rows} == {"CLOSED", "OPEN"}
    assert all(x["predicted"] in ("Yes", "No") for x in rows if x["type"] == "CLOSED")


def test_data_label_and_mesh_check(mini_root, tmp_path, capsys):
    assert main(["data", "label", "No pleural effusion. Possible cardiomegaly."]) == 0
    assert json.loads(capsys.readouterr().out) == {"effusion": 0, "cardiomegaly": -1, "normal": 0}
    out = tmp_path / "lab"
    assert main(["data", "label", "--check-mesh", "--out", str(out)]) == 0
    recs = {(r["task"], r["split"], r["metric"]): r["value"] for r in json.loads((out / "results.json").read_text())}
    support = [recs[("labeller/cardiomegaly", part, "support")] for part in ("dev", "held_out")]
    assert sum(support) == 375 and min(support) > 0      # IU MeSH: 375 reports with Cardiomegaly, over both parts
    for part in ("dev", "held_out"):
        assert recs[("labeller/cardiomegaly", part, "precision")] > 0.9
        assert recs[("labeller/opacity", part, "recall")] > 0.9
    assert main(["data", "label"]) == 2
