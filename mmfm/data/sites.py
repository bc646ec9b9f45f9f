"""Splitting one dataset into sites (hospitals) for federated training and per-site evaluation.

``by`` says how a sample's site is found:

* ``iid``      seeded random, balanced over ``num_sites`` (the IID control);
* ``modality`` the sample's imaging modality (CT, MR, ...): sites that differ in what they scan (non-IID);
* ``patient``  the patient identifier, hashed into ``num_sites`` groups: every patient at one site;
* any other name: a field of mini's arrays (``modality``, ``patient_id``, ``split_group``, ...) or a column of the
  dataset's ``labels.csv`` (e.g. ``site``, ``hospital``), the site being that value.

The assignment depends only on the samples and the seed, so every process (server, each client) computes the same
one from the same configuration, and a site keeps its samples across splits (a patient never moves site).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from mmfm.errors import ConfigError

BUILTIN = ("iid", "modality", "patient")


def _sample_field(s: dict[str, Any], key: str) -> Any:
    ids = s.get("ids")
    if key == "modality":
        return sorted(s.get("images") or {"unknown": None})[0]
    if key in ("patient", "patient_id"):
        return getattr(ids, "patient_id", "") or getattr(ids, "sample_id", "")
    labels = {**(s.get("row") or {}), **(s.get("labels") or {})}
    if key in labels:
        return labels[key]
    if ids is not None and hasattr(ids, key):
        return getattr(ids, key)
    raise ConfigError(f"federate.sites='{key}': sample '{getattr(ids, 'sample_id', '?')}' has no field '{key}'",
                      f"use one of {', '.join(BUILTIN)} or a column of labels.csv")


def site_values(dataset: Any, arrays: dict[str, np.ndarray] | None, by: str) -> list[str]:
    """The raw value of ``by`` for every sample (``arrays``: mini's arrays of this split, else catalog samples)."""
    key = {"patient": "patient_id"}.get(by, by)
    if arrays is not None:
        if key not in arrays:
            raise ConfigError(f"federate.sites='{by}': mini has no field '{key}'",
                              f"use one of {', '.join(BUILTIN)} or a field of {sorted(arrays)}")
        return [str(v) for v in arrays[key]]
    samples = getattr(dataset, "samples", None)
    if samples is None:
        raise ConfigError(f"federate.sites='{by}' needs sample metadata, which this dataset does not keep",
                          "use federate.sites=iid, or a catalog/folder dataset")
    return [str(_sample_field(s, key)) for s in samples]


def _bucket(value: str, n: int) -> int:
    return int(hashlib.sha256(value.encode()).hexdigest(), 16) % n


def assign_sites(n_samples: int, values: list[str] | None, by: str, num_sites: int, seed: int) -> list[str]:
    """Site name of each sample: ``site0..`` for iid and patient, else the field's value."""
    if by == "iid":
        if num_sites < 1:
            raise ConfigError(f"federate.num_sites={num_sites} must be at least 1")
        order = np.random.default_rng(seed).permutation(n_samples)
        site = np.empty(n_samples, np.int64)
        site[order] = np.arange(n_samples) % num_sites
        return [f"site{int(k)}" for k in site]
    assert values is not None
    if by == "patient":
        return [f"site{_bucket(v, num_sites)}" for v in values]
    return list(values)


def site_indices(sites: list[str]) -> dict[str, np.ndarray]:
    names = sorted(set(sites))
    arr = np.asarray(sites)
    return {name: np.flatnonzero(arr == name) for name in names}
