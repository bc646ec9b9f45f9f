"""`mmfm zoo list | info | add | remove | export`: pretrained models, packaged and your own."""

from __future__ import annotations

import argparse
import json
from typing import Any

from mmfm import api
from mmfm.errors import MMFMError


def add_zoo(sub: Any) -> None:
    z = sub.add_parser("zoo", help="pretrained models shipped in registry packages (offline), and your own: list, "
                                   "info, add, remove",
                       description="`mmfm zoo list` shows every pretrained model whose weights ship inside a "
                                   "registry package; `mmfm zoo info NAME` its manifest: package and version, "
                                   "licence, weight files with SHA-256, preprocessing contract, what it was "
                                   "trained on and for. Nothing is downloaded. `mmfm zoo add PATH` records your own "
                                   "checkpoint (an mmfm pretrain run or encoder/ folder, a timm ViT, an open_clip "
                                   "folder's image tower, a Hugging Face folder; MONAI bundles are recorded with "
                                   "checksums only) in "
                                   "$MMFM_HOME/zoo/user.json; encoder.weights=NAME then loads it.")
    z.add_argument("action", choices=["list", "info", "add", "remove", "export"],
                   help="list | info NAME | add PATH (your own checkpoint) | remove NAME (forget, files kept) | "
                        "export MODEL --format onnx OUT (litemedsam or a promptable run, as ONNX graphs + a JSON "
                        "of inputs, outputs, preprocessing and SHA-256, for 3D Slicer / OHIF plug-ins)")
    z.add_argument("name", nargs="?", help="model name (info, remove, export) or a checkpoint path (add)")
    z.add_argument("target", nargs="?", help="export: the output folder (new, empty, or an earlier export)")
    z.add_argument("--format", default="onnx", choices=["onnx"], help="export: the format (onnx)")
    z.add_argument("--int8", action="store_true",
                   help="export: also an image encoder with int8 matrix products (ONNX Runtime dynamic quantisation)")
    z.add_argument("--overwrite", action="store_true", help="export: replace an earlier export in OUT")
    z.add_argument("--name", dest="as_name", help="add: the name to use it by (default: the file or folder name)")
    z.add_argument("--architecture", help="add: the timm model name of a timm checkpoint (e.g. vit_small_patch16_224)")
    z.add_argument("--json", action="store_true", help="one JSON document")
    z.set_defaults(func=_cmd_zoo)



def _cmd_zoo(a: argparse.Namespace) -> int:
    if a.action == "add":
        if not a.name:
            raise MMFMError("mmfm zoo add needs a path", "mmfm zoo add PATH [--name NAME] [--architecture A]")
        e = api.zoo_add(a.name, a.as_name, a.architecture)
        print(json.dumps(e) if a.json else f"added '{e['name']}' ({e['format']}, {len(e['files'])} weight file(s), "
              f"SHA-256 recorded){'' if e['usable'] else ': ' + e['note']}; use it as encoder.weights={e['name']}"
              if e["kind"] == "image" else f"added '{e['name']}' ({e['format']}); use it as text_encoder.name="
              f"hf:{e['path']}")
        return 0
    if a.action == "remove":
        if not a.name:
            raise MMFMError("mmfm zoo remove needs a name", "see mmfm zoo list")
        api.zoo_remove(a.name)
        print(f"forgot '{a.name}' (its files are left where they are)")
        return 0
    if a.action == "export":
        if not a.name or not a.target:
            raise MMFMError("mmfm zoo export needs a model and an output folder",
                            "mmfm zoo export litemedsam --format onnx OUT_FOLDER")
        m = api.zoo_export(a.name, a.target, a.format, int8=a.int8, overwrite=a.overwrite)
        print(json.dumps(m) if a.json else f"wrote {', '.join(m['files'])} and model.onnx.json (inputs, outputs, "
              f"preprocessing, SHA-256) to {a.target}")
        return 0
    if a.action == "list":
        rows = api.zoo_list()
        if a.json:
            print(json.dumps(rows))
            return 0
        for m in rows:
            if "package" in m:       # packaged with a registry package
                state = f"v{m['version']}" if m["installed"] else f"not installed: {m['hint']}"
                print(f"{m['name']:12s} {m['kind']:6s} {m['package']:28s} {state}")
                print(f"{'':12s} {m['trained_for']}")
            else:                    # yours (mmfm zoo add)
                print(f"{m['name']:12s} {m['kind']:6s} {'(yours) ' + m['format']:28s} "
                      f"{'usable' if m['usable'] else 'recorded only'}")
        return 0
    if not a.name:
        raise MMFMError("mmfm zoo info needs a model name", f"one of {[m['name'] for m in api.zoo_list()]}")
    m = api.zoo_info(a.name)
    if a.json:
        print(json.dumps(m))
        return 0
    for k, v in m.items():
        print(f"{k:12s} {v}")
    return 0


COMMANDS = {"zoo": add_zoo}

# `mmfm zoo ACTION` -> the public function of `mmfm` its handler calls for the work
API = {"zoo list": "zoo_list", "zoo info": "zoo_info", "zoo add": "zoo_add", "zoo remove": "zoo_remove",
       "zoo export": "zoo_export"}
