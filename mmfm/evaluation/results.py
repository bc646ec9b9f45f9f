"""``results.json``: a list of records ``{task, dataset, split, method, metric, value, seed, label_fraction,
provenance}``.

``provenance`` says which commit, date, torch version, device, CPU flags and precision produced the number
(:func:`mmfm.workflows.provenance.provenance`, which the workflows pass to :func:`write_results`). Written
atomically (temp file + rename): a run without ``results.json`` did not finish.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mmfm.jsonio import write_json_atomic

__all__ = ["ResultRecord", "write_json_atomic", "write_results", "read_results"]


@dataclass
class ResultRecord:
    task: str
    dataset: str
    split: str
    method: str
    metric: str
    value: float
    seed: int
    label_fraction: float = 1.0
    provenance: dict[str, Any] | None = None


def write_results(path: str | Path, records: Iterable[ResultRecord],
                  provenance: Mapping[str, Any] | None = None) -> Path:
    """Write ``records``; ``provenance`` is stamped on every record that does not carry its own (on the record
    objects too, so a caller that gathers them into a larger results file keeps it)."""
    records = list(records)
    for r in records:
        if r.provenance is None and provenance is not None:
            r.provenance = dict(provenance)
    return write_json_atomic(path, [asdict(r) for r in records])


def read_results(path: str | Path) -> list[ResultRecord]:
    return [ResultRecord(**r) for r in json.loads(Path(path).read_text())]
