"""`mmfm`: medical multimodal foundation models, from data to evaluation.

Each subcommand parses its arguments and calls one library function in ``mmfm.workflows`` (or the data layer).
Errors in the user's input are printed as one message with a hint (exit status 2), never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmfm.errors import ConfigError, MMFMError

EPILOG = """examples:
  mmfm quickstart                          prepare the built-in 'mini' data, train baselines, write a report
  mmfm data list                           datasets of the review's Tables I-III that mmfm can load
  mmfm data info MIMIC-CXR                 licence, how to obtain it, the expected folder layout
  mmfm data inspect scan.dcm --json        what mmfm reads from a file (shape, spacing, orientation, ...)
  mmfm data prepare mini                   build the built-in corpus and print its data card
  mmfm train configs/quickstart_classification.yaml train.max_steps=50 out=runs/cls
  mmfm pretrain configs/pretrain/mae_2d.yaml              pretrain a ViT by masked autoencoding
  mmfm predict runs/cls scan.dcm --out predictions/         apply a trained run to new images
  mmfm evaluate --encoder runs/pretrain/mae_2d random:vit_mini litemedsam --protocol linear knn
  mmfm pretrain configs/pretrain/clip_2d.yaml             align images and captions (CLIP; also gloria, medclip)
  mmfm zeroshot --model runs/pretrain/clip_2d             classify mini patches from prompts, no labels used
  mmfm retrieve --model runs/pretrain/clip_2d             image<->text Recall@1/5/10
  mmfm retrieve --text-encoder minilm                     IU report section matching (impression given findings)
  mmfm report-gen configs/report_generation_2d.yaml       image encoder + text decoder; BLEU, ROUGE-L, CIDEr, CE
  mmfm vqa configs/vqa_2d.yaml                            closed- and free-text visual question answering
  torchrun --nproc_per_node 2 -m mmfm.cli.main train CONFIG      data-parallel training (DDP)
  mmfm federate simulate configs/federated_classification.yaml  sites trained with Flower (FedAvg/FedProx)
  mmfm continual configs/continual_mini.yaml              tasks in sequence, forgetting with/without experts
  mmfm chat --model smollm2 "What is a CT scan?"        ask a small offline language model (research output)
"""


def _cmd_quickstart(a: argparse.Namespace) -> int:
    from mmfm.workflows.quickstart import quickstart

    records = quickstart(a.out, a.overrides, a.max_per_split)
    print(f"\nresults ({a.out}/results.json):")
    for r in records:
        if r.task in ("classification", "segmentation"):
            print(f"  {r.task:15s} {r.split:5s} {r.metric:18s} {r.value:.4f}")
    print((Path(a.out) / "label_efficiency" / "report.md").read_text().split("![")[0])
    print(f"report: {a.out}/report.md")
    print(f"report (one page, opens offline): {(Path(a.out) / 'report.html').resolve()}")
    print(f"try the models in a browser:  mmfm serve --model {Path(a.out) / 'classification'}")
    return 0


def _run_config(a: argparse.Namespace, kind: str) -> int:
    """`mmfm train|pretrain|report-gen|vqa`: load the config, run the workflow, print on the main process."""
    from mmfm.workflows.config import load_config

    cfg = load_config(a.config, a.overrides)     # a config error is reported before any workflow is imported
    from mmfm.engine.distributed import is_main
    from mmfm.workflows.pretrain import run_pretrain
    from mmfm.workflows.supervised import run_supervised
    from mmfm.workflows.vision_language import run_report_generation, run_vqa

    runs = {"train": run_supervised, "pretrain": run_pretrain, "report-gen": run_report_generation, "vqa": run_vqa}
    records = runs[kind](cfg)
    if is_main():
        _print_records(records, cfg.out)
        if kind == "pretrain":
            print(_next_step(Path(cfg.out)))
    return 0


def _cmd_federate(a: argparse.Namespace) -> int:
    from mmfm.workflows.config import load_config
    from mmfm.workflows.federate import run_client, run_server, run_simulation

    cfg = load_config(a.config, a.overrides)
    if a.mode == "client":
        if not a.site:
            raise MMFMError("mmfm federate client needs --site NAME", "the sites are listed when the server starts")
        run_client(cfg, a.site)
        print(f"site {a.site}: federation finished")
        return 0
    if a.site:
        raise MMFMError(f"--site is for `mmfm federate client`, not '{a.mode}'")
    records = (run_simulation if a.mode == "simulate" else run_server)(cfg)
    _print_records(records, cfg.out)
    return 0


def _cmd_continual(a: argparse.Namespace) -> int:
    import json as _json

    from mmfm.workflows.config import load_config
    from mmfm.workflows.continual import run_continual

    cfg = load_config(a.config, a.overrides)
    run_continual(cfg)
    summary = _json.loads((Path(cfg.out) / "continual.json").read_text())
    print(f"mean forgetting {summary['mean_forgetting']:.4f}, final mean metric {summary['final_mean']:.4f}")
    print(f"run directory: {cfg.out}   continual.json, results.json, report.md")
    return 0


def _next_step(out: Path) -> str:
    """What a finished pretraining run can be evaluated with."""
    if (out / "dual").is_dir():
        return f"use it: mmfm zeroshot --model {out}; mmfm retrieve --model {out}"
    if (out / "text_encoder").is_dir() and not (out / "encoder").is_dir():
        return f"evaluate it: mmfm retrieve --text-encoder {out}"
    return f"evaluate it: mmfm evaluate --encoder {out}"


def _cmd_evaluate(a: argparse.Namespace) -> int:
    from mmfm.workflows.config import load_config
    from mmfm.workflows.evaluate import evaluate_encoders

    bad = [o for o in a.overrides if not o.startswith("data.")]
    if bad:
        raise MMFMError(f"mmfm evaluate takes data options only, not '{bad[0]}'",
                        "write data.<key>=value (e.g. data.size=[32,32]); the protocols have their own flags")
    data = _named_data(a, load_config(None, a.overrides, base={"data": {**_data_base(a), "set": a.set,
                                                                        "label": a.label}}).data)
    evaluate_encoders(a.encoder, a.protocol, data, a.fractions, a.seeds, a.out, a.finetune_steps, a.max_per_split,
                      record_val=a.record_val)
    print((Path(a.out) / "report.md").read_text())
    return 0


def _print_records(records: list, out: str) -> None:
    for r in records:
        print(f"  {r.task:17s} {r.split:5s} {r.metric:26s} {r.value:.4f}")
    print(f"run directory: {out}   results: {out}/results.json   report: {out}/report.md")


def _cmd_zeroshot(a: argparse.Namespace) -> int:
    from mmfm.workflows.config import load_config
    from mmfm.workflows.vision_language import run_zeroshot

    task = {"name": "zeroshot", "model": a.model}
    if a.templates:
        task["templates"] = a.templates
    cfg = load_config(None, a.overrides, base={"task": task, "out": a.out, "data": {
        **_data_base(a), "set": a.set, "label": a.label, "eval_splits": a.splits}})
    _named_data(a, cfg.data)
    _print_records(run_zeroshot(cfg), cfg.out)
    return 0


def _cmd_retrieve(a: argparse.Namespace) -> int:
    from mmfm.workflows.config import load_config
    from mmfm.workflows.vision_language import run_retrieve

    if bool(a.model) == bool(a.text_encoder):
        raise MMFMError("give either --model (image-text retrieval) or --text-encoder (report section matching)")
    task = {"name": "retrieve", "model": a.model} if a.model else {"name": "retrieve", "text_encoder": a.text_encoder}
    data = {**_data_base(a), "set": "reports" if a.text_encoder else a.set, "eval_splits": a.splits}
    cfg = load_config(None, a.overrides, base={"task": task, "out": a.out, "data": data})
    _named_data(a, cfg.data)
    _print_records(run_retrieve(cfg), cfg.out)
    return 0


def _cmd_data_list(a: argparse.Namespace) -> int:
    from mmfm.data.catalog import load_catalog

    entries = [e for e in load_catalog().values() if a.table is None or e.table == a.table]
    if a.json:
        print(json.dumps([e.__dict__ for e in entries], indent=1))
        return 0
    print(f"{'name':24s} {'table':5s} {'kind':10s} {'layout':15s} modalities / size")
    for e in entries:
        print(f"{e.name:24s} {e.table:5s} {e.kind:10s} {e.layout:15s} {','.join(e.modalities)} / {e.size}")
    return 0


def _cmd_data_info(a: argparse.Namespace) -> int:
    from mmfm.data.catalog import get_entry

    e = get_entry(a.name)
    if a.json:
        print(json.dumps(e.__dict__, indent=1))
        return 0
    for k, v in e.__dict__.items():
        print(f"{k:13s} {v}")
    return 0


def _cmd_data_inspect(a: argparse.Namespace) -> int:
    from mmfm.workflows.inspect import inspect_path
    from mmfm.workflows.pacs import local_images

    with local_images([a.path]) as (path,):             # a DICOMweb series URL: a temporary local copy
        info = inspect_path(path, a.modality, a.show_names)
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
    from mmfm.data.labeller import label_report

    if a.check_mesh:
        from mmfm.workflows.vision_language import run_labeller_check

        run_labeller_check(a.out, a.root)
        print((Path(a.out) / "report.md").read_text())
        print(f"results: {a.out}/results.json")
        return 0
    if not a.text:
        raise MMFMError("give report text (or a text file), or --check-mesh", "e.g. mmfm data label 'No effusion.'")
    for t in a.text:
        print(json.dumps(label_report(_text_or_file(t))))
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


def _user_card(a: argparse.Namespace, name: str) -> int:
    from mmfm.data.card import card_markdown, user_card
    from mmfm.evaluation.results import write_json_atomic
    from mmfm.workflows.config import load_config

    data = load_config(None, a.overrides, base={"data": {"dataset": name, "root": a.root}}).data
    card = user_card(data)
    out = Path(a.out or Path("runs") / "data" / name)
    out.mkdir(parents=True, exist_ok=True)   # never inside the user's data folder: mmfm adds nothing there
    write_json_atomic(out / "card.json", card)
    (out / "card.md").write_text(card_markdown(card))
    print(card_markdown(card))
    print(f"data card: {out}/card.json, {out}/card.md")
    return 0


def _cmd_data_shard(a: argparse.Namespace) -> int:
    from mmfm.data.shards import write_shards
    from mmfm.workflows.config import load_config

    data = load_config(None, a.overrides, base={"data": {"dataset": a.dataset, "root": a.src}}).data
    index = write_shards(data, a.out, a.shard_size)
    for split, shards in index["splits"].items():
        print(f"  {split:5s} {sum(s['samples'] for s in shards):7d} samples in {len(shards)} shard(s)")
    print(f"shards: {a.out} (shards.json, card.md); use them with data.dataset=shards data.root={a.out}")
    return 0


def _cmd_data_verify(a: argparse.Namespace) -> int:
    from mmfm.data.shards import verify_shards

    bad = verify_shards(a.shards)
    if bad:
        raise MMFMError(f"{len(bad)} shard(s) differ from their SHA-256 in shards.json: {bad[:5]}",
                        "copy them again, or write the shards again")
    print(f"{a.shards}: every shard matches its SHA-256")
    return 0


def _cmd_zoo(a: argparse.Namespace) -> int:
    from mmfm.encoders import zoo

    if a.action == "add":
        if not a.name:
            raise MMFMError("mmfm zoo add needs a path", "mmfm zoo add PATH [--name NAME] [--architecture A]")
        e = zoo.add_user(a.name, a.as_name, a.architecture)
        print(json.dumps(e) if a.json else f"added '{e['name']}' ({e['format']}, {len(e['files'])} weight file(s), "
              f"SHA-256 recorded){'' if e['usable'] else ': ' + e['note']}; use it as encoder.weights={e['name']}"
              if e["kind"] == "image" else f"added '{e['name']}' ({e['format']}); use it as text_encoder.name="
              f"hf:{e['path']}")
        return 0
    if a.action == "remove":
        if not a.name:
            raise MMFMError("mmfm zoo remove needs a name", "see mmfm zoo list")
        zoo.remove_user(a.name)
        print(f"forgot '{a.name}' (its files are left where they are)")
        return 0
    if a.action == "export":
        from mmfm.workflows.export import export_model

        if not a.name or not a.target:
            raise MMFMError("mmfm zoo export needs a model and an output folder",
                            "mmfm zoo export litemedsam --format onnx OUT_FOLDER")
        m = export_model(a.name, a.target, a.format, int8=a.int8, overwrite=a.overwrite)
        print(json.dumps(m) if a.json else f"wrote {', '.join(m['files'])} and model.onnx.json (inputs, outputs, "
              f"preprocessing, SHA-256) to {a.target}")
        return 0
    user = zoo.user_entries()
    if a.action == "list":
        rows = [zoo.manifest(n, checksum=False) for n in zoo.ZOO]
        if a.json:
            print(json.dumps(rows + list(user.values())))
            return 0
        for m in rows:
            state = f"v{m['version']}" if m["installed"] else f"not installed: {m['hint']}"
            print(f"{m['name']:12s} {m['kind']:6s} {m['package']:28s} {state}")
            print(f"{'':12s} {m['trained_for']}")
        for e in user.values():
            print(f"{e['name']:12s} {e['kind']:6s} {'(yours) ' + e['format']:28s} "
                  f"{'usable' if e['usable'] else 'recorded only'}")
        return 0
    if not a.name:
        raise MMFMError("mmfm zoo info needs a model name", f"one of {list(zoo.ZOO) + list(user)}")
    m = user[a.name] if a.name in user else zoo.manifest(a.name)
    if a.json:
        print(json.dumps(m))
        return 0
    for k, v in m.items():
        print(f"{k:12s} {v}")
    return 0


def _cmd_segment(a: argparse.Namespace) -> int:
    from mmfm.cli import pacs
    from mmfm.workflows.pacs import remote_paths
    from mmfm.workflows.segment import labelled_structures, segment

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
        rec = segment(image, out, box=boxes[0] if structures is None and boxes else None,
                      points=a.point or (), negative_points=a.negative_point or (), slice_index=a.slice, axis=a.axis,
                      modality=a.modality, preset=a.preset, model=a.model,
                      min_score=a.min_score, max_change=a.max_change, overwrite=a.overwrite, progress=not a.quiet,
                      text=a.text, precision=a.precision, structures=structures, engine=a.engine,
                      slice_boxes=slice_boxes, clicks=clicks)
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
    from mmfm.workflows.pacs import local_images
    from mmfm.workflows.predict import predict_files

    if a.store and a.format != "dcm":
        raise ConfigError("--store sends the DICOM outputs to a PACS", "add --format dcm")
    from mmfm.workflows.zeroshot_predict import is_image_text_run, zeroshot_files

    zero_shot = is_image_text_run(a.run)
    if zero_shot and not a.classes:
        raise ConfigError(f"{a.run} is an image-text run: zero-shot classification needs --classes",
                          "e.g. --classes 'pleural effusion' 'no finding'")
    if not zero_shot and (a.classes or a.templates):
        raise ConfigError(f"{a.run} is not an image-text run: --classes and --templates are for zero-shot "
                          "classification", "give an image-text run (mmfm pretrain clip, medclip or gloria)")
    with local_images(a.inputs) as inputs:              # DICOMweb series URLs: temporary local copies
        if zero_shot:
            rec = zeroshot_files(a.run, inputs, a.out, a.classes, a.templates or (), modality=a.modality,
                                 preset=a.preset, overwrite=a.overwrite, progress=not a.quiet and not a.json,
                                 fmt=a.format)
        else:
            rec = predict_files(a.run, inputs, a.out, modality=a.modality, preset=a.preset, overwrite=a.overwrite,
                                progress=not a.quiet and not a.json, fmt=a.format)
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


def _cmd_serve(a: argparse.Namespace) -> int:
    from mmfm.app.server import serve

    models = a.model or ["litemedsam"]
    if "litemedsam" not in models and not any((Path(m) / "checkpoints").exists() and
                                              "promptable" in (Path(m) / "config.yaml").read_text()
                                              for m in models if (Path(m) / "config.yaml").exists()):
        models = ["litemedsam", *models]          # segmentation is always on offer
    serve(models, a.host, a.port, a.max_upload_mb, dicomweb=a.dicomweb)
    return 0


def _cmd_report(a: argparse.Namespace) -> int:
    from mmfm.evaluation.html_report import write_html_report

    run = Path(a.run_dir)
    if not run.is_dir():
        raise MMFMError(f"{run} is not a folder", "give the --out folder of an mmfm run")
    print(f"wrote {write_html_report(run)}")
    return 0


def _cmd_explain(a: argparse.Namespace) -> int:
    from mmfm.workflows.explain import explain
    from mmfm.workflows.pacs import local_images

    if a.store and a.format != "dcm":
        raise ConfigError("--store sends the DICOM outputs to a PACS", "add --format dcm")
    with local_images([a.image]) as (image,):           # a DICOMweb series URL: a temporary local copy
        rec = explain(a.model, image, a.out, methods=a.method or (), text=a.text, mask=a.mask,
                      mask_label=a.mask_label, target=a.target, slice_index=a.slice, modality=a.modality,
                      preset=a.preset, overwrite=a.overwrite, fmt=a.format)
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


def _cmd_register(a: argparse.Namespace) -> int:
    from mmfm.workflows.pacs import local_images
    from mmfm.workflows.register import register_files

    with local_images([a.fixed, a.moving]) as (fixed, moving):   # DICOMweb series URLs: temporary local copies
        rec = register_files(fixed, moving, a.out, mode=a.mode, similarity=a.similarity,
                             fixed_modality=a.fixed_modality, moving_modality=a.moving_modality,
                             moving_labels=a.moving_labels, fixed_labels=a.fixed_labels, iterations=a.iterations,
                             steps=tuple(a.levels), smoothness=a.smoothness, overwrite=a.overwrite,
                             progress=not a.quiet)
    if a.json:
        print(json.dumps(rec))
        return 0
    print(f"wrote {a.out}: {rec['warped']}, affine.json" + (", displacement.nii.gz" if "displacement" in rec else "")
          + f", registration.json ({rec['mode']}, {rec['similarity']}, {rec['seconds']} s; folding fraction "
            f"{rec['folding_fraction']:.4f})")
    if "dice" in rec:
        print(f"  label Dice: {rec['dice']['mean_before']:.3f} before, {rec['dice']['mean_after']:.3f} after")
    return 0


def _cmd_data_prepare(a: argparse.Namespace) -> int:
    from mmfm.data.sources.mini import build_mini
    from mmfm.data.sources.pretrain_corpus import NAME as CORPUS
    from mmfm.data.sources.pretrain_corpus import build_pretrain_corpus

    if a.name == CORPUS:   # every real CT/MR volume that ships in registry packages, unlabelled
        root = build_pretrain_corpus(a.root, force=a.force)
        print((root / "card.md").read_text())
        return 0
    if a.name != "mini":
        from mmfm.data.catalog import get_entry

        e = get_entry(a.name)
        if a.root is None:
            raise MMFMError(f"{e.name} cannot be downloaded by mmfm ({e.licence})",
                            f"obtain it yourself: {e.obtain}; then `mmfm data prepare {e.name} --root DIR` writes "
                            "its data card")
        return _user_card(a, e.name)
    root = build_mini(a.root, force=a.force)
    print((root / "card.md").read_text())
    return 0


def _config_args(p: argparse.ArgumentParser, example: str) -> None:
    p.add_argument("config", help=f"YAML config ({example})")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.max_steps=10 out=runs/x")


def _cmd_data_deid(a: argparse.Namespace) -> int:
    from mmfm.workflows.deid import deidentify_folder

    for t in a.keep_private:
        parts = t.split(",")
        if len(parts) != 2 or not all(len(p) == 4 and all(c in "0123456789abcdefABCDEF" for c in p) for p in parts):
            raise ConfigError(f"--keep-private {t}: not a tag", "write it as GGGG,EEEE in hex, e.g. 0029,1010")
    summary = deidentify_folder(a.input, a.out, a.keep_private, allow_outside_root=a.allow_outside_root)
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


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default=None, help="a catalog dataset (`mmfm data list`), or folder for a plain "
                                                   "directory of images (default: what --data-root holds, a "
                                                   "folder, shards or a mini corpus; mini without it)")
    p.add_argument("--data-root", "--root", dest="root", default=None,
                   help="where the data is (default for mini: $MMFM_HOME/data/mini)")


def _data_base(a: argparse.Namespace) -> dict[str, Any]:
    """The data options --dataset and --data-root give (no dataset when --dataset is not given: _named_data)."""
    return {"root": a.root, **({"dataset": a.dataset} if a.dataset else {})}


def _named_data(a: argparse.Namespace, data: Any) -> Any:
    """Without --dataset (or data.dataset=), the dataset is what the root holds (mmfm.data.spec.dataset_at)."""
    if a.dataset is None and not any(o.split("=", 1)[0].strip() == "data.dataset" for o in a.overrides):
        from mmfm.data.spec import dataset_at

        data.dataset = dataset_at(data.root)
    return data


def _evaluation_args(p: argparse.ArgumentParser, out: str, overrides_help: str) -> None:
    p.add_argument("--splits", nargs="+", default=["test"], help="splits to evaluate (default: test)")
    _data_args(p)
    p.add_argument("--out", default=out, help=f"output folder (default: {out})")
    p.add_argument("overrides", nargs="*", help=overrides_help)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmfm", description=__doc__.split("\n\n")[0],
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    q = sub.add_parser("quickstart", help="the main job: prepare mini, train baselines, pretrain, compare, report",
                       description="Prepare the built-in 'mini' corpus if needed, train a tissue classifier on 2D "
                                   "patches and a liver/tumour segmenter on LiTS slices, pretrain an encoder on the "
                                   "unlabelled patches (3 seeds; the recipe in configs/quickstart_pretrain.yaml, "
                                   "chosen on validation), compare three starting points (random initialisation, "
                                   "that pretraining, LiteMedSAM's packaged encoder) by linear probe at 1%, 10% and "
                                   "100% of the labels (3 seeds), and write results.json, report.md, report.html "
                                   "and plots under --out; the report opens with the comparison in one sentence.")
    q.add_argument("--out", default="runs/quickstart", help="run directory (default: runs/quickstart)")
    q.add_argument("--max-per-split", type=int, default=None, metavar="N",
                   help="compare the starting points on a stratified subset of at most N patches per split "
                        "(default: all; for a quick look, e.g. 200)")
    q.add_argument("overrides", nargs="*", help="config overrides for both runs, e.g. train.max_steps=20")
    q.set_defaults(func=_cmd_quickstart)

    t = sub.add_parser("train", help="train and evaluate a supervised task from a YAML config",
                       description="Train the task of CONFIG, evaluate it on the eval splits and write the run "
                                   "directory (config.yaml, metrics.jsonl, checkpoints/last, results.json, "
                                   "report.md). Re-running into the same directory resumes an interrupted run.")
    t.add_argument("config", help="YAML config (see configs/)")
    t.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.max_steps=10 out=runs/x")
    t.set_defaults(func=lambda a: _run_config(a, "train"))

    pt = sub.add_parser("pretrain", help="pretrain with a proxy task (MAE, SimCLR, ..., CLIP, GLoRIA, MedCLIP, RSM)",
                        description="Pretrain with cfg.objective: on unlabelled images (mae, simmim, simclr, moco, "
                                    "micle, pcl, voco, dae, combined), on image-text pairs (clip, medclip, gloria, "
                                    "mrem; cfg.text_encoder is the text tower) or on reports alone (rsm, mlm; "
                                    "data.set=reports). Writes the run directory with encoder/, text_encoder/ "
                                    "and dual/ (safetensors + JSON) as the objective has them. Resumes like "
                                    "`mmfm train`.")
    pt.add_argument("config", help="YAML recipe (configs/pretrain/)")
    pt.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.max_steps=100 out=runs/mae")
    pt.set_defaults(func=lambda a: _run_config(a, "pretrain"))

    fe = sub.add_parser(
        "federate", help="train a task across sites with Flower (FedAvg/FedProx): simulate, server, client",
        description="Federated training of CONFIG's task. federate.sites splits the data into sites (iid, "
                    "modality, patient, or a field/labels.csv column); each round every site trains "
                    "federate.local_steps steps on its own samples and the server aggregates (federate.strategy "
                    "fedavg|fedprox). 'simulate' runs every site in this process; 'server' and 'client --site S' "
                    "run them as separate processes over gRPC (federate.address, loopback by default). A site that "
                    "fails or disconnects mid-round is dropped from that round; the federation goes on while "
                    "federate.min_sites remain. Writes config.yaml, checkpoints/last (the global model), "
                    "results.json (each site's metrics and the overall example-weighted mean), federation.json "
                    "(who trained in each round, per-site metrics per round) and report.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  mmfm federate simulate configs/federated_classification.yaml\n"
               "  mmfm federate server configs/federated_classification.yaml &\n"
               "  mmfm federate client configs/federated_classification.yaml --site CT &\n"
               "  mmfm federate client configs/federated_classification.yaml --site MR")
    fe.add_argument("mode", choices=["simulate", "server", "client"], help="where this process stands")
    fe.add_argument("config", help="YAML config with a federate: section (see configs/)")
    fe.add_argument("--site", help="client: the site this process is")
    fe.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. federate.rounds=3")
    fe.set_defaults(func=_cmd_federate)

    co = sub.add_parser(
        "continual", help="learn tasks one after another (MoE experts + gate, sequential, replay); forgetting",
        description="Learn continual.tasks in order on one encoder with continual.method: moe (the first task "
                    "trains the encoder, then frozen; a LoRA expert and a head per later task; a prototype gate "
                    "routes each input to an expert), sequential (fine-tune on) or replay (a buffer of earlier "
                    "tasks' samples replayed each step). After each task every earlier task is evaluated. Writes "
                    "continual.json (metric matrix, forgetting, routing accuracy), results.json, report.md with "
                    "the forgetting curves, and one resumable training folder per task.")
    co.add_argument("config", help="YAML config with a continual: section (configs/continual_mini.yaml)")
    co.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. continual.method=replay")
    co.set_defaults(func=_cmd_continual)

    ev = sub.add_parser("evaluate", help="linear probe, k-NN and fine-tuning of encoders at several label fractions",
                        description="Evaluate one or more encoders (a pretrain run directory, random:<encoder>[:3D] "
                                    "or litemedsam) with the chosen protocols at each label fraction and seed. "
                                    "Writes results.json, summary.json (mean and sd over seeds), report.md and "
                                    "plots/label_efficiency.png under --out.")
    ev.add_argument("--encoder", nargs="+", required=True, help="encoder sources")
    ev.add_argument("--protocol", nargs="+", default=["linear", "knn"], help="linear, knn, finetune")
    ev.add_argument("--set", default="patches2d", help="mini set (patches2d, slices2d, crops3d)")
    ev.add_argument("--label", default="tissue", help="label key (mini: tissue, region, ...; labels.csv: label)")
    _data_args(ev)
    ev.add_argument("--fractions", nargs="+", type=float, default=[0.01, 0.1, 1.0], help="label fractions")
    ev.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds")
    ev.add_argument("--finetune-steps", type=int, default=100, help="optimiser steps per fine-tuning run")
    ev.add_argument("--max-per-split", type=int, default=None,
                    help="evaluate on a stratified subset of at most N samples per split (slow encoders)")
    ev.add_argument("--record-val", action="store_true",
                    help="also record every linear/k-NN score on the validation split (beside test in results.json), "
                         "so a best method can be chosen on validation")
    ev.add_argument("--out", default="runs/evaluate", help="output folder")
    ev.add_argument("overrides", nargs="*", help="data options, e.g. data.size=[32,32] data.channels=1")
    ev.set_defaults(func=_cmd_evaluate)

    zs = sub.add_parser("zeroshot", help="zero-shot classification with an image-text model and prompt ensembles",
                        description="Classify the images of a mini set (or of any labelled dataset or folder: "
                                    "--dataset/--data-root) without using its labels: each class name of "
                                    "--label is put into prompt templates, the prompts' text embeddings are "
                                    "averaged per class, and each image goes to the most similar class. Writes "
                                    "results.json (accuracy, balanced accuracy, AUROC, chance levels), prompts.json "
                                    "and report.md under --out.")
    zs.add_argument("--model", required=True, help="a vision-language pretraining run (clip, medclip, gloria)")
    zs.add_argument("--set", default="patches2d", help="mini set (patches2d, slices2d, crops3d)")
    zs.add_argument("--label", default="tissue", help="label whose class names become prompts")
    zs.add_argument("--templates", nargs="+", help="prompt templates with {name}, e.g. 'a CT patch of {name}.'")
    _evaluation_args(zs, "runs/zeroshot", "config overrides, e.g. task.synonyms={liver:[hepar]}")
    zs.set_defaults(func=_cmd_zeroshot)

    rt = sub.add_parser("retrieve", help="image<->text retrieval, or report section matching, Recall@1/5/10",
                        description="With --model: rank the captions or reports of a dataset (default: a mini set; "
                                    "--dataset/--data-root for image-text pairs such as MIMIC-CXR or IU-Xray) for "
                                    "each image and the images for each text (i2t_/t2i_ R@1, R@5, R@10, median "
                                    "rank, chance). With --text-encoder (minilm, hf:<folder> or a report "
                                    "pretraining run): rank the impressions of the reports (IU X-ray in mini, or "
                                    "yours) for each report's findings. Writes results.json and report.md.")
    rt.add_argument("--model", help="a vision-language pretraining run")
    rt.add_argument("--text-encoder", help="a text tower for section matching on the reports")
    rt.add_argument("--set", default="patches2d", help="mini set for image-text retrieval")
    _evaluation_args(rt, "runs/retrieve", "config overrides, e.g. task.max_length=64")
    rt.set_defaults(func=_cmd_retrieve)

    rg = sub.add_parser("report-gen", help="train and evaluate report generation (image encoder + text decoder)",
                        description="Train an image encoder with a transformer text decoder on image-text pairs, "
                                    "generate for the eval splits (greedy) and score BLEU-1..4, ROUGE-L, CIDEr-D "
                                    "and clinical efficacy (labeller findings). Writes generated_<split>.jsonl, "
                                    "results.json, report.md, checkpoints; resumes like `mmfm train`.")
    _config_args(rg, "configs/report_generation_{2d,3d}.yaml")
    rg.set_defaults(func=lambda a: _run_config(a, "report-gen"))

    vq = sub.add_parser("vqa", help="train and evaluate visual question answering (closed and free-text)",
                        description="Train a generative VQA model (image tokens + question tokens -> answer). "
                                    "Closed questions are answered by the most likely candidate answer, open ones "
                                    "by greedy generation. Data: mini slices2d or crops3d (3D; questions "
                                    "generated from labels) or a "
                                    "SLAKE / VQA-RAD style JSON dataset (data.dataset + data.root). Writes "
                                    "answers_<split>.jsonl, results.json, report.md.")
    _config_args(vq, "configs/vqa_{2d,3d}.yaml")
    vq.set_defaults(func=lambda a: _run_config(a, "vqa"))

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
    sg.add_argument("--out", required=True, help="mask file: .nii.gz / .nii (volumes, DICOM, NIfTI) or .png; for "
                                                 "DICOM input also .dcm (a DICOM SEG) or .rtstruct.dcm (an RT "
                                                 "Structure Set), on the source's slices")
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

    sv = sub.add_parser("serve", help="a local web app: upload a scan, segment with a box, zero-shot, saliency",
                        description="Start a web app on this machine (127.0.0.1 by default): upload a DICOM file or "
                                    "series (zip), NIfTI, MetaImage, NRRD or PNG; scroll the slices with a window "
                                    "preset; draw a box or click points for a LiteMedSAM mask (2D, or propagated "
                                    "through a volume), downloaded as NIfTI on the input's grid; zero-shot "
                                    "classification and text retrieval with an image-text run; a saliency overlay "
                                    "with a classification run; the de-identified header. Uploads stay in a "
                                    "temporary folder deleted when the app stops.")
    sv.add_argument("--model", action="append", default=[],
                    help="litemedsam (default), or a run folder: classification, promptable or image-text "
                         "(repeatable)")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    sv.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    sv.add_argument("--max-upload-mb", type=float, default=512, help="largest upload accepted (default 512 MB)")
    sv.add_argument("--dicomweb", metavar="URL", help="a PACS to list series from, open them and store masks back "
                                                      "as DICOM SEG (dicomweb+http(s)://HOST[:PORT]/PATH[/studies/"
                                                      "UID]; docs/pacs.md)")
    sv.set_defaults(func=_cmd_serve)
    from mmfm.cli import chat

    chat.add_parser(sub)
    rp = sub.add_parser("report", help="rebuild a run's report.html (self-contained, opens offline)",
                        description="Write RUN_DIR/report.html from the run's files alone: results with seeds and "
                                    "spread, training curves, every plot the run wrote (label efficiency, "
                                    "reliability, segmentation cases, saliency, embeddings), calibration and "
                                    "privacy records, the data card and the configuration; images embedded.")
    rp.add_argument("run_dir", help="a run folder (mmfm train, pretrain, evaluate, quickstart, ...)")
    rp.set_defaults(func=_cmd_report)
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

    d = sub.add_parser("data", help="datasets: list, info, inspect, prepare, deid",
                       description="The dataset catalog (the review's Tables I-III), file inspection and the "
                                   "built-in corpus.")
    dsub = d.add_subparsers(dest="data_command", metavar="ACTION")
    dl = dsub.add_parser("list", help="list catalog datasets")
    dl.add_argument("--table", choices=["I", "II", "III", "mmfm"], help="only this table of the review")
    dl.add_argument("--json", action="store_true", help="print JSON")
    dl.set_defaults(func=_cmd_data_list)
    di = dsub.add_parser("info", help="one dataset: modalities, task, size, licence, how to obtain, layout")
    di.add_argument("name")
    di.add_argument("--json", action="store_true", help="print JSON")
    di.set_defaults(func=_cmd_data_info)
    dn = dsub.add_parser("inspect", help="what mmfm reads from a file or folder (or why it cannot)")
    dn.add_argument("path", help="a file, a folder, or a DICOMweb series URL (docs/pacs.md)")
    dn.add_argument("--modality", help="modality for formats that do not record it (NIfTI, PNG, ...)")
    dn.add_argument("--json", action="store_true",
                    help="print one JSON object (shape, spacing, orientation, modality, min, max, ...)")
    dn.add_argument("--show-names", action="store_true",
                    help="print a DICOM file's or folder's name (hidden by default: names often carry PHI)")
    dn.set_defaults(func=_cmd_data_inspect)
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
    from mmfm.cli import pacs

    pacs.add_parsers(dsub)                                   # pull, push (DICOMweb)
    dv = dsub.add_parser("verify", help="check every shard of a shard folder against its SHA-256")
    dv.add_argument("shards", help="a folder `mmfm data shard` wrote")
    dv.set_defaults(func=_cmd_data_verify)

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
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub at run time
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `mmfm zoo export NAME --format onnx OUT`: the output folder after an option (argparse has closed the
    # positional list there too)
    if len(extra) == 1 and not extra[0].startswith("-") and getattr(args, "action", None) == "export" \
            and getattr(args, "target", "") is None:
        args.target, extra = extra[0], []
    # key=value overrides after an option (`mmfm data shard A B --shard-size 5 data.size=[32,32]`): argparse has
    # already closed the positional list; they are still overrides, anything else is an unknown argument
    if extra and isinstance(getattr(args, "overrides", None), list) and all(
            "=" in t and not t.startswith("-") for t in extra):
        args.overrides += extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        (parser if args.command != "data" else parser._subparsers._group_actions[0].choices["data"]).print_help()
        return 1
    try:
        return func(args)
    except MMFMError as e:
        print(f"mmfm: error: {e}", file=sys.stderr)
        return 2
    except MemoryError:
        print("mmfm: error: out of memory\n  hint: lower train.batch_size or data.size, or use a smaller encoder",
              file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        return 0
    except KeyboardInterrupt:
        print("mmfm: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except OSError as e:  # the file system: permission denied, disk full, a path that is not there
        if os.environ.get("MMFM_DEBUG") == "1":
            raise
        where = f": {e.filename}" if e.filename else ""
        print(f"mmfm: error: {e.strerror or e}{where}\n  hint: check the path, its permissions and the free disk "
              "space", file=sys.stderr)
        return 2
    except Exception as e:  # a bug in mmfm, not in the user's input: one line, and how to get the details
        if os.environ.get("MMFM_DEBUG") == "1":
            raise
        print(f"mmfm: internal error: {type(e).__name__}: {e}\n  hint: this is a bug in mmfm, not in your input; "
              "run again with MMFM_DEBUG=1 for the traceback and report it", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
