"""Reading the built ``mini`` corpus: arrays per set and split, the IU reports, and samples for the catalog."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mmfm.data.sample import Ids, Image, Report, make_sample
from mmfm.data.samplelist import SampleList
from mmfm.data.sources.fetch import mmfm_home
from mmfm.errors import InputFileError


def mini_root() -> Path:
    return mmfm_home() / "data" / "mini"


def load_mini_arrays(root: Path | None, name: str, split: str | None = None) -> dict[str, np.ndarray]:
    """Arrays of one set (``slices2d``, ``patches2d``, ``crops3d``), optionally of one split (``a+b``: the union
    of splits ``a`` and ``b``)."""
    root = Path(root) if root else mini_root()
    path = root / f"{name}.npz"
    if not path.exists():
        raise InputFileError(path, "mini corpus not found", "run `mmfm data prepare mini`")
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    if split is not None:
        keep = np.isin(data["split"], split.split("+"))
        data = {k: v[keep] for k, v in data.items()}
    return data


def iter_reports(root: Path | None = None, split: str | None = None) -> Iterator[dict[str, Any]]:
    path = (Path(root) if root else mini_root()) / "reports.jsonl"
    if not path.exists():
        raise InputFileError(path, "mini reports not found", "run `mmfm data prepare mini`")
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if split is None or r["split"] == split:
                yield r


def load_mini(root: str | Path | None = None, set: str = "slices2d", split: str | None = None) -> SampleList:
    """The mini corpus as a lazy list of sample dicts (the catalog's ``mini`` layout)."""
    if set == "reports":
        rows = list(iter_reports(Path(root) if root else None, split))
        return SampleList(rows, lambda r: make_sample(None, report=Report(
            text=" ".join(f"{k.upper()}: {r[k]}" for k in ("indication", "findings", "impression") if r[k]),
            indication=r["indication"], findings=r["findings"], impression=r["impression"]),
            labels={"mesh": r["mesh"]}, ids=Ids(sample_id=r["uid"], patient_id=r["uid"])))
    d = load_mini_arrays(Path(root) if root else None, set, split)
    label_keys = [k for k in ("region", "lesion", "tissue", "label") if k in d]

    def read(i: int) -> dict[str, Any]:
        return make_sample({str(d["modality"][i]): Image(d["image"][i], str(d["modality"][i]))},
                           mask=d["mask"][i].astype(np.int64) if "mask" in d else None,
                           labels={k: int(d[k][i]) for k in label_keys}, texts={"caption": str(d["caption"][i])},
                           ids=Ids(sample_id=f"{set}-{i}", patient_id=str(d["patient_id"][i]),
                                   slice_index=float(d["slice_index"][i])))

    return SampleList(list(range(len(d["split"]))), read)


def report_rows(root: Path | None = None, split: str | None = None, require: tuple[str, ...] = ()) -> list[dict]:
    """IU X-ray reports of a split that have every section in ``require`` (e.g. ("findings", "impression"))."""
    return [r for r in iter_reports(root, split) if all((r.get(k) or "").strip() for k in require)]


def class_names(root: Path | None, name: str, label: str) -> list[str]:
    """Names of the classes of label ``label`` in mini set ``name`` (from the data card)."""
    card = json.loads(((Path(root) if root else mini_root()) / "card.json").read_text())
    labels = card.get("sets", {}).get(name, {}).get("labels", {})
    if label not in labels:
        raise InputFileError(Path(name), f"mini set '{name}' has no label '{label}'",
                             f"choose one of {sorted(labels)}")
    return [str(c) for c in labels[label]]
