"""`mmfm segment | predict | register`: apply a model (or an optimiser) to your images."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mmfm import api
from mmfm.errors import ConfigError, MMFMError


def add_segment(sub: Any) -> None:
    sg = sub.add_parser(
        "segment", help="promptable segmentation of one image or volume (LiteMedSAM): box/point prompts, 3D "
                        "propagation from one slice", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Segment a structure from a box and/or points with LiteMedSAM (or a promptable model you "
                    "trained).\n\n"
                    "2D image: --box X0 Y0 X1 Y1 and --point X Y are pixel (column, row) positions.\n"
                    "Volume: --slice K picks slice K along --axis (default 2, the third voxel axis k of the file as "
                    "stored); the box and points are that slice's voxel (i, j) coordinates. The mask is "
                    "propagated slice by slice in both directions (each slice prompted by the box around the "
                    "previous mask) until it vanishes, the model's IoU estimate drops below --min-score, or the mean "
                    "intensity inside it jumps by more than --max-change.\n"
                    "Output: a NIfTI mask on the input's exact grid and affine (1 = structure), or a PNG of the "
                    "input's size for PNG/JPEG/TIFF input (255 = structure), plus OUT's stem + .json with the "
                    "prompt, the model and its SHA-256. DICOM input: OUT.dcm is a DICOM Segmentation (SEG), "
                    "OUT.rtstruct.dcm an RT Structure Set, on the source's own slices.\n"
                    "Several structures: --box ... --label NAME, repeated (or --prompts FILE.json), give one label "
                    "map (value n = the n-th structure; a later one wins where two overlap) with the names in the "
                    "JSON's 'labels' (one DICOM segment each).",
        epilog="examples:\n  mmfm segment chest.png --box 40 60 200 220 --out lung.png\n"
               "  mmfm segment ct.nii.gz --slice 60 --box 30 25 110 90 --modality CT --out liver.nii.gz\n"
               "  mmfm segment ct_series/ --slice 40 --box 30 25 110 90 --label liver --box 120 40 150 80 "
               "--label spleen --out organs.dcm\n"
               "  mmfm segment ct.nii.gz --slice 60 --box 30 25 110 90 --slice-box 80 35 30 100 85 "
               "--negative-click 70 95 60 --out liver.nii.gz")
    sg.add_argument("image", help="an image file or DICOM series folder (anything `mmfm data inspect` reads)")
    sg.add_argument("--box", nargs=4, type=float, action="append", metavar=("X0", "Y0", "X1", "Y1"),
                    help="box prompt, pixels; repeat it with --label for several structures in one label map")
    sg.add_argument("--label", action="append",
                    help="the name of the structure of the --box before it (repeatable: one per --box): one label "
                         "map, value n for the n-th structure, names in the JSON (and as DICOM segments)")
    sg.add_argument("--prompts", help='a JSON list of structures [{"label": "liver", "box": [x0, y0, x1, y1], '
                                      '"slice": K, "points": [[x, y]], "negative_points": [[x, y]], "boxes": '
                                      '[{"slice": K2, "box": [..]}], "clicks": [{"slice": K3, "point": [x, y], '
                                      '"positive": false}]}, ...] instead of --box/--label ("boxes", "clicks": '
                                      "as --slice-box, --click)")
    sg.add_argument("--point", nargs=2, type=float, action="append", metavar=("X", "Y"),
                    help="a point inside the structure (repeatable)")
    sg.add_argument("--negative-point", nargs=2, type=float, action="append", metavar=("X", "Y"),
                    help="a point outside the structure (repeatable)")
    sg.add_argument("--slice-box", nargs=5, type=float, action="append", metavar=("K", "X0", "Y0", "X1", "Y1"),
                    help="volumes: a box on another slice K of the same structure (repeatable); propagation runs "
                         "from every prompted slice and is fused between them")
    sg.add_argument("--click", nargs=3, type=float, action="append", metavar=("K", "X", "Y"),
                    help="volumes: a correction click inside the structure on slice K (repeatable), applied after "
                         "propagation: slice K is re-decoded (its embedding reused) and re-propagated locally")
    sg.add_argument("--negative-click", nargs=3, type=float, action="append", metavar=("K", "X", "Y"),
                    help="volumes: a correction click outside the structure on slice K (repeatable)")
    sg.add_argument("--fuse-axes", action="store_true",
                    help="volumes: propagate along the two other axes too, from boxes drawn from the first "
                         "result, and keep the voxels two of the three sweeps found (about 3x the time)")
    sg.add_argument("--text", help="a structure's name (a text-prompted model trained with task.prompt=text): "
                                   "segments the 2D image or every slice of a volume")
    sg.add_argument("--slice", type=int, help="volumes: the prompted slice index along --axis")
    sg.add_argument("--axis", type=int, default=2, help="volumes: the slicing axis 0 (i), 1 (j) or 2 (k, default)")
    sg.add_argument("--modality", help="CT, MR, XR, ... when the file does not record it (sets the preset)")
    sg.add_argument("--preset", help="intensity preset (e.g. ct_abdomen, ct_lung, percentile); default: the "
                                     "modality's")
    sg.add_argument("--model", default="litemedsam", help="litemedsam (default) or a promptable training run folder")
    sg.add_argument("--min-score", type=float, default=0.5,
                    help="volumes: stop propagating where the model's IoU estimate is below this (default 0.5)")
    sg.add_argument("--max-change", type=float, default=0.15,
                    help="volumes: stop where the mean intensity inside the mask (after the preset, 0..1) changes by "
                         "more than this from the previous slice: the structure ended (default 0.15)")
    sg.add_argument("--out", required=True, help="mask file: .nii.gz / .nii / .mha / .nrrd (volumes, DICOM, NIfTI) "
                                                 "or .png; for DICOM input also .dcm (a DICOM SEG) or .rtstruct.dcm "
                                                 "(an RT Structure Set), on the source's slices")
    sg.add_argument("--overwrite", action="store_true", help="replace an earlier output of mmfm segment")
    sg.add_argument("--json", action="store_true", help="print the JSON record")
    sg.add_argument("--quiet", action="store_true", help="no progress bar")
    sg.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"],
                    help="arithmetic of the model: fp32 (default), bf16 autocast (fast where the CPU has "
                         "avx512_bf16/amx or on a recent GPU; emulated and slow elsewhere), or auto (bf16 only where "
                         "native); the choice is in the JSON record")
    sg.add_argument("--engine", default="auto", choices=["torch", "onnx", "auto"],
                    help="what runs the model: torch, onnx (ONNX Runtime, fp32; exported once per model into "
                         "$MMFM_HOME/onnx), or auto "
                         "(default: ONNX Runtime on a CPU in fp32, measured faster; torch on a GPU, in bf16 and "
                         "for text prompts); the choice is in the JSON record")
    sg.set_defaults(func=_cmd_segment)



def add_predict(sub: Any) -> None:
    pr = sub.add_parser(
        "predict", help="apply a trained run (mmfm train) to new images: masks, class probabilities, boxes",
        description="Apply RUN (the out= folder of `mmfm train`: segmentation, classification or detection) to "
                    "each INPUT through the run's own preprocessing. Segmentation: sliding-window inference at the "
                    "run's spacing, a label map per input written to OUT/<name>_seg.nii.gz on the input's own grid "
                    "(shape and affine); a 2D run segments a volume slice by slice. Classification: "
                    "OUT/predictions.csv and .json (probabilities, with the run's calibrated temperature). "
                    "Detection: OUT/detections.csv and .json (boxes in voxel indices and world mm). An image-text "
                    "run (mmfm pretrain clip/medclip/gloria) with --classes: zero-shot class probabilities, as "
                    "for classification. OUT/predict.json records the run, its checkpoint's SHA-256 and every case.",
        epilog="examples:\n  mmfm predict runs/seg scan1.nrrd scan2.nii.gz --out masks/\n"
               "  mmfm predict runs/pretrain/clip_2d cxr.dcm --classes 'pleural effusion' 'no finding' --out zs/ "
               "--format dcm",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    pr.add_argument("run", help="a training run folder (mmfm train out=...)")
    pr.add_argument("inputs", nargs="+", help="image files or DICOM series folders (anything mmfm data inspect reads), "
                                              "or DICOMweb series URLs (docs/pacs.md)")
    pr.add_argument("--out", required=True, help="output folder (new, empty, or an earlier mmfm predict output)")
    pr.add_argument("--modality", help="CT, MR, ... for formats that do not record it (default: the run's own)")
    pr.add_argument("--preset", help="intensity preset instead of the run's own (`mmfm data presets`)")
    pr.add_argument("--overwrite", action="store_true", help="replace an earlier mmfm predict output in --out")
    pr.add_argument("--format", default="nifti", choices=["nifti", "dcm"],
                    help="segmentation masks: nifti (default, <name>_seg.nii.gz) or dcm (<name>_seg.dcm, a DICOM "
                         "SEG on the source's slices, one segment per class; DICOM inputs only); classification: "
                         "dcm adds <name>_sr.dcm, a DICOM SR (TID 1500) of the class probabilities")
    pr.add_argument("--store", metavar="URL", help="with --format dcm: store the SEGs or SRs into their images' "
                                                   "studies on this DICOMweb service (STOW-RS; docs/pacs.md)")
    pr.add_argument("--classes", nargs="+", metavar="NAME",
                    help="RUN an image-text run (mmfm pretrain clip/medclip/gloria): zero-shot classification "
                         "among these class names (prompt ensembles; predictions.csv, and with --format dcm an SR)")
    pr.add_argument("--templates", nargs="+", metavar="TEMPLATE",
                    help="with --classes: prompt templates with a {name} placeholder (default: mmfm zeroshot's)")
    pr.add_argument("--json", action="store_true", help="print predict.json")
    pr.add_argument("--quiet", action="store_true", help="no progress lines")
    pr.set_defaults(func=_cmd_predict)



def add_register(sub: Any) -> None:
    rg_ = sub.add_parser(
        "register", help="align two images (2D or 3D, any formats and grids): affine + deformable",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Register MOVING to FIXED by instance optimisation (no training needed): an affine stage "
                    "(multi-resolution) then, with --mode deformable, a smooth displacement field (bending-energy "
                    "regularised). Similarity: lncc (local normalised cross-correlation, same modality) or mi "
                    "(mutual information, across modalities).\n\n"
                    "Convention: x_moving = A @ [x_fixed + u(x_fixed); 1] in world millimetres (RAS); A is written "
                    "to affine.json (3x3 for 2D, 4x4 for 3D), u to displacement.nii.gz (mm).\n"
                    "Outputs in --out: warped.nii.gz (or warped.png for PNG/JPEG FIXED), affine.json, "
                    "displacement.nii.gz, warped_labels.nii.gz (with --moving-labels), registration.json (settings, "
                    "loss, Jacobian folding fraction, label Dice before/after with --fixed-labels).",
        epilog="example:\n  mmfm register atlas_t1.nii.gz subject_t1.nii.gz --out reg/ --moving-labels "
               "subject_labels.nii.gz")
    rg_.add_argument("fixed", help="the reference image (its grid is the output grid); a file, a folder, or a "
                                   "DICOMweb series URL (docs/pacs.md)")
    rg_.add_argument("moving", help="the image to align to FIXED (a file, a folder, or a DICOMweb series URL)")
    rg_.add_argument("--out", required=True, help="output folder (new, empty, or an earlier mmfm register output)")
    rg_.add_argument("--mode", default="deformable", choices=("affine", "deformable"))
    rg_.add_argument("--similarity", default="lncc", choices=("lncc", "mi"),
                     help="lncc (same modality, default) or mi (mutual information, e.g. CT to MR)")
    rg_.add_argument("--fixed-modality", help="CT, MR, ... when FIXED's format does not record it (intensity preset)")
    rg_.add_argument("--moving-modality", help="the same for MOVING")
    rg_.add_argument("--moving-labels", help="a label map on MOVING's grid, carried to FIXED's grid")
    rg_.add_argument("--fixed-labels", help="a label map on FIXED's grid: Dice before/after in registration.json")
    rg_.add_argument("--iterations", type=int, default=150, help="optimiser steps per level (default 150)")
    rg_.add_argument("--levels", type=float, nargs="+", default=[8.0, 4.0, 2.0],
                     help="resolutions of the pyramid in mm per voxel, coarse to fine (default 8 4 2)")
    rg_.add_argument("--smoothness", type=float, default=1.0, help="weight of the bending energy (default 1)")
    rg_.add_argument("--overwrite", action="store_true", help="replace an earlier mmfm register output in --out")
    rg_.add_argument("--json", action="store_true", help="print registration.json")
    rg_.add_argument("--quiet", action="store_true", help="no progress bar")
    rg_.set_defaults(func=_cmd_register)



def _cmd_segment(a: argparse.Namespace) -> int:
    from mmfm.cli import pacs
    from mmfm.workflows.pacs import remote_paths
    from mmfm.workflows.segment import labelled_structures

    boxes = a.box or []
    if any(v[0] != int(v[0]) for v in (a.slice_box or []) + (a.click or []) + (a.negative_click or [])):
        raise MMFMError("--slice-box and --click start with a slice index K, a whole number",
                        "e.g. --slice-box 80 35 30 100 85 or --click 70 95 60")
    clicks = [{"slice": int(k), "point": [x, y], "positive": pos} for pos, given in ((True, a.click),
                                                                                    (False, a.negative_click))
              for k, x, y in given or []]
    slice_boxes = [{"slice": int(b[0]), "box": list(b[1:])} for b in a.slice_box or []]
    structures = labelled_structures(boxes, a.label or [], a.prompts,
                                     bool(a.point or a.negative_point or slice_boxes or clicks))
    with remote_paths(a.image, a.out) as (image, out, store):      # DICOMweb URLs: local copies, SEG stored back
        rec = api.segment(image, boxes[0] if structures is None and boxes else None, points=a.point or (),
                          negative_points=a.negative_point or (), slice_index=a.slice, axis=a.axis,
                          modality=a.modality, preset=a.preset, model=a.model, min_score=a.min_score,
                          max_change=a.max_change, overwrite=a.overwrite, progress=not a.quiet, text=a.text,
                          precision=a.precision, structures=structures, engine=a.engine, slice_boxes=slice_boxes,
                          clicks=clicks, out=out, return_arrays=False, fuse_axes=a.fuse_axes).info
        if store is not None:
            rec["stored"] = store(Path(out))
    if a.json:
        print(json.dumps(rec))
        return 0
    multi = "structures" in rec
    wrote, its_json = ("stored a DICOM SEG", "") if "stored" in rec else (f"wrote {a.out}", " and its JSON")
    if multi:
        print(f"{wrote} (a label map of {len(rec['structures'])} structures){its_json}; model "
              f"{rec['model']['name']}, preset {rec['preset']}")
    for e in rec.get("structures", [rec]):
        where = (f", slices {e['slices'][0]}..{e['slices'][1]}" if e.get("slices") else "")
        n = e.get("foreground_voxels", e.get("foreground_pixels", 0))
        unit = "voxels" if "foreground_voxels" in e else "pixels"
        print(f"  {e['value']} = {e['label']} ({n} foreground {unit}{where})" if multi else
              f"{wrote} ({n} foreground {unit}{where}){its_json}; model {rec['model']['name']}, "
              f"preset {rec['preset']}")
        for direction, why in e.get("stopped", {}).items():
            print(f"  propagation {direction}: stopped at {why}" if "end" not in why else f"  {direction}: {why}")
    pacs.print_stored(rec.get("stored", []))
    return 0


def _cmd_predict(a: argparse.Namespace) -> int:
    if a.store and a.format != "dcm":
        raise ConfigError("--store sends the DICOM outputs to a PACS", "add --format dcm")
    from mmfm.workflows.zeroshot_predict import is_image_text_run

    zero_shot = is_image_text_run(a.run)
    if zero_shot and not a.classes:
        raise ConfigError(f"{a.run} is an image-text run: zero-shot classification needs --classes",
                          "e.g. --classes 'pleural effusion' 'no finding'")
    if not zero_shot and (a.classes or a.templates):
        raise ConfigError(f"{a.run} is not an image-text run: --classes and --templates are for zero-shot "
                          "classification", "give an image-text run (mmfm pretrain clip, medclip or gloria)")
    rec = api.predict(a.run, a.inputs, a.out, classes=a.classes, templates=a.templates or (), modality=a.modality,
                      preset=a.preset, format=a.format, overwrite=a.overwrite, progress=not a.quiet and not a.json)
    if a.store:
        from mmfm.cli.pacs import print_stored
        from mmfm.workflows.pacs import store_files

        dicom = [Path(a.out) / c[k] for c in rec["cases"] for k in ("mask", "report") if c.get(k, "").endswith(".dcm")]
        rec["stored"] = store_files(dicom, a.store)["stored"]
        if not a.json:
            print_stored(rec["stored"])
    if a.json:
        print(json.dumps(rec))
        return 0
    for c in rec["cases"]:
        if rec["task"] == "segmentation":
            vols = ", ".join(f"{n} {v.get('ml', v.get('mm2'))} {'mL' if 'ml' in v else 'mm2'}"
                             for n, v in c["volumes"].items())
            print(f"  {c['case']}: {c['mask']}" + (" (EMPTY: the model predicts no foreground)" if c["empty"]
                                                   else f" ({vols})"))
        elif rec["task"] in ("classification", "zeroshot"):
            print(f"  {c['case']}: {c['predicted']} (p={c['probabilities'][c['predicted']]:.3f})")
        else:
            print(f"  {c['case']}: {len(c['boxes'])} box(es)")
    print(f"wrote {a.out} (predict.json{', predictions.csv' if 'predicted' in rec['cases'][0] else ''}"
          f"{', detections.csv' if rec['task'] == 'detection' else ''})")
    return 0


def _cmd_register(a: argparse.Namespace) -> int:
    from mmfm.workflows.pacs import local_images

    with local_images([a.fixed, a.moving]) as (fixed, moving):   # DICOMweb series URLs: temporary local copies
        rec = api.register(fixed, moving, a.out, mode=a.mode, similarity=a.similarity,
                           fixed_modality=a.fixed_modality, moving_modality=a.moving_modality,
                           moving_labels=a.moving_labels, fixed_labels=a.fixed_labels, iterations=a.iterations,
                           levels=a.levels, smoothness=a.smoothness, overwrite=a.overwrite, progress=not a.quiet,
                           return_arrays=False).info
    if a.json:
        print(json.dumps(rec))
        return 0
    print(f"wrote {a.out}: {rec['warped']}, affine.json" + (", displacement.nii.gz" if "displacement" in rec else "")
          + f", registration.json ({rec['mode']}, {rec['similarity']}, {rec['seconds']} s; folding fraction "
            f"{rec['folding_fraction']:.4f})")
    if "dice" in rec:
        print(f"  label Dice: {rec['dice']['mean_before']:.3f} before, {rec['dice']['mean_after']:.3f} after")
    return 0


COMMANDS = {"segment": add_segment, "predict": add_predict, "register": add_register}

# `mmfm COMMAND` -> the public function of `mmfm` its handler calls for the work
API = {"segment": "segment", "predict": "predict", "register": "register"}
