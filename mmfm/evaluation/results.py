"""``results.json``: a list of records ``{task, dataset, split, method, metric, value, seed, label_fraction}``.

Written atomically (temp file + rename): a run without ``results.json`` did not finish.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


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


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)
    return path


def write_results(path: str | Path, records: Iterable[ResultRecord]) -> Path:
    return write_json_atomic(path, [asdict(r) for r in records])


def read_results(path: str | Path) -> list[ResultRecord]:
    return [ResultRecord(**r) for r in json.loads(Path(path).read_text())]
