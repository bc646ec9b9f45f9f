"""Splits by group (patient, study, volume) so that no group lands in two splits."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence

import numpy as np

from mmfm.errors import ConfigError


def group_split(groups: Sequence[Hashable], fractions: dict[str, float], seed: int = 0) -> list[str]:
    """Assign each item a split name so that all items of one group share a split.

    Groups are shuffled with ``seed`` and filled into splits in order until each split's share of *items* is
    reached (greedy), so split sizes follow ``fractions`` even when groups differ in size.

    >>> group_split(["p1", "p1", "p2", "p3"], {"train": 0.5, "test": 0.5}, seed=0)  # doctest: +SKIP
    """
    if abs(sum(fractions.values()) - 1.0) > 1e-6 or any(v < 0 for v in fractions.values()):
        raise ConfigError(f"split fractions {fractions} must be non-negative and sum to 1")
    members: dict[Hashable, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    keys = list(members)
    order = np.random.default_rng(seed).permutation(len(keys))
    targets = {name: frac * len(groups) for name, frac in fractions.items()}
    filled = {name: 0 for name in fractions}
    names = list(fractions)
    out = [""] * len(groups)
    for gi in order:
        idx = members[keys[gi]]
        # the split furthest below its target takes this group
        name = max(names, key=lambda n: (targets[n] - filled[n]) / max(targets[n], 1e-9))
        filled[name] += len(idx)
        for i in idx:
            out[i] = name
    return out


def check_no_leakage(groups: Sequence[Hashable], splits: Sequence[str]) -> None:
    """Raise if any group appears in more than one split."""
    seen: dict[Hashable, str] = {}
    for g, s in zip(groups, splits):
        if seen.setdefault(g, s) != s:
            raise ConfigError(f"group '{g}' is in splits '{seen[g]}' and '{s}' (leakage)",
                              "split by patient: mmfm.data.splits.group_split(patient_ids, ...)")
