"""Argument groups several command families share: a config and its overrides, where the data is."""

from __future__ import annotations

import argparse
from typing import Any


def config_args(p: argparse.ArgumentParser, example: str) -> None:
    p.add_argument("config", help=f"YAML config ({example})")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.max_steps=10 out=runs/x")


def data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default=None, help="a catalog dataset (`mmfm data list`), or folder for a plain "
                                                   "directory of images (default: what --data-root holds, a "
                                                   "folder, shards or a mini corpus; mini without it)")
    p.add_argument("--data-root", "--root", dest="root", default=None,
                   help="where the data is (default for mini: $MMFM_HOME/data/mini)")


def data_base(a: argparse.Namespace) -> dict[str, Any]:
    """The data options --dataset and --data-root give (no dataset when --dataset is not given: named_data)."""
    return {"root": a.root, **({"dataset": a.dataset} if a.dataset else {})}


def named_data(a: argparse.Namespace, data: Any) -> Any:
    """Without --dataset (or data.dataset=), the dataset is what the root holds (mmfm.data.spec.dataset_at)."""
    if a.dataset is None and not any(o.split("=", 1)[0].strip() == "data.dataset" for o in a.overrides):
        from mmfm.data.spec import dataset_at

        data.dataset = dataset_at(data.root)
    return data


def evaluation_args(p: argparse.ArgumentParser, out: str, overrides_help: str) -> None:
    p.add_argument("--splits", nargs="+", default=["test"], help="splits to evaluate (default: test)")
    data_args(p)
    p.add_argument("--out", default=out, help=f"output folder (default: {out})")
    p.add_argument("overrides", nargs="*", help=overrides_help)


def out_folder(a: argparse.Namespace) -> str:
    """The output folder of an evaluation command: --out, unless an out= override replaces it."""
    from mmfm import api

    return api.config(None, [o for o in a.overrides if o.split("=", 1)[0].strip() == "out"], out=a.out).out
