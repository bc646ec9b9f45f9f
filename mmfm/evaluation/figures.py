"""Figures a run draws from its trained model for the report: segmentation cases (best, median, worst by Dice)
and a 2D map of the encoder's embeddings coloured by label and by modality."""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmfm.data.batches import iter_items


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, out_png: Path, dpi: int = 90) -> Path:
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=dpi)
    _plt().close(fig)
    return out_png


def _plane(a: np.ndarray) -> np.ndarray:
    """(*spatial) -> a 2D view (rows x columns): a 3D array shows its middle slice."""
    return (a[..., a.shape[-1] // 2] if a.ndim == 3 else a).T


@torch.no_grad()
def plot_segmentation_cases(model: Any, dataset: Any, out_png: Path, max_images: int = 64) -> Path | None:
    """Best, median and worst test images by mean foreground Dice: image, reference and prediction outlines."""
    from mmfm.evaluation.metrics.segmentation import dice_rows

    model.eval()
    device = next(model.parameters()).device
    scored = []
    for i, item in enumerate(islice(iter_items(dataset), max_images)):
        x = torch.as_tensor(item["image"])[None].to(device)
        if not hasattr(model, "logits"):
            return None
        p = model.logits(x).argmax(1, keepdim=True).cpu()
        t = torch.as_tensor(item["mask"])[None]
        d = dice_rows(p, t.long(), model.num_classes)[0]
        d = d[~torch.isnan(d)]
        if len(d):
            scored.append((float(d.mean()), i, p[0, 0].numpy(), t[0, 0].numpy(), np.asarray(item["image"])[0]))
    if not scored:
        return None
    scored.sort(key=lambda s: s[0])
    picks = {"worst": scored[0], "median": scored[len(scored) // 2], "best": scored[-1]}
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
    for ax, (name, (dice, idx, pred, ref, img)) in zip(axes, picks.items()):
        ax.imshow(_plane(img), cmap="gray")
        for lab in np.unique(ref[ref > 0]):
            ax.contour(_plane((ref == lab).astype(float)), levels=[0.5], colors="lime", linewidths=0.8)
        for lab in np.unique(pred[pred > 0]):
            ax.contour(_plane((pred == lab).astype(float)), levels=[0.5], colors="red", linewidths=0.8)
        ax.set_title(f"{name}: Dice {dice:.2f} (test image {idx})", fontsize=9)
        ax.axis("off")
    fig.suptitle("segmentation cases (green: reference, red: prediction)", fontsize=9)
    return _save(fig, out_png)


@torch.no_grad()
def plot_case_overlays(model: Any, dataset: Any, rows: list[dict[str, Any]], out_png: Path,
                       roi_size: tuple[int, ...] = ()) -> Path | None:
    """Best, median and worst case of a per-case table (:mod:`mmfm.evaluation.per_case`), each predicted again
    (sliding windows of ``roi_size`` for whole volumes, as evaluated): image, reference (green) and prediction
    (red) outlines; a volume shows the slice with the most reference foreground. A case where the model predicts
    nothing says so in its title."""
    from mmfm.evaluation.per_case import mean_dice, picks

    chosen = picks(rows)
    if not chosen or not hasattr(model, "logits"):
        return None
    model.eval()
    device = next(model.parameters()).device
    plt = _plt()
    fig, axes = plt.subplots(1, len(chosen), figsize=(3.4 * len(chosen), 3.6), squeeze=False)
    for ax, (name, row) in zip(axes[0], chosen.items()):
        item = dataset[int(row["index"])]
        x = torch.as_tensor(item["image"])[None].to(device)
        if roi_size:
            from monai.inferers import sliding_window_inference

            logits = sliding_window_inference(x, tuple(roi_size), sw_batch_size=4, predictor=model.logits,
                                              overlap=0.25, mode="gaussian")
        else:
            logits = model.logits(x)
        pred = logits.argmax(1)[0].cpu().numpy()
        ref = np.asarray(item["mask"])[0]
        img = np.asarray(item["image"])[0]
        if img.ndim == 3:       # the slice with the most reference foreground (else the middle one)
            k = int(np.argmax((ref > 0).sum((0, 1)))) if ref.any() else img.shape[-1] // 2
            img, ref, pred = img[..., k], ref[..., k], pred[..., k]
        ax.imshow(img.T, cmap="gray")
        for lab in np.unique(ref[ref > 0]):
            ax.contour((ref == lab).T.astype(float), levels=[0.5], colors="lime", linewidths=0.8)
        for lab in np.unique(pred[pred > 0]):
            ax.contour((pred == lab).T.astype(float), levels=[0.5], colors="red", linewidths=0.8)
        empty = " -- predicts NOTHING" if row.get("empty_prediction") else ""
        ax.set_title(f"{name}: {row['case']}, Dice {mean_dice(row):.2f}{empty}", fontsize=8)
        ax.axis("off")
    fig.suptitle("per-case results (green: reference, red: prediction)", fontsize=9)
    return _save(fig, out_png)


@torch.no_grad()
def plot_embeddings(encoder: Any, dataset: Any, out_png: Path, class_names: list[str] | None = None,
                    max_images: int = 512) -> Path | None:
    """The first two principal components of the encoder's pooled features, coloured by label and by modality."""
    every = list(islice(iter_items(dataset), max_images))
    n = len(every)
    if n < 3:
        return None
    encoder.eval()
    device = next(encoder.parameters()).device
    feats, labels, mods = [], [], []
    for start in range(0, n, 64):
        items = every[start:start + 64]
        x = torch.stack([torch.as_tensor(it["image"]) for it in items]).to(device)
        feats.append(encoder(x)["pooled"].float().cpu())
        labels += [int(it["label"]) if "label" in it else -1 for it in items]
        mods += [str(it.get("modality", "")) for it in items]
    f = torch.cat(feats)
    f = f - f.mean(0)
    _, _, v = torch.pca_lowrank(f, q=2, center=False)
    xy = (f @ v[:, :2]).numpy()
    if not any(mods) and hasattr(dataset, "modality"):
        mods = [str(m) for m in np.asarray(dataset.modality)[:n]]
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, values, what in ((axes[0], labels, "label"), (axes[1], mods, "modality")):
        for val in sorted(set(values), key=str):
            sel = np.array([v == val for v in values])
            name = (class_names[val] if what == "label" and class_names and 0 <= val < len(class_names)
                    else str(val) or "unknown")
            ax.scatter(xy[sel, 0], xy[sel, 1], s=8, label=name, alpha=0.7)
        ax.set_title(f"embeddings (PCA) by {what}", fontsize=9)
        ax.legend(fontsize=7, markerscale=1.5)
    return _save(fig, out_png)


@torch.no_grad()
def plot_retrieval_examples(model: Any, dataset: Any, texts: list[str], out_png: Path, n: int = 4,
                            top: int = 3) -> Path | None:
    """The first ``n`` images with the ``top`` texts an image-text model retrieves for each (its own text
    marked), from the distinct texts of the split."""
    import textwrap

    items = list(islice(iter_items(dataset), n))      # map-style or streamed (shards)
    k = len(items)
    gallery = sorted(set(texts))
    if k == 0 or not gallery:
        return None
    model.eval()
    own = [str(it.get("text", texts[i] if i < len(texts) else "")) for i, it in enumerate(items)]
    x = torch.stack([torch.as_tensor(it["image"]) for it in items])
    sims = model.encode_image(x).float() @ model.encode_text(gallery).float().T        # (k, T)
    plt = _plt()
    fig, axes = plt.subplots(k, 2, figsize=(9, 2.4 * k), squeeze=False, gridspec_kw={"width_ratios": [1, 3]})
    for i in range(k):
        axes[i, 0].imshow(_plane(x[i].float().mean(0).numpy()), cmap="gray")
        lines = []
        for rank, j in enumerate(sims[i].argsort(descending=True)[:top].tolist(), 1):
            mark = "✔" if gallery[j] == own[i] else " "
            lines.append(f"{rank}. {mark} ({float(sims[i, j]):.2f}) " + textwrap.shorten(gallery[j], 90))
        axes[i, 1].text(0, 0.5, "\n".join(lines), va="center", fontsize=8, family="monospace")
        for ax in axes[i]:
            ax.axis("off")
    fig.suptitle("retrieval examples (✔: the image's own text)", fontsize=9)
    return _save(fig, out_png, dpi=80)
