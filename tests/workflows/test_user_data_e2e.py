"""End to end on the user's own data, one loader family at a time: pretrain -> exported encoder -> train from it ->
evaluate, 2D and 3D, image-text pairs, shards, and the Python API of the README."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from mmfm.cli.main import main
from mmfm.data import spec
from mmfm.workflows.config import load_config
from tests.torchrun import failure, torchrun

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from userdata import (  # noqa: E402
    write_ct_rate_style,
    write_iu_xray,
    write_labelled_folder,
    write_mimic_style_pairs,
    write_mixed_folder,
    write_nifti_seg_folder,
)

ROOT = Path(__file__).resolve().parents[2]
FAST = ["train.max_steps=2", "train.batch_size=4", "train.ckpt_every=2", "train.progress=false"]


@pytest.fixture(autouse=True)
def _fresh_scans():
    spec._LOADED.clear()
    yield
    spec._LOADED.clear()


def results(run: Path) -> list[dict]:
    assert json.loads((run / "status.json").read_text())["status"] == "complete"
    return json.loads((run / "results.json").read_text())


def test_folder_2d_pretrain_finetune_evaluate(tmp_path, dicom_path):
    mixed = tmp_path / "mixed"
    write_mixed_folder(mixed, dicom_path("CT_small.dcm"))
    lab = write_labelled_folder(tmp_path / "lab", n_per_class=8)
    pre = tmp_path / "pre"
    assert main(["pretrain", "configs/pretrain/simclr_2d.yaml", "data.dataset=folder", f"data.root={mixed}",
                 "data.size=[32,32]", "encoder.name=vit_micro", f"out={pre}", *FAST]) == 0
    spec_json = json.loads((pre / "encoder" / "encoder.json").read_text())
    assert spec_json["pretrain_data"] == "folder:train" and spec_json["contract"]["input_size"] == [32, 32]
    ft = tmp_path / "ft"
    assert main(["train", "configs/quickstart_classification.yaml", "data.dataset=folder", f"data.root={lab}",
                 "data.size=[32,32]", f"encoder.weights={pre / 'encoder'}", f"out={ft}", *FAST]) == 0
    recs = results(ft)
    assert {r["method"] for r in recs} == {"vit_micro-simclr"} and {r["dataset"] for r in recs} == {"folder"}
    ev = tmp_path / "ev"
    assert main(["evaluate", "--encoder", str(pre), "random:vit_micro", "--dataset", "folder", "--data-root",
                 str(lab), "--label", "label", "--fractions", "1.0", "--seeds", "0", "--out", str(ev),
                 "data.size=[32,32]"]) == 0
    assert {r["method"] for r in results(ev)} == {"vit_micro-simclr", "vit_micro-random"}


@pytest.mark.parametrize("fmt", ["mha", "nii.gz"])
def test_folder_3d_pretrain_finetune_evaluate(tmp_path, fmt):
    lab = write_labelled_folder(tmp_path / "vols", n_per_class=6, size=16, dims=3, fmt=fmt)
    pre, ft = tmp_path / "pre", tmp_path / "ft"
    assert main(["pretrain", "configs/pretrain/mae_3d.yaml", "data.dataset=folder", f"data.root={lab}",
                 "data.size=[16,16,16]", "encoder.name=vit_micro", "encoder.patch_size=4", f"out={pre}", *FAST]) == 0
    assert main(["train", "configs/classification_3d.yaml", "data.dataset=folder", f"data.root={lab}",
                 "data.size=[16,16,16]", f"encoder.weights={pre}", f"out={ft}", *FAST]) == 0
    assert {r["method"] for r in results(ft)} == {"vit_micro-mae"}


def test_msd_3d_segmentation_from_a_pretrained_encoder_with_patches_and_sliding_window(tmp_path):
    root = write_nifti_seg_folder(tmp_path / "msd", n=6)
    pre, seg = tmp_path / "pre", tmp_path / "seg"
    common = ["data.dataset=MSD", f"data.root={root}", "data.options={modality: CT}", "data.spacing=[2,2,2]",
              "data.patch=[16,16,16]", f"data.cache={tmp_path / 'cache'}"]
    assert main(["pretrain", "configs/pretrain/simclr_3d.yaml", *common, "encoder.name=vit_micro", f"out={pre}",
                 *FAST]) == 0
    assert main(["train", "configs/segmentation_3d.yaml", *common, "task={name: segmentation, num_classes: 2}",
                 f"encoder.weights={pre}", f"out={seg}", *FAST]) == 0
    recs = results(seg)
    assert {r["split"] for r in recs} == {"val", "test"}
    assert all(0.0 <= r["value"] <= 1.0 for r in recs if r["metric"].startswith(("dice_", "nsd_")))
    assert {"hd95_1", "nsd_1"} <= {r["metric"] for r in recs}      # mm: the volumes were resampled to 2 mm
    assert list((tmp_path / "cache").rglob("*.npz"))


def test_image_text_csv_pairs_feed_clip_retrieval_zeroshot_and_report_generation(tmp_path):
    pairs = write_mimic_style_pairs(tmp_path / "mimic", n=16)
    lab = write_labelled_folder(tmp_path / "lab", n_per_class=6, size=32)
    clip = tmp_path / "clip"
    assert main(["pretrain", "configs/pretrain/clip_2d.yaml", "data.dataset=MIMIC-CXR", f"data.root={pairs}",
                 "data.size=[32,32]", "encoder.name=vit_micro", f"out={clip}", *FAST]) == 0
    assert (clip / "dual").is_dir()
    rt = tmp_path / "rt"
    assert main(["retrieve", "--model", str(clip), "--dataset", "MIMIC-CXR", "--data-root", str(pairs),
                 "--out", str(rt), "data.size=[32,32]"]) == 0
    recs = results(rt)
    assert any(r["metric"] == "i2t_R@1" for r in recs) and {r["dataset"] for r in recs} == {"MIMIC-CXR"}
    zs = tmp_path / "zs"
    assert main(["zeroshot", "--model", str(clip), "--dataset", "folder", "--data-root", str(lab), "--label",
                 "label", "--out", str(zs), "data.size=[32,32]"]) == 0
    assert json.loads((zs / "prompts.json").read_text()).keys() == {"class0", "class1"}
    image = next(p for p in sorted(pairs.rglob("*")) if p.suffix.lower() in (".png", ".jpg", ".dcm"))
    why = tmp_path / "why"          # word-region maps from the saved image-text run
    assert main(["explain", str(image), "--model", str(clip), "--text", "pleural effusion", "--out", str(why)]) == 0
    rec = json.loads((why / "explain.json").read_text())
    assert "pleural" in "".join(rec["text_tokens"]) and (why / rec["maps"]["text"]).exists()
    from fastapi.testclient import TestClient

    from mmfm.app.server import create_app

    with TestClient(create_app(["litemedsam", str(clip)]), base_url="http://127.0.0.1") as c:  # loopback host only
        sid = c.post("/api/upload", content=image.read_bytes(), headers={"X-Filename": image.name}).json()["id"]
        r = c.post(f"/api/zeroshot/{sid}", json={"texts": ["pleural effusion", "no finding"]}).json()
        assert abs(sum(t["score"] for t in r["ranked"]) - 1) < 1e-5 and len(r["ranked"]) == 2
    rg = tmp_path / "rg"
    assert main(["report-gen", "configs/report_generation_2d.yaml", "data.dataset=MIMIC-CXR",
                 f"data.root={pairs}", "data.size=[32,32]", "encoder.name=vit_micro", f"out={rg}", *FAST]) == 0
    gen = [json.loads(line) for line in (rg / "generated_test.jsonl").read_text().splitlines()]
    assert gen and all("pleural" in g["reference"] or "lungs" in g["reference"] for g in gen)
    assert "GENERATED" not in (rg / "report.md").read_text()      # real reports here, not mini's captions


def test_iu_xray_pairs_feed_medclip_with_labeller_soft_targets(tmp_path):
    root = write_iu_xray(tmp_path / "iu", n=12)
    data = load_config(None, ["data.dataset=IU-Xray", f"data.root={root}", "data.size=[32,32]"]).data
    pairs = spec.pairs(data, "train")
    assert any("effusion" in t.lower() for t in pairs.texts) and len(pairs.texts) == len(pairs)
    out = tmp_path / "medclip"
    assert main(["pretrain", "configs/pretrain/medclip_2d.yaml", "data.dataset=IU-Xray", f"data.root={root}",
                 "data.size=[32,32]", "encoder.name=vit_micro", "objective.semantic=findings", f"out={out}",
                 *FAST]) == 0
    assert (out / "dual").is_dir() and results(out)[0]["dataset"] == "IU-Xray"


def test_image_csv_family_trains_a_classifier(tmp_path):
    root = write_labelled_folder(tmp_path / "mc", n_per_class=8)      # images + labels.csv, as MC-CXR is laid out
    out = tmp_path / "cls"
    assert main(["train", "configs/quickstart_classification.yaml", "data.dataset=MC-CXR", f"data.root={root}",
                 "data.options={patient_column: patient}", "data.size=[24,24]", "encoder.name=vit_micro",
                 f"out={out}", *FAST]) == 0
    assert {r["dataset"] for r in results(out)} == {"MC-CXR"}


def test_ct_rate_style_volume_report_pairs_pretrain_3d_clip_and_retrieve(tmp_path):
    root = write_ct_rate_style(tmp_path / "ctrate", n=12)
    out = tmp_path / "clip3d"
    common = ["data.dataset=CT-RATE", f"data.root={root}", "data.size=[16,16,16]"]
    assert main(["pretrain", "configs/pretrain/clip_3d.yaml", *common, f"out={out}", *FAST]) == 0
    assert json.loads((out / "encoder" / "encoder.json").read_text())["spatial_dims"] == 3
    assert main(["retrieve", "--model", str(out), "--dataset", "CT-RATE", "--data-root", str(root), "--splits",
                 "train", "--out", str(tmp_path / "rt"), "data.size=[16,16,16]"]) == 0
    assert any(r["metric"] == "t2i_R@1" for r in results(tmp_path / "rt"))


def test_report_sections_of_a_csv_feed_section_matching(tmp_path):
    pairs = write_mimic_style_pairs(tmp_path / "mimic", n=16)
    out = tmp_path / "sm"
    assert main(["retrieve", "--text-encoder", "minilm", "--dataset", "MIMIC-CXR", "--data-root", str(pairs),
                 "--splits", "train", "--out", str(out)]) == 0
    recs = results(out)
    assert any(r["task"] == "section_matching" and r["metric"] == "R@1" for r in recs)


def test_medmnist_npz_pretrains(tmp_path):
    p = tmp_path / "breastmnist.npz"
    rng = np.random.default_rng(0)
    np.savez(p, **{f"{s}_images": rng.integers(0, 255, (12, 28, 28), dtype=np.uint8) for s in ("train", "val", "test")},
             **{f"{s}_labels": rng.integers(0, 2, (12, 1)) for s in ("train", "val", "test")})
    out = tmp_path / "pre"
    assert main(["pretrain", "configs/pretrain/simclr_2d.yaml", "data.dataset=MMR-BreastUltrasound",
                 f"data.root={p}", "data.size=[28,28]", "encoder.name=vit_micro", f"out={out}", *FAST]) == 0
    assert json.loads((out / "encoder" / "encoder.json").read_text())["pretrain_data"] == "MMR-BreastUltrasound:train"


def test_shards_feed_pretraining_and_training(tmp_path):
    lab = write_labelled_folder(tmp_path / "lab", n_per_class=10)
    sh = tmp_path / "shards"
    assert main(["data", "shard", str(lab), str(sh), "--shard-size", "4", "data.size=[24,24]"]) == 0
    pre, ft = tmp_path / "pre", tmp_path / "ft"
    assert main(["pretrain", "configs/pretrain/simclr_2d.yaml", "data.dataset=shards", f"data.root={sh}",
                 "encoder.name=vit_micro", f"out={pre}", *FAST]) == 0
    assert main(["train", "configs/quickstart_classification.yaml", "data.dataset=shards", f"data.root={sh}",
                 f"encoder.weights={pre}", f"out={ft}", *FAST]) == 0
    assert {r["dataset"] for r in results(ft)} == {"shards:folder"}


def test_a_label_budget_on_streamed_shards_is_refused_with_a_hint(tmp_path, capsys):
    lab = write_labelled_folder(tmp_path / "lab", n_per_class=4)
    sh = tmp_path / "shards"
    assert main(["data", "shard", str(lab), str(sh), "data.size=[24,24]"]) == 0
    capsys.readouterr()
    assert main(["train", "configs/quickstart_classification.yaml", "data.dataset=shards", f"data.root={sh}",
                 "data.label_fraction=0.5", "encoder.name=vit_micro", f"out={tmp_path / 'o'}", *FAST]) == 2
    err = capsys.readouterr().err
    assert "needs random access" in err and "source folder" in err and "Traceback" not in err


def test_data_prepare_folder_writes_the_card_outside_the_data(tmp_path, dicom_path, capsys):
    mixed = tmp_path / "mixed"
    write_mixed_folder(mixed, dicom_path("CT_small.dcm"))
    before = sorted(p.name for p in mixed.rglob("*"))
    assert main(["data", "prepare", "folder", "--root", str(mixed), "--out", str(tmp_path / "card")]) == 0
    card = json.loads((tmp_path / "card" / "card.json").read_text())
    assert card["samples"] == 8 and card["skipped"][0]["file"] == "broken.png"
    assert sorted(p.name for p in mixed.rglob("*")) == before          # nothing written into the user's folder


def test_bad_folder_input_is_one_line_with_exit_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["pretrain", "configs/pretrain/simclr_2d.yaml", "data.dataset=folder",
                 f"data.root={tmp_path / 'empty'}", f"out={tmp_path / 'o'}", *FAST]) == 2
    err = capsys.readouterr().err
    assert "no readable image in this folder" in err and "Traceback" not in err
    assert main(["evaluate", "--encoder", "random:vit_micro", "--dataset", "folder", "--data-root",
                 str(tmp_path), "train.max_steps=3"]) == 2
    assert "takes data options only" in capsys.readouterr().err


def test_python_api_examples_in_the_readme_run(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "the README's Python API section has no example"
    (tmp_path / "configs").symlink_to(ROOT / "configs")   # the examples run from the repository root
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    for code in blocks:
        exec(compile(code, "README.md", "exec"), scope)     # noqa: S102  (the README's own examples)
    assert scope["features"].shape == (1, scope["encoder"].out_dim)
    assert (tmp_path / "runs" / "api" / "encoder" / "encoder.json").exists()


@pytest.mark.long
def test_folder_pretraining_runs_data_parallel_on_2_processes(tmp_path):
    lab = write_labelled_folder(tmp_path / "lab", n_per_class=8)
    out = tmp_path / "ddp"
    r = torchrun(["-m", "mmfm.cli.main", "pretrain", "configs/pretrain/simclr_2d.yaml", "data.dataset=folder",
                  f"data.root={lab}", "data.size=[24,24]", "encoder.name=vit_micro", "train.workers=1", f"out={out}",
                  *FAST], cwd=ROOT)
    assert r.returncode == 0, failure(r)
    assert (out / "encoder" / "encoder.safetensors").exists() and results(out)[0]["dataset"] == "folder"


def test_shards_stream_through_evaluate_zeroshot_retrieve_and_report_generation(tmp_path):
    pairs = write_mimic_style_pairs(tmp_path / "mimic", n=16)
    lab = write_labelled_folder(tmp_path / "lab", n_per_class=10)
    sh_pairs, sh_lab = tmp_path / "sh_pairs", tmp_path / "sh_lab"
    assert main(["data", "shard", str(pairs), str(sh_pairs), "--dataset", "MIMIC-CXR", "--shard-size", "3",
                 "data.size=[32,32]"]) == 0
    assert main(["data", "shard", str(lab), str(sh_lab), "--shard-size", "4", "data.size=[32,32]"]) == 0
    ev = tmp_path / "ev"
    assert main(["evaluate", "--encoder", "random:resnet_small", "--dataset", "shards", "--data-root", str(sh_lab),
                 "--fractions", "0.5", "1.0", "--seeds", "0", "--out", str(ev)]) == 0
    direct = tmp_path / "ev_direct"
    assert main(["evaluate", "--encoder", "random:resnet_small", "--dataset", "folder", "--data-root", str(lab),
                 "--label", "label", "--fractions", "0.5", "1.0", "--seeds", "0", "--out", str(direct),
                 "data.size=[32,32]"]) == 0
    # the same images (stored as the float32 the folder path computes), labels, splits and label budgets: the
    # same numbers, streamed or read from the folder. Evaluation reads the shards' training split in the order it
    # was written (the folder's order), so the seeded label subset of 0.5 picks the same samples on both paths;
    # the calibration metrics are compared too: they read the probabilities themselves.
    key = lambda r: (r["task"], r["metric"], r["label_fraction"])  # noqa: E731
    streamed, folder = ({key(r): r["value"] for r in results(run)} for run in (ev, direct))
    assert streamed.keys() == folder.keys() and {"ece", "brier"} <= {k[1] for k in folder}
    assert all(abs(streamed[k] - folder[k]) < 1e-6 for k in folder), \
        {k: (streamed[k], folder[k]) for k in folder if abs(streamed[k] - folder[k]) >= 1e-6}
    clip = tmp_path / "clip"
    assert main(["pretrain", "configs/pretrain/clip_2d.yaml", "data.dataset=shards", f"data.root={sh_pairs}",
                 "encoder.name=vit_micro", f"out={clip}", *FAST]) == 0
    assert main(["retrieve", "--model", str(clip), "--dataset", "shards", "--data-root", str(sh_pairs), "--out",
                 str(tmp_path / "rt")]) == 0
    assert main(["zeroshot", "--model", str(clip), "--dataset", "shards", "--data-root", str(sh_lab), "--out",
                 str(tmp_path / "zs")]) == 0
    rg = tmp_path / "rg"
    assert main(["report-gen", "configs/report_generation_2d.yaml", "data.dataset=shards", f"data.root={sh_pairs}",
                 "encoder.name=vit_micro", f"out={rg}", *FAST]) == 0
    n_test = sum(s["samples"] for s in json.loads((sh_pairs / "shards.json").read_text())["splits"]["test"])
    assert (rg / "generated_test.jsonl").read_text().count("\n") == n_test
