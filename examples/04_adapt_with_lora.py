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
# # Adapt a pretrained encoder with LoRA
#
# Low-rank adaptation (LoRA, Hu et al. 2022) freezes a pretrained network and learns a small low-rank update
# `W + (alpha / r) B A` beside chosen linear layers: a few percent of the parameters train, and the adapter is saved
# on its own. Here:
#
# 1. write a small labelled folder (real CT and MRI patches of mmfm's `mini` corpus, as PNG + `labels.csv`);
# 2. pretrain a small ResNet on its images with SimCLR for a few steps, as in tutorial 02;
# 3. `mmfm.train` a classification head on that encoder with `train.peft=lora`, the encoder's own weights frozen;
# 4. read what trained, the test metrics, and apply the run to a new image with `mmfm.load_trained`.
#
# The same keys adapt a bigger pretrained encoder, e.g. LiteMedSAM's (`"encoder": {"name": "litemedsam",
# "pretrained": True, "input_size": 64}`); on a laptop CPU that takes minutes rather than seconds.

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

root = Path("my_labelled")
rng = np.random.default_rng(1)
rows, unused = [], {}
for cls in ("ct_background", "liver", "brain_grey_matter"):
    idx = rng.permutation(np.flatnonzero(patches["tissue"] == names.index(cls)))
    unused[cls] = idx[60:70]                                      # ten patches kept out of the folder
    for n, i in enumerate(idx[:60]):
        rel = f"{cls}/{n:03d}.png"
        (root / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray((patches["image"][i, 0] * 255).round().astype(np.uint8)).save(root / rel)
        rows.append({"image": rel, "label": cls, "patient": f"{cls}-{n // 4}"})
with open(root / "labels.csv", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=["image", "label", "patient"])
    writer.writeheader()
    writer.writerows(rows)
print(len(rows), "labelled images")

# %% [markdown]
# ## Pretrain
#
# SimCLR on the folder's images (its labels are not used), with a ResNet small enough for a CPU.

# %%
data = {"dataset": "folder", "root": str(root), "label": "label", "size": [32, 32], "eval_splits": ["test"]}
pretrained = mmfm.pretrain({
    "encoder": {"name": "resnet_small"},
    "objective": {"name": "simclr", "temperature": 0.1},
    "data": data,
    "train": {"max_steps": 40, "batch_size": 32, "ckpt_every": 40, "progress": False, "seed": 0},
    "optim": {"lr": 0.001, "warmup_steps": 5},
    "out": "runs/simclr",
})

# %% [markdown]
# ## Train with LoRA
#
# The config is the one `mmfm train` reads (`configs/quickstart_classification.yaml`, docs/adaptation.md), as a
# dict. `encoder.weights` starts from the pretrained run; `train.peft` picks the adapter (`lora`, `dora`, `loha`,
# `lokr`), `peft_rank` and `peft_alpha` its size and scale; `peft_targets` may name the layers (default: every
# linear layer of the encoder; every convolution of a CNN, as here). The classification head trains in full.

# %%
run = mmfm.train({
    "task": {"name": "classification"},
    "encoder": {"name": "resnet_small", "weights": str(pretrained)},
    "data": data,
    "train": {"max_steps": 60, "batch_size": 32, "ckpt_every": 60, "log_every": 10, "progress": False, "seed": 0,
              "peft": "lora", "peft_rank": 4, "peft_alpha": 8},
    "optim": {"lr": 0.01, "warmup_steps": 5},
    "out": "runs/lora",
})
print(sorted(p.name for p in run.iterdir()))

# %% [markdown]
# ## What trained
#
# `adapter/adapter.json` records the method, rank and the fraction of the parameters that trained; the adapter
# weights sit beside it, so the pretrained weights need not be copied.

# %%
adapter = json.loads((run / "adapter" / "adapter.json").read_text())
print({k: adapter[k] for k in ("method", "rank", "fraction") if k in adapter})
assert adapter["method"] == "lora" and adapter["rank"] == 4 and 0 < adapter["fraction"] < 0.2, adapter

# %% [markdown]
# ## How good is it
#
# `results.json` holds the metrics on the test split (by patient, never seen in training).

# %%
results = {r["metric"]: r["value"] for r in json.loads((run / "results.json").read_text()) if r["split"] == "test"}
print({k: round(v, 3) for k, v in results.items() if isinstance(v, float)})
assert results["balanced_accuracy"] > 1 / 3 + 0.2, results

# %% [markdown]
# ## Apply it to a new image
#
# `mmfm.load_trained` reloads the run (the adapter merged into the encoder: a plain torch module) with its own
# preprocessing; `.predict` takes a path, an `mmfm.read_image` image or an array and returns the class
# probabilities (with the temperature calibrated on the validation split, where there is one).

# %%
model = mmfm.load_trained(run)
Image.fromarray((patches["image"][unused["liver"][0], 0] * 255).round().astype(np.uint8)).save("new_patch.png")
out = model.predict("new_patch.png")
print(out)
assert abs(sum(out["probabilities"].values()) - 1) < 1e-4

# %% [markdown]
# Arrays work too (here the thirty patches kept out of the folder, scaled as the PNGs were):

# %%
hits = []
for cls, idx in unused.items():
    for i in idx:
        image = (patches["image"][i, 0] * 255).round()            # (I, J)
        hits.append(model.predict(image)["predicted"] == cls)
print(f"{sum(hits)} of {len(hits)} unseen patches classified correctly")
assert np.mean(hits) > 0.6, np.mean(hits)
