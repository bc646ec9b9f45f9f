"""`mmfm explain`: where a trained model looked (saliency maps, pointing game)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mmfm import api
from mmfm.errors import ConfigError


def add_explain(sub: Any) -> None:
    ex = sub.add_parser(
        "explain", help="where a trained model looked: saliency maps (rollout, Grad-CAM, occlusion, word-region)",
        description="Saliency maps of a classification run (attention rollout for ViT encoders, Grad-CAM for CNN "
                    "encoders, occlusion for any) or, with --text, of an image-text run (each word's attention over "
                    "the image regions), on IMAGE through the model's own preprocessing. Written to --out as NIfTI "
                    "on the input's grid (PNG for PNG/JPEG/TIFF input), overlay.png and explain.json (prediction, "
                    "pointing game against --mask).")
    ex.add_argument("image", help="a DICOM file or series folder, NIfTI, MetaImage, NRRD, PNG, ..., or a DICOMweb "
                                  "series URL (docs/pacs.md)")
    ex.add_argument("--model", required=True, help="a classification run (mmfm train) or image-text run folder")
    ex.add_argument("--out", required=True, help="new or empty output folder (or one mmfm explain wrote)")
    ex.add_argument("--method", action="append", choices=["rollout", "gradcam", "occlusion"],
                    help="explanation method (repeatable; default: rollout or gradcam by encoder, and occlusion)")
    ex.add_argument("--text", help="image-text models: the text whose words are placed on the image")
    ex.add_argument("--mask", help="a reference mask on the image's grid: the pointing game is scored against it")
    ex.add_argument("--mask-label", type=int, help="the mask value of the structure (default: any non-zero)")
    ex.add_argument("--target", type=int, help="the class to explain (default: the predicted one)")
    ex.add_argument("--slice", type=int, help="2D model on a volume: the slice (third axis) to explain (default: "
                                              "the middle one)")
    ex.add_argument("--modality", help="modality for formats that do not record it (NIfTI, PNG, ...)")
    ex.add_argument("--preset", help="intensity preset instead of the model's own (`mmfm data presets`)")
    ex.add_argument("--overwrite", action="store_true", help="replace an earlier mmfm explain output in --out")
    ex.add_argument("--format", default="nifti", choices=["nifti", "dcm"],
                    help="dcm (DICOM input): also each map as <name>_map.dcm, a DICOM Parametric Map (float values) "
                         "in the image's study that references its slices")
    ex.add_argument("--store", metavar="URL", help="with --format dcm: store the maps into the image's study on this "
                                                   "DICOMweb service (STOW-RS; docs/pacs.md)")
    ex.add_argument("--json", action="store_true", help="print explain.json")
    ex.set_defaults(func=_cmd_explain)


def _cmd_explain(a: argparse.Namespace) -> int:
    from mmfm.workflows.pacs import local_images

    if a.store and a.format != "dcm":
        raise ConfigError("--store sends the DICOM outputs to a PACS", "add --format dcm")
    with local_images([a.image]) as (image,):           # a DICOMweb series URL: a temporary local copy
        rec = api.explain(a.model, image, methods=a.method or (), text=a.text, mask=a.mask,
                          mask_label=a.mask_label, target=a.target, slice_index=a.slice, modality=a.modality,
                          preset=a.preset, out=a.out, overwrite=a.overwrite, format=a.format,
                          return_arrays=False).info
    if a.store:
        from mmfm.cli.pacs import print_stored
        from mmfm.workflows.pacs import store_files

        rec["stored"] = store_files([Path(a.out) / f for f in rec["dicom"].values()], a.store)["stored"]
        if not a.json:
            print_stored(rec["stored"])
    if a.json:
        print(json.dumps(rec))
        return 0
    what = rec.get("explained_class") or f"text ({len(rec.get('text_tokens', []))} tokens)"
    print(f"explained {what}: {', '.join(rec['maps'])} -> {a.out} (overlay.png, explain.json)")
    for name, hit in rec.get("pointing_game", {}).items():
        print(f"  pointing game {name}: {'hit' if hit else 'miss'}")
    return 0


COMMANDS = {"explain": add_explain}

# `mmfm COMMAND` -> the public function of `mmfm` its handler calls for the work
API = {"explain": "explain"}
