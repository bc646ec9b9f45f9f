"""Run a trained task over a dataset and compute its metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.inferers import sliding_window_inference
from torch.utils.data import DataLoader

from mmfm.data.batches import loader_workers
from mmfm.data.datasets import collate_samples
from mmfm.evaluation.metrics import classification_metrics
from mmfm.evaluation.metrics.calibration import (
    CalibrationBins,
    brier_score,
    expected_calibration_error,
    probs_at_temperature,
)
from mmfm.evaluation.metrics.segmentation import dice_rows, reduce_rows
from mmfm.evaluation.metrics.surface import surface_rows
from mmfm.evaluation.per_case import case_row


@torch.no_grad()
def evaluate(model: Any, dataset: torch.utils.data.Dataset, task: str, batch_size: int = 64,
             class_names: list[str] | None = None, roi_size: Sequence[int] = (),
             spacing: Sequence[float] = (), tolerance_mm: float = 2.0, cases: list[dict[str, Any]] | None = None,
             split: str = "test") -> dict[str, float]:
    """Metrics of ``model`` (a task module with ``predict``) on ``dataset``; keys name the metric.

    ``roi_size``: whole volumes of any size, one at a time, through MONAI's sliding-window inference with windows
    of this size (25% overlap, Gaussian blending), as a model trained on patches is applied to a whole scan.
    ``spacing``: the voxel size (mm) of the evaluated grid; with it, segmentation also reports ``hd95_<class>``
    (mm) and ``nsd_<class>`` (normalised surface Dice at ``tolerance_mm``), policy in
    :mod:`mmfm.evaluation.metrics.surface`.
    ``cases``: a list that receives one row per segmented image (:func:`mmfm.evaluation.per_case.case_row`: case id
    ``<split>-NNN``, Dice, HD95 -- mm with ``spacing``, else in voxels of the evaluated grid --, predicted and true
    sizes, empty predictions flagged), for ``cases_<split>.json`` and the report's per-case table.
    """
    if task == "registration":
        return evaluate_registration(model, dataset)
    if task == "detection":
        return evaluate_detection(model, dataset, batch_size, class_names)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    preds, targets, rows, whole, hds, nsds = [], [], [], [], [], []
    loader = DataLoader(dataset, batch_size=1 if roi_size else batch_size, shuffle=False,
                        num_workers=loader_workers(dataset))
    pixel_bins = CalibrationBins()   # segmentation: pixel-wise calibration of the softmax
    for batch in loader:
        x = batch["image"].to(device)
        logits = None
        if roi_size:
            logits = sliding_window_inference(x, tuple(roi_size), sw_batch_size=4, predictor=model.logits,
                                              overlap=0.25, mode="gaussian")
            p = logits.argmax(dim=1, keepdim=True).cpu()
        elif task == "segmentation" and hasattr(model, "logits"):
            logits = model.logits(x)
            p = logits.argmax(dim=1, keepdim=True).cpu()
        elif task == "promptable_segmentation":   # box prompts from the reference mask of every class
            p = model.predict(x, batch["mask"].to(device)).cpu()
        elif "present" in batch and getattr(model, "takes_presence", False):   # late fusion: the modalities held
            p = model.predict(x, batch["present"].to(device)).cpu()
        else:
            p = model.predict(x).cpu()
        t = batch["label" if task == "classification" else "mask"]
        if task == "classification":
            preds.append(p)
            targets.append(t)
        else:  # per image, so volumes of different sizes never need to be stacked
            if logits is not None:
                k = logits.shape[1]
                pixel_bins.update(logits.float().softmax(dim=1).movedim(1, -1).reshape(-1, k).cpu(),
                                  batch["mask"].reshape(-1))
            rows.append(dice_rows(p, t, model.num_classes))
            whole.append(dice_rows((p > 0).long(), (t > 0).long(), 2))
            hd = None
            if spacing:
                hd, nsd = surface_rows(p, t, model.num_classes, spacing, tolerance_mm)
                hds.append(hd)
                nsds.append(nsd)
            if cases is not None:
                names = class_names or [str(c) for c in range(model.num_classes)]
                for b in range(p.shape[0]):
                    hd_b = hd[b] if hd is not None else surface_rows(p[b:b + 1], t[b:b + 1], model.num_classes)[0][0]
                    cases.append(case_row(split, len(cases), p[b:b + 1], t[b:b + 1], names, rows[-1][b], hd_b,
                                          spacing))
    model.train(was_training)
    if task == "classification":
        return classification_and_calibration(torch.cat(preds), torch.cat(targets),
                                              float(getattr(model, "temperature", 1.0)))
    dice = reduce_rows(torch.cat(rows))
    names = class_names or [str(c) for c in range(model.num_classes)]
    out = {f"dice_{names[c]}": v for c, v in dice.items()}
    if model.num_classes > 2:  # the whole foreground as one structure (e.g. liver including tumour)
        out["dice_foreground"] = reduce_rows(torch.cat(whole))[1]
    if pixel_bins.count.sum() > 0:
        out["pixel_ece"] = pixel_bins.ece()
    if hds:
        out.update({f"hd95_{names[c]}": v for c, v in reduce_rows(torch.cat(hds)).items()})
        out.update({f"nsd_{names[c]}": v for c, v in reduce_rows(torch.cat(nsds)).items()})
    return out


def classification_and_calibration(probs: torch.Tensor, labels: torch.Tensor,
                                   temperature: float = 1.0) -> dict[str, float]:
    """Classification metrics of ``probs``; for a temperature-scaled model (``temperature`` != 1) also the
    calibration before scaling (``ece_unscaled``, ``brier_unscaled``) and the temperature."""
    out = classification_metrics(probs, labels)
    if temperature != 1.0:
        raw = probs_at_temperature(probs, 1.0 / temperature)
        out.update(ece_unscaled=expected_calibration_error(raw, labels), brier_unscaled=brier_score(raw, labels),
                   temperature=temperature)
    return out


@torch.no_grad()
def evaluate_registration(model: Any, dataset: torch.utils.data.Dataset) -> dict[str, float]:
    """A learned registration model on consecutive pairs (sample n fixed, n+1 moving): Dice of the warped masks
    (foreground classes, mean over pairs) before and after, and the Jacobian folding fraction of the field."""
    import numpy as np

    from mmfm.tasks.registration import folding_fraction, label_dice

    was_training = model.training
    model.eval()
    items = [dataset[i] for i in range(len(dataset))]
    before, after, folds = [], [], []
    for fixed, moving in zip(items[:-1], items[1:]):
        f, m = torch.as_tensor(fixed["image"])[None], torch.as_tensor(moving["image"])[None]
        if f.shape != m.shape:
            continue
        ddf = model.ddf(f, m)
        nd = ddf.shape[1]
        folds.append(folding_fraction(ddf[0].movedim(0, -1).numpy(), np.eye(nd + 1)))
        if "mask" in fixed:
            fm = np.asarray(fixed["mask"])[0]
            mm = torch.as_tensor(moving["mask"]).float()[None]
            warped = model.warp_nn(mm, ddf)[0, 0].round().long().numpy()
            d0, d1 = label_dice(fm, np.asarray(moving["mask"])[0]), label_dice(fm, warped)
            if d0:
                before.append(float(np.mean(list(d0.values()))))
                after.append(float(np.mean(list(d1.values()))))
    model.train(was_training)
    out = {"folding_fraction": float(np.mean(folds)) if folds else float("nan"), "pairs": float(len(folds))}
    if before:
        out.update(dice_before=float(np.mean(before)), dice_after=float(np.mean(after)))
    return out


@torch.no_grad()
def evaluate_detection(model: Any, dataset: torch.utils.data.Dataset, batch_size: int = 16,
                       class_names: list[str] | None = None) -> dict[str, float]:
    """mAP at IoU 0.1 and 0.5 and FROC (sensitivity at 1/8 ... 8 false positives per image), policy in
    :mod:`mmfm.evaluation.metrics.detection`."""
    from mmfm.evaluation.metrics.detection import froc, mean_ap

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    preds, gts = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=loader_workers(dataset),
                            collate_fn=collate_samples):
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        for p, g in zip(model.predict(batch["image"]), model.targets(batch)):
            preds.append({k: v.cpu().numpy() for k, v in p.items()})
            gts.append({k: v.cpu().numpy() for k, v in g.items()})
    model.train(was_training)
    names = [str(c) for c in model.classes]
    if class_names and len(class_names) > max(model.classes):
        names = [class_names[c] for c in model.classes]
    return {**mean_ap(preds, gts, names), **froc(preds, gts), "images": float(len(gts)),
            "objects": float(sum(len(g["boxes"]) for g in gts))}
