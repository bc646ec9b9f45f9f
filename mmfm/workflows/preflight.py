"""Checks before the first training step of `mmfm train`, and the first lines of its log.

What would otherwise fail after minutes of training (or never be said) is a :class:`ConfigError` here, before the
model is built, each naming its fix as ``key=value``: an empty split the run trains or evaluates on (too few cases
for the 70/15/15 split), a case without its mask, a mask that is not a label map or lies apart from its image, a
label value the task does not know; for a mini set, shards and a MedMNIST file (splits fixed by their files)
the empty splits and, from the arrays, label values beyond task.num_classes. The log says first the precision and
device, then the data decisions: cases per split and the spacing volumes are used at; masks that are resampled onto
their image's grid are said too.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from mmfm.data import spec as dataspec
from mmfm.data.catalog.masks import check_mask
from mmfm.engine.trainer import announce_precision
from mmfm.errors import ConfigError, InputFileError

MAX_MASKS_READ = 400      # label values are read from at most this many masks before training (said when capped)


def preflight(cfg: Any) -> None:
    """Say the precision, device and data decisions of ``cfg`` (a RunConfig) and refuse what cannot train."""
    announce_precision(cfg.train)
    data = cfg.data
    if dataspec.source(data).fixed_splits:
        _check_fixed_splits(cfg)      # a built corpus, shards or a MedMNIST file: splits fixed by the files
        return
    every = dataspec.all_samples(data)
    assign = dataspec.assign_splits(data, every)
    counts = Counter(assign)
    needed = [data.train_split, *data.eval_splits]
    sizes = {s: sum(counts[p] for p in s.split("+")) for s in needed}
    rule = ("from data.splits_file" if data.splits_file else
            f"{'/'.join(str(round(100 * f)) for f in dataspec.SPLITS.values())} by patient, "
            f"data.split_seed={data.split_seed}")
    dataspec.say(f"data: {len(every)} case(s) in {dataspec.name(data)}: "
                 + ", ".join(f"{s} {counts[s]}" for s in dataspec.SPLITS) + f" ({rule})")
    _check_splits(data, sizes, counts, rule)
    _say_spacing(data, every.records)
    task = cfg.task.get("name")
    if task == "segmentation":
        _check_masks(cfg, every.records, assign)


def _check_splits(data: Any, sizes: dict[str, int], counts: Counter, rule: str) -> None:
    given = ", ".join(f"{s} {counts[s]}" for s in dataspec.SPLITS)
    if sizes[data.train_split] == 0:
        raise ConfigError(f"the training split '{data.train_split}' is empty ({given}; {rule})",
                          "add cases, or list the splits yourself: data.splits_file=splits.json "
                          '({"train": [...], "val": [...], "test": [...]})')
    empty = [s for s in data.eval_splits if sizes.get(s, 0) == 0]
    if empty:
        keep = [s for s in data.eval_splits if s not in empty]
        fix = f"data.eval_splits=[{','.join(keep)}]"
        raise ConfigError(f"split{'s' if len(empty) > 1 else ''} {', '.join(empty)} of data.eval_splits "
                          f"{'are' if len(empty) > 1 else 'is'} empty: {sum(counts.values())} case(s) are too few "
                          f"for this split ({given}; {rule})",
                          f"set {fix}{' (train only)' if not keep else ''}, or list the splits yourself: "
                          "data.splits_file=splits.json")


def _say_spacing(data: Any, records: list[dict[str, Any]]) -> None:
    spacings = [r["spacing"] for r in records if r.get("spacing") and len(r["spacing"]) == 3]
    native = ""
    if spacings:
        lo = [min(s[d] for s in spacings) for d in range(3)]
        hi = [max(s[d] for s in spacings) for d in range(3)]
        native = f"native spacing {lo} to {hi} mm" if lo != hi else f"native spacing {lo} mm"
    if data.spacing:
        dataspec.say(f"spacing: volumes resampled to data.spacing={list(data.spacing)} mm"
                     + (f" ({native})" if native else ""))
    elif spacings:
        grid = f"patches data.patch={list(data.patch)}" if data.patch else f"resized to {dataspec.grid_size(data)}"
        dataspec.say(f"spacing: data.spacing is not set, volumes keep their voxels ({native}), {grid}; set "
                     "data.spacing=[x,y,z] to train at one voxel size")


def _check_masks(cfg: Any, records: list[dict[str, Any]], assign: list[str]) -> None:
    data = cfg.data
    parts = {p for s in [data.train_split, *data.eval_splits] for p in s.split("+")}
    used = [(i, r) for i, r in enumerate(records) if assign[i] in parts]
    name = lambda r: str(r.get("name") or r.get("case") or "?")   # noqa: E731
    missing = [name(r) for _, r in used if r.get("mask") is None]
    if missing:
        raise ConfigError(f"{len(missing)} case(s) used for segmentation have no mask, e.g. {missing[:3]}",
                          "give each image its mask (labelsTr/<case>.nii.gz beside imagesTr/, <name>_seg.<ext> "
                          "beside <name>.<ext>, or a mask column in labels.csv; docs/user_data.md), or leave those "
                          "cases out with data.splits_file=splits.json")
    if len(used) > MAX_MASKS_READ:
        dataspec.say(f"label values checked on the first {MAX_MASKS_READ} of {len(used)} masks before training")
    train_parts = set(data.train_split.split("+"))
    values: dict[str, dict[int, str]] = {"train": {}, "eval": {}}     # value -> first case holding it
    resampled, apart = [], []
    for i, r in used[:MAX_MASKS_READ]:
        try:
            m = check_mask(r)
        except InputFileError as e:
            raise ConfigError(f"the mask of case {name(r)} cannot be used: {e.what}", e.hint or
                              "give a label map (one channel of class indices) on the image's grid") from None
        if m["grid"] == "other":
            resampled.append(name(r))
        elif m["grid"] in ("apart", "dims"):
            apart.append((name(r), m["grid"]))
        side = values["train" if assign[i] in train_parts else "eval"]
        for v in m["voxels"]:
            side.setdefault(v, name(r))
    if apart:
        what = "lies apart from its image in space" if apart[0][1] == "apart" else "has other dimensions than its image"
        raise ConfigError(f"{len(apart)} mask(s) are off their image's grid, e.g. case {apart[0][0]}: the mask {what}",
                          "write each mask with its image's header (origin, spacing, direction; same number of "
                          "axes), or leave those cases out with data.splits_file=splits.json")
    if resampled:
        dataspec.say(f"{len(resampled)} mask(s) lie on another grid than their image (e.g. {resampled[0]}): "
                     "resampled nearest-neighbour onto the image grid")
    every = {**values["eval"], **values["train"]}
    top = max(every) if every else 0
    declared = cfg.task.get("num_classes")
    known = int(declared) if declared else max(values["train"] or {0: ""}) + 1
    if top >= known:
        where = every[top]
        why = (f"task.num_classes={declared} knows the values 0..{known - 1}" if declared else
               f"the training masks hold the values 0..{known - 1} (task.num_classes is taken from them)")
        raise ConfigError(f"the mask of case {where} holds the label value {top}, but {why}",
                          f"set task.num_classes={top + 1} (background 0 and the labels 1..{top}), or fix that mask")


def _check_fixed_splits(cfg: Any) -> None:
    """Empty splits and label values the task does not know, for mini, shards and MedMNIST files."""
    data, task = cfg.data, cfg.task.get("name")
    needed = [data.train_split, *data.eval_splits]
    parts = {p for s in needed for p in s.split("+")}
    field = {"segmentation": "mask", "classification": "label"}.get(str(task))
    sizes, values = dataspec.source(data).split_sizes(parts | set(dataspec.SPLITS), field, parts)
    counts = Counter(sizes)
    total = {s: sum(sizes.get(p, 0) for p in s.split("+")) for s in needed}
    rule = f"fixed by the files of {dataspec.name(data)}"
    dataspec.say(f"data: {dataspec.name(data)}: " + ", ".join(f"{p} {sizes[p]}" for p in sorted(sizes)) + f" ({rule})")
    _check_splits(data, total, counts, rule)
    declared = cfg.task.get("num_classes")
    if values and declared and max(values) >= int(declared):
        top = max(values)
        what = "mask" if field == "mask" else f"label '{data.label}'"
        raise ConfigError(f"the {what} of the {values[top]} split holds the value {top}, but task.num_classes="
                          f"{declared} knows the values 0..{int(declared) - 1}",
                          f"set task.num_classes={top + 1}, or leave task.num_classes unset (taken from the data)")
