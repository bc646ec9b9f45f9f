# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Image-text pretraining on your pairs, then zero-shot classification and retrieval
#
# CLIP-style pretraining pulls an image and its text together in one embedding space and pushes the other texts of
# the batch away. The result classifies images it was never given labels for (zero-shot: each class name is put
# into prompt templates and every image goes to the most similar class) and retrieves texts for images and images
# for texts. Here:
#
# 1. write a small folder of image-text pairs (`captions.csv`: `image,text,patient`), as you would for your own
#    images and reports, and a labelled folder for zero-shot scoring;
# 2. pretrain CLIP for a few steps: a small ResNet image tower from scratch, the packaged MiniLM text tower frozen
#    (only its projection learns) (`mmfm.pretrain`);
# 3. score zero-shot classification (`mmfm.zeroshot`) and image<->text retrieval (`mmfm.retrieve`).
#
# No registry package ships real image-report pairs; the pairs here are real CT and MRI patches from mmfm's `mini`
# corpus (LiTS case 117, MNI152) with captions *generated from their tissue labels* ("CT patch centred on liver,
# from the middle third of the liver."), so what the model learns is the label, worded several ways.

# %%
import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

import mmfm

mini = mmfm.prepare("mini")
patches = np.load(mini / "patches2d.npz")
names = json.loads((mini / "card.json").read_text())["sets"]["patches2d"]["labels"]["tissue"]
CLASSES = ("ct_background", "liver", "liver_tumour", "brain_grey_matter")

pairs, labelled = Path("my_pairs"), Path("my_labelled")
rng = np.random.default_rng(0)
pair_rows, label_rows = [], []
for cls in CLASSES:
    idx = rng.permutation(np.flatnonzero(patches["tissue"] == names.index(cls)))
    for n, i in enumerate(idx[:110]):
        png = Image.fromarray((patches["image"][i, 0] * 255).round().astype(np.uint8))
        if n < 80:                                   # 80 pairs per class for pretraining and retrieval
            rel = f"images/{cls}_{n:03d}.png"
            (pairs / "images").mkdir(parents=True, exist_ok=True)
            png.save(pairs / rel)
            pair_rows.append({"image": rel, "text": str(patches["caption"][i]), "patient": f"{cls}-{n // 4}"})
        else:                                        # 30 other images per class, labelled by class name
            rel = f"{cls}/{n:03d}.png"
            (labelled / cls).mkdir(parents=True, exist_ok=True)
            png.save(labelled / rel)
            label_rows.append({"image": rel, "label": cls.replace("_", " "), "patient": f"{cls}-z{n // 4}"})
for folder, table, rows in ((pairs, "captions.csv", pair_rows), (labelled, "labels.csv", label_rows)):
    with open(folder / table, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
print(len(pair_rows), "pairs, e.g.", pair_rows[0])
print(len(label_rows), "labelled images, classes:", sorted({r["label"] for r in label_rows}))

# %% [markdown]
# ## Pretrain CLIP on the pairs
#
# A `folder` with a `captions.csv` (`image,text`) is image-text pairs, read as the catalog's image-text datasets
# (ROCO, PMC-OA, MIMIC-CXR, ...) are; `data.options` says which column holds the patient, so the pairs are split
# 70/15/15 by patient and retrieval is scored on pairs the model never saw.

# %%
pair_data = {"dataset": "folder", "root": str(pairs), "size": [32, 32], "options": {"patient_column": "patient"}}
print(mmfm.load_dataset(pairs, dataset="folder", kind="pairs", size=(32, 32),
                        options={"patient_column": "patient"})[0]["text"])
run = mmfm.pretrain({
    "encoder": {"name": "resnet_small"},
    "text_encoder": {"name": "minilm"},
    "objective": {"name": "clip", "embed_dim": 128, "temperature": 0.07, "freeze_text": True, "max_length": 32},
    "data": pair_data,
    "train": {"max_steps": 60, "batch_size": 64, "ckpt_every": 60, "progress": False, "seed": 0},
    "optim": {"lr": 0.001, "warmup_steps": 5},
    "out": "runs/clip",
})
assert (run / "dual").is_dir() and (run / "encoder").is_dir()
print(sorted(p.name for p in run.iterdir()))

# %% [markdown]
# ## Zero-shot classification of the labelled folder
#
# The class names come from the labels (`liver tumour`, ...); the labels themselves are used only to score.

# %%
records = mmfm.zeroshot(run, labelled, dataset="folder", label="label", out="runs/zeroshot",
                        overrides=["data.size=[32,32]"])
zs = {(r.split, r.metric): r.value for r in records}
print({k: round(v, 3) for k, v in zs.items()})
print(json.loads(Path("runs/zeroshot/prompts.json").read_text())["liver tumour"][:2])

# %% [markdown]
# ## Retrieval on the held-out pairs
#
# For each test image, where does its own caption rank among all test captions (and the other way round)? Recall@K
# is the fraction found in the top K; the records carry the chance level of each.

# %%
records = mmfm.retrieve(run, pairs, dataset="folder", out="runs/retrieve",
                        overrides=["data.size=[32,32]", "data.options={patient_column: patient}"])
rt = {r.metric: r.value for r in records}
print({k: round(v, 3) for k, v in rt.items()})

# %% [markdown]
# With four classes and captions that name them, a few dozen steps already place images near the texts of their
# class: zero-shot balanced accuracy and Recall@10 clear their chance levels. Identical captions count as one text
# (`distinct_texts`), so the chance levels are those of the distinct texts; real reports differ per image.

# %%
bacc = next(v for (split, metric), v in zs.items() if metric == "balanced_accuracy")
assert bacc > zs[("test", "chance_balanced_accuracy")] + 0.15, zs
assert rt["i2t_R@10"] > rt["i2t_chance_R@10"] and rt["t2i_R@10"] > rt["t2i_chance_R@10"], rt
assert rt["i2t_R@1"] > rt["i2t_chance_R@1"], rt
