"""Loaders for the layout families the catalog's datasets use.

Each loader takes the root of a user's local copy (a folder or file) and options, checks the layout up front
(a CSV row pointing at a missing image is reported with its line number before any training starts) and returns
:class:`SampleList`, a lazy sequence of sample dicts (:mod:`mmfm.data.sample`); images are read on access.

Every path a loader reads from a table, JSON, XML or option stays inside ``root`` (:mod:`mmfm.data.catalog.confine`)
unless the user sets ``data.allow_outside_root=true``, which reaches each loader as ``allow_outside_root``.
"""

from __future__ import annotations

import csv
import json
import os
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmfm.data.catalog.confine import KEY, confine, confine_rows, inside_root
from mmfm.data.catalog.entries import get_entry
from mmfm.data.catalog.masks import NNUNET_CHANNEL, labels_folder_mask, labels_index, stem
from mmfm.data.io import read_image
from mmfm.data.io.checks import check_file
from mmfm.data.io.labels import place_mask, read_label_map
from mmfm.data.io.npz import read_medmnist_npz
from mmfm.data.io.reports import clean_text, parse_iu_xml, split_sections
from mmfm.data.modality import canonical_modality
from mmfm.data.pseudonym import pseudonym
from mmfm.data.sample import Ids, Image, Report, make_sample
from mmfm.data.samplelist import SampleList, slice_sample  # noqa: F401  (re-exported)
from mmfm.data.sources.mini_reader import load_mini
from mmfm.errors import ConfigError, InputFileError
from mmfm.registry import Registry

LAYOUTS: Registry[SampleList] = Registry("layout")  # noqa: F821


def file_id(path: Path, dicom: bool | None = None) -> str:
    """A sample id from an image's file name; DICOM names (often built from patient names or accession numbers)
    become keyed pseudonyms unless ``MMFM_KEEP_FILE_NAMES=1`` says the user wants them. ``dicom``: whether the
    file is DICOM, when the caller knows (None: read its header to find out)."""
    from mmfm.data.io import image_format

    if os.environ.get("MMFM_KEEP_FILE_NAMES") == "1":
        return path.stem
    if dicom is None:
        try:
            dicom = image_format(path) in ("dicom", "dicom-series")
        except InputFileError:
            dicom = False
    return pseudonym(str(path), "file") if dicom else path.stem


def _rows(path: Path) -> list[tuple[int, dict[str, str]]]:
    """The rows of a CSV with their line numbers (the header is line 1). A field over csv's limit (a huge caption:
    131,072 characters) or text that is not UTF-8 is an error naming the line."""
    check_file(path)
    rows: list[tuple[int, dict[str, str]]] = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        try:
            for row in reader:
                rows.append((len(rows) + 2, row))   # the header is line 1
        except csv.Error as e:
            raise InputFileError(path, f"line {len(rows) + 2}: {e}",
                                 f"keep each cell under {csv.field_size_limit():,} characters") from None
        except UnicodeDecodeError:
            raise InputFileError(path, f"line {len(rows) + 2}: is not UTF-8 text",
                                 "save the table as UTF-8") from None
    return rows


def _need_columns(path: Path, rows: list[tuple[int, dict[str, str]]], cols: list[str]) -> None:
    have = list(rows[0][1]) if rows else []
    missing = [c for c in cols if c and c not in have]
    if missing:
        raise InputFileError(path, f"has no column(s) {missing}; its columns are {have}",
                             "pass the right column names as loader options")


def _resolve_images(root: Path, table: Path, rows: list[tuple[int, dict[str, str]]], column: str,
                    image_dir: str = "", suffix: str = "") -> list[Path]:
    """Every row's image path, checked to exist; raises listing the first missing ones with their lines."""
    base = root / image_dir
    paths, missing = [], []
    for n, row in rows:
        p = base / (row[column] + suffix)
        paths.append(p)
        if not p.exists():
            missing.append(f"line {n}: {p.relative_to(root) if p.is_relative_to(root) else p}")
    if missing:
        raise InputFileError(table, f"{len(missing)} row(s) point at missing images, e.g. {'; '.join(missing[:3])}",
                             "fix the paths (relative to the dataset root) or remove those rows")
    return paths


@LAYOUTS.register("medmnist_npz")
def medmnist_npz(root: Path, split: str = "train", modality: str = "XR") -> SampleList:
    """MedMNIST ``<flag>.npz`` (2D grey/RGB or 3D). ``root`` is the .npz file."""
    images, labels = read_medmnist_npz(root, split)
    stem = Path(root).stem
    records = [{"i": i} for i in range(len(images))]

    def read(r: dict[str, Any]) -> dict[str, Any]:
        i = r["i"]
        lab = labels[i]
        return make_sample({modality: Image(images[i], modality, np.eye(4))},
                           labels={"label": int(lab[0]) if len(lab) == 1 else lab.tolist()},
                           ids=Ids(sample_id=f"{stem}-{split}-{i}"))

    single = labels.shape[1] == 1 and len(labels)
    if not single:
        return SampleList(records, read)
    return SampleList(records, read, [str(c) for c in range(int(labels.max()) + 1)], labels[:, 0].tolist())


@LAYOUTS.register("image_csv")
def image_csv(root: Path, table: str = "labels.csv", image_column: str = "image", label_column: str = "label",
              patient_column: str = "", image_dir: str = "", modality: str = "XR",
              modality_columns: dict[str, str] | None = None, allow_outside_root: bool = False) -> SampleList:
    """Images plus a CSV of labels (one row per image). ``modality_columns`` ({modality: column}, e.g. ``{CT: ct,
    PT: pet}`` or ``{"MR:T1": t1, "MR:T2": t2}``): one multi-modal sample per row, an image per column on one grid;
    an empty cell is a missing modality (``data.missing_modalities=zero`` to use such rows). The row's other
    columns are kept with the sample (``federate.sites=<column>``). ``allow_outside_root``: read paths that leave
    ``root`` (``data.allow_outside_root``)."""
    root = Path(root)
    path = inside_root(root, table, "data.options.table", allow_outside_root)
    rows = _rows(path)
    columns = dict(modality_columns or {})
    for m in columns:
        canonical_modality(m)
    _need_columns(path, rows, [*(columns.values() or [image_column]), label_column, patient_column])
    for c in columns.values() or [image_column]:
        confine_rows(root, path, rows, c, allow_outside_root, image_dir)
    if columns:
        per_mod = {m: [(n, r) for n, r in rows if (r.get(c) or "").strip()] for m, c in columns.items()}
        empty = [n for n, r in rows if not any((r.get(c) or "").strip() for c in columns.values())]
        if empty:
            raise InputFileError(root / table, f"row(s) {empty[:3]} name no image in any of {list(columns.values())}",
                                 "give each row at least one image, or remove it")
        found = {m: dict(zip([n for n, _ in rs], _resolve_images(root, root / table, rs, columns[m], image_dir)))
                 for m, rs in per_mod.items()}
        paths_of = [{m: found[m][n] for m in columns if n in found[m]} for n, _ in rows]
    else:
        paths_of = [{"": p} for p in _resolve_images(root, root / table, rows, image_column, image_dir)]
    used = set(columns.values()) | {image_column, label_column, patient_column}
    records: list[dict[str, Any]] = [{"path": next(iter(ps.values())), "paths": ps, "label": row[label_column],
                                     "patient": row.get(patient_column, "") if patient_column else "",
                                     "row": {k: v for k, v in row.items() if k not in used}}
                                    for ps, (_, row) in zip(paths_of, rows)]
    classes = sorted({r["label"] for r in records})

    def read(r: dict[str, Any]) -> dict[str, Any]:
        if "" in r["paths"]:
            img = read_image(r["path"], modality=modality)
            images = {img.modality: img}
        else:   # the column's modality names the image, whatever its header says (two MR sequences stay two)
            images = {}
            for m, p in r["paths"].items():
                im = read_image(p, modality=m.split(":")[0])
                images[m] = Image(im.array, m, im.affine, im.meta)
        sample = make_sample(images, labels={"label": classes.index(r["label"])},
                             ids=Ids(sample_id=file_id(r["path"]), patient_id=pseudonym(r["patient"], "patient")))
        sample["row"] = r["row"]
        return sample

    out = SampleList(records, read, classes, [classes.index(r["label"]) for r in records])
    if columns:   # every sample's fused modalities, whatever the first one holds
        out.scan["modalities"] = list(columns)
    return out


@LAYOUTS.register("image_text_csv")
def image_text_csv(root: Path, table: str = "captions.csv", image_column: str = "image", text_column: str = "text",
                   section_columns: dict[str, str] | None = None, patient_column: str = "", study_column: str = "",
                   image_dir: str = "", modality: str = "XR", allow_outside_root: bool = False) -> SampleList:
    """Images plus a CSV of captions or reports (ROCO, MedICaT, PMC-OA, MIMIC-CXR, CT-RATE, ...)."""
    root = Path(root)
    path = inside_root(root, table, "data.options.table", allow_outside_root)
    rows = _rows(path)
    text_cols = list((section_columns or {}).values()) or [text_column]
    _need_columns(path, rows, [image_column, *text_cols, patient_column, study_column])
    confine_rows(root, path, rows, image_column, allow_outside_root, image_dir)
    paths = _resolve_images(root, path, rows, image_column, image_dir)
    records = []
    for p, (n, row) in zip(paths, rows):
        if section_columns:
            secs = {k: clean_text(row[c] or "") for k, c in section_columns.items()}
            report = Report(text=" ".join(f"{k.upper()}: {v}" for k, v in secs.items() if v), sections=secs,
                            findings=secs.get("findings", ""), impression=secs.get("impression", ""),
                            indication=secs.get("indication", ""))
        else:
            report = split_sections(row[text_column] or "")
        records.append({"path": p, "report": report, "line": n,
                        "patient": row.get(patient_column, "") if patient_column else "",
                        "study": row.get(study_column, "") if study_column else ""})

    def read(r: dict[str, Any]) -> dict[str, Any]:
        img = read_image(r["path"], modality=modality)
        return make_sample({img.modality: img}, report=r["report"], ids=Ids(
            sample_id=f"{file_id(r['path'])}@{r['line']}", patient_id=pseudonym(r["patient"], "patient"),
            study_id=pseudonym(r["study"], "study")))

    return SampleList(records, read)


def _nifti_pairs(root: Path, allow_outside_root: bool = False) -> list[tuple[Path | list[Path], Path | None, str]]:
    """(image, label map or None, case) of every case; the image is a list of files, one per channel, for an
    nnU-Net case of several (``imagesTr/<case>_0000``, ``_0001``, ...). Paths from ``dataset.json`` and scanned
    files that link out are refused unless ``allow_outside_root``. An nnU-Net v2 ``dataset.json`` (no ``training``
    list) only names the channels: the cases are those in ``imagesTr/``."""
    ds_json = root / "dataset.json"
    if ds_json.exists() and "training" in _dataset_json(root, ds_json, allow_outside_root):
        entries = _dataset_json(root, ds_json, allow_outside_root)["training"]
        bad = [i for i, e in enumerate(entries if isinstance(entries, list) else [None])
               if not isinstance(e, dict) or not isinstance(e.get("image"), str)
               or not isinstance(e.get("label") or "", str)]
        if bad:
            raise InputFileError(ds_json, f"training[{bad[0]}] is not {{image: path[, label: path]}}",
                                 "write each case's image (and label map) path as a string, relative to the folder")
        confine(root, ds_json, [(f"training[{i}].{k}", e[k]) for i, e in enumerate(entries) for k in ("image", "label")
                                if e.get(k)], allow_outside_root, "path(s) lead")
        return [(root / e["image"], root / e["label"] if e.get("label") else None,
                 Path(e["image"]).name.split(".")[0]) for e in entries]
    if (root / "imagesTr").is_dir():   # any format mmfm reads, masks paired as the folder layout pairs them
        index = labels_index(root / "labelsTr")
        out = [(imgs if len(imgs) > 1 else imgs[0], labels_folder_mask(imgs[0], index), case)
               for case, imgs in _channel_groups(_images_in(root / "imagesTr")).items()]
    else:
        cases = sorted(d for d in root.iterdir() if d.is_dir() and (d / "ct.nii.gz").exists())
        out = [(d / "ct.nii.gz", d / "combined_labels.nii.gz" if (d / "combined_labels.nii.gz").exists() else None,
                d.name) for d in cases]
    files = [p.relative_to(root) for img, lab, _ in out
             for p in [*(img if isinstance(img, list) else [img]), lab] if p is not None]
    confine(root, root, [(str(p), p) for p in files], allow_outside_root, "file(s) link to files")
    return out


def _dataset_json(root: Path, ds_json: Path, allow_outside_root: bool) -> dict[str, Any]:
    """An MSD / nnU-Net ``dataset.json``, checked to be a JSON object."""
    inside_root(root, "dataset.json", "the table", allow_outside_root)
    try:
        doc = json.loads(check_file(ds_json).read_text(encoding="utf-8"))
    except ValueError as e:
        raise InputFileError(ds_json, f"is not an MSD dataset.json ({type(e).__name__})",
                             'expected {"training": [{"image": ..., "label": ...}, ...]}') from None
    if not isinstance(doc, dict):
        raise InputFileError(ds_json, "is not an MSD dataset.json (not a JSON object)",
                             'expected {"training": [{"image": ..., "label": ...}, ...]}')
    return doc


def _channel_groups(images: list[Path]) -> dict[str, list[Path]]:
    """case -> its image files in channel order: nnU-Net names the channels of a case ``<case>_0000``,
    ``<case>_0001``, ...; any other name is a case of one file."""
    groups: dict[str, dict[int, Path]] = {}
    for img in images:
        s = stem(img)
        tail = s[-len(NNUNET_CHANNEL):]
        if len(s) > len(NNUNET_CHANNEL) and tail[0] == "_" and tail[1:].isdigit():
            groups.setdefault(s[:-len(NNUNET_CHANNEL)], {})[int(tail[1:])] = img
        else:
            groups.setdefault(s, {})[0] = img
    out = {}
    for case, chans in groups.items():
        if sorted(chans) != list(range(len(chans))):
            missing = sorted(set(range(max(chans) + 1)) - set(chans))
            raise InputFileError(chans[max(chans)], f"case {case} lacks channel file(s) "
                                 + ", ".join(f"{case}_{c:04d}" for c in missing),
                                 "nnU-Net numbers the channels of each case _0000, _0001, ... without gaps")
        out[case] = [chans[c] for c in sorted(chans)]
    return out


def channel_names(root: Path) -> list[str]:
    """The channel names an MSD / nnU-Net ``dataset.json`` declares (``channel_names``, v2; ``modality``, MSD), in
    channel order; [] without one."""
    ds_json = root / "dataset.json"
    if not ds_json.is_file():
        return []
    try:
        doc = json.loads(ds_json.read_text(encoding="utf-8"))
    except (ValueError, OSError):
        return []
    names = doc.get("channel_names") or doc.get("modality") if isinstance(doc, dict) else None
    if not isinstance(names, dict):
        return []
    try:
        return [str(names[k]) for k in sorted(names, key=int)]
    except ValueError:
        return []


def read_channels(paths: list[Path], modality: str, names: Sequence[str] = ()) -> Image:
    """One image of several channels, one file each (nnU-Net), all on one grid: (C, *spatial)."""
    images = [read_image(p, modality=modality) for p in paths]
    first = images[0]
    for p, im in zip(paths[1:], images[1:]):
        if im.array.shape[1:] != first.array.shape[1:] or not np.allclose(im.affine, first.affine, atol=1e-3):
            raise InputFileError(p, f"is not on the grid of {paths[0].name} (shape {list(im.array.shape[1:])} "
                                 f"vs {list(first.array.shape[1:])})", "write every channel of a case on one grid")
    array = np.concatenate([im.array.astype(np.float32) for im in images], axis=0)
    meta = {**first.meta, "channels": list(names) if len(names) == array.shape[0] else
            [f"channel {c}" for c in range(array.shape[0])]}
    return Image(array, first.modality, first.affine, meta)


def _images_in(folder: Path) -> list[Path]:
    """The images right inside ``folder``: files of a format mmfm reads (not tables or notes) and DICOM series
    folders."""
    from mmfm.data.io import image_format

    out = []
    for f in sorted(folder.iterdir()):
        if f.name.startswith(".") or f.suffix.lower() in (".json", ".csv", ".txt", ".md", ".raw", ".zraw"):
            continue
        try:
            if image_format(f) != "npz":
                out.append(f)
        except InputFileError:
            continue
    return out


@LAYOUTS.register("nifti_folders")
def nifti_folders(root: Path, modality: str = "CT", require_labels: bool = False,
                  allow_outside_root: bool = False) -> SampleList:
    """Volumes with label maps: MSD (dataset.json), ``imagesTr/labelsTr`` (BTCV, AMOS, nnU-Net; any format mmfm
    reads on either side: NIfTI, NRRD, MetaImage, DICOM series folders) or AbdomenAtlas case folders
    (``<case>/ct.nii.gz`` + ``combined_labels.nii.gz``). Each label map is put on its image's grid when read
    (:func:`mmfm.data.io.labels.place_mask`)."""
    root = Path(root)
    if not root.is_dir():
        raise InputFileError(root, "dataset folder not found")
    pairs = _nifti_pairs(root, allow_outside_root)
    if not pairs:
        raise InputFileError(root, "no images found", "expected dataset.json, imagesTr/ (any image format mmfm "
                             "reads, masks in labelsTr/) or <case>/ct.nii.gz")
    names = channel_names(root)
    counts = {len(img) if isinstance(img, list) else 1 for img, _, _ in pairs}
    if len(counts) > 1:
        raise InputFileError(root / "imagesTr", f"the cases have different numbers of channels {sorted(counts)}",
                             "give every case the same channels (<case>_0000, <case>_0001, ...)")
    if len(names) > 1 and counts != {1} and counts != {len(names)}:
        raise InputFileError(root / "dataset.json", f"names {len(names)} channels ({', '.join(names)}) but the "
                             f"cases have {counts.pop()}", "give each case one file per channel: <case>_0000, ...")
    for img, lab, _ in pairs:
        first = img[0] if isinstance(img, list) else img
        if not first.exists():
            raise InputFileError(first, "listed image is missing")
        if lab is None and require_labels:
            raise InputFileError(first, "has no label map", "put it in labelsTr/ with the same file name")
    records = [{"image": i[0], "channel_files": i, "label": lbl, "mask": lbl, "case": c} if isinstance(i, list) else
               {"image": i, "label": lbl, "mask": lbl, "case": c} for i, lbl, c in pairs]

    def read(r: dict[str, Any]) -> dict[str, Any]:
        img = (read_channels(r["channel_files"], modality, names) if r.get("channel_files") else
               read_image(r["image"], modality=modality))
        mask = None
        if r["label"] is not None:
            mask, _ = place_mask(read_label_map(r["label"]), img, r["label"].relative_to(root)
                                 if r["label"].is_relative_to(root) else r["label"].name)
        return make_sample({img.modality: img}, mask=mask, ids=Ids(sample_id=r["case"], patient_id=r["case"]))

    return SampleList(records, read)


@LAYOUTS.register("coco_boxes")
def coco_boxes(root: Path, annotations: str = "annotations.json", image_dir: str = "",
               modality: str = "unknown", allow_outside_root: bool = False) -> SampleList:
    """Images with box annotations in a COCO-style JSON (detection): ``annotations`` lists the images (file names
    relative to ``root/image_dir``), the boxes ([x, y, width, height] in pixels) and the categories. Images
    without boxes are kept (negatives). ``class_names`` = ["background", *categories], box labels 0..K-1."""
    from mmfm.data.io.coco import read_coco

    root = Path(root)
    table = check_file(inside_root(root, annotations, "data.options.annotations", allow_outside_root))
    ann = read_coco(table)
    cats = ann.pop("__categories__")
    confine(root, table, [(f"file_name {str(name)[:80]!r}", Path(image_dir) / str(name)) for name in ann],
            allow_outside_root, "image(s) name files")
    records, missing = [], []
    for name, rec in sorted(ann.items()):
        path = root / image_dir / name
        if not path.exists():
            missing.append(name)
        records.append({"path": path, "case": Path(name).name.split(".")[0], "boxes": rec["boxes"],
                        "box_labels": rec["labels"]})
    if missing:
        raise InputFileError(table, f"{len(missing)} listed image(s) are missing, e.g. {missing[:3]}",
                             "fix file_name (relative to the dataset root, or set data.options.image_dir)")

    def read(r: dict[str, Any]) -> dict[str, Any]:
        img = read_image(r["path"], modality=modality)
        if img.spatial_dims != 2:
            raise InputFileError(r["path"], "COCO boxes are 2D but this image is a volume",
                                 "box annotations of volumes: give masks (boxes are made from their components)")
        sample = make_sample({img.modality: img}, ids=Ids(sample_id=file_id(r["path"]),
                                                          patient_id=pseudonym(r["case"], "patient")))
        sample["boxes"], sample["box_labels"] = r["boxes"], r["box_labels"]
        return sample

    return SampleList(records, read, class_names=["background", *cats])


@LAYOUTS.register("vqa_json")
def vqa_json(root: Path, file: str = "train.json", image_key: str = "img_name", image_dir: str = "imgs",
             question_key: str = "question", answer_key: str = "answer", modality: str = "XR",
             language: str = "en", allow_outside_root: bool = False) -> SampleList:
    """VQA JSON (SLAKE, VQA-RAD, PathVQA exported): a list of {image, question, answer[, answer_type]}."""
    root = Path(root)
    path = check_file(inside_root(root, file, "data.options.file", allow_outside_root))
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputFileError(path, f"invalid JSON ({e})") from None
    if not isinstance(items, list) or not all(isinstance(q, dict) for q in items):
        raise InputFileError(path, "expected a JSON list of question records")
    items = [q for q in items if q.get("q_lang", language) == language]
    for n, q in enumerate(items):
        missing = [k for k in (image_key, question_key, answer_key) if k not in q]
        if missing:
            raise InputFileError(path, f"record {n} has no {missing}", f"keys present: {sorted(q)}")
    confine(root, path, [(f"record {n}", Path(image_dir) / str(q[image_key])) for n, q in enumerate(items)],
            allow_outside_root, "record(s) name files")
    records = []
    for n, q in enumerate(items):
        img = root / image_dir / str(q[image_key])
        if not img.exists():
            raise InputFileError(path, f"record {n} points at missing image {img}")
        records.append({"image": img, "q": str(q[question_key]), "a": str(q[answer_key]),
                        "type": str(q.get("answer_type", "")), "n": n})

    def read(r: dict[str, Any]) -> dict[str, Any]:
        im = read_image(r["image"], modality=modality)
        return make_sample({im.modality: im}, texts={"question": r["q"], "answer": r["a"], "answer_type": r["type"]},
                           ids=Ids(sample_id=f"q{r['n']}", study_id=r["image"].stem))

    return SampleList(records, read)


@LAYOUTS.register("text_only")
def text_only(root: Path, file: str = "", format: str = "csv", fields: dict[str, str] | None = None,
              label: str = "", id: str = "", patient: str = "", allow_outside_root: bool = False) -> SampleList:
    """Plain-text datasets (MedNLI jsonl, MeQSum/MIMIC CSV, JSON lists). ``fields`` maps text name -> column;
    ``file``: the file inside ``root`` (``root`` itself when empty)."""
    root = Path(root)
    path = check_file(inside_root(root, file, "data.options.file", allow_outside_root) if file else root)
    fields = fields or {"text": "text"}
    try:
        if format == "jsonl":
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        elif format == "json":
            rows = json.loads(path.read_text(encoding="utf-8"))
        else:
            rows = [r for _, r in _rows(path)]
    except json.JSONDecodeError as e:
        raise InputFileError(path, f"invalid JSON ({e})") from None
    missing = sorted({c for c in fields.values() if rows and c not in rows[0]})
    if missing:
        raise InputFileError(path, f"has no field(s) {missing}; fields are {sorted(rows[0]) if rows else []}")
    labels = sorted({str(r[label]) for r in rows}) if label else []

    def read_row(i: int) -> dict[str, Any]:
        r = rows[i]
        texts = {k: str(r[c]) for k, c in fields.items()}
        rep = split_sections(texts["text"]) if "text" in texts and texts["text"].strip() else None
        return make_sample(None, report=rep, texts=texts,
                           labels={"label": labels.index(str(r[label]))} if label else {},
                           ids=Ids(sample_id=str(r.get(id, i)) if id else str(i),
                                   patient_id=pseudonym(str(r.get(patient, "")), "patient") if patient else ""))

    return SampleList([{"i": i} for i in range(len(rows))], lambda rec: read_row(rec["i"]))


@LAYOUTS.register("iu_xray")
def iu_xray(root: Path, reports: str = "ecgen-radiology", image_dir: str = "NLMCXR_png", modality: str = "XR",
            require_images: bool = True, allow_outside_root: bool = False) -> SampleList:
    """IU X-ray (OpenI): report XMLs (a folder or the NLMCXR_reports.tgz) and PNGs named by parentImage id.
    One sample per (report, image); with ``require_images=False`` one text-only sample per report."""
    root = Path(root)
    src = inside_root(root, reports, "data.options.reports", allow_outside_root)
    parsed = []     # (where the XML came from, the report)
    if src.is_dir():
        xmls = sorted(src.glob("*.xml"))
        confine(root, src, [(p.name, Path(reports) / p.name) for p in xmls], allow_outside_root,
                "file(s) link to files")
        parsed = [(str(Path(reports) / p.name), parse_iu_xml(p.read_bytes(), str(p))) for p in xmls]
    elif src.exists() or (root / "NLMCXR_reports.tgz").exists():
        tgz = src if src.exists() else inside_root(root, "NLMCXR_reports.tgz", "the report archive",
                                                   allow_outside_root)
        with tarfile.open(tgz) as tf:
            for m in tf.getmembers():
                if m.name.endswith(".xml"):
                    xml = tf.extractfile(m).read()  # type: ignore[union-attr]
                    parsed.append((f"{tgz.name}:{m.name}", parse_iu_xml(xml, m.name)))
    else:
        raise InputFileError(src, "report folder not found", "expected ecgen-radiology/*.xml or NLMCXR_reports.tgz")
    if require_images:   # image ids come from the XML: a hostile one may climb out of image_dir
        for where, rep in parsed:
            confine(root, where, [(f"parentImage {str(i)[:80]!r} of report {str(rep['uid'])[:80]!r}",
                                   Path(image_dir) / f"{i}.png") for i in rep["images"]],
                    allow_outside_root, "image id(s) name files")
    records = []
    for _, rep in parsed:
        if not rep["report"].text:
            continue
        if require_images:
            for img_id in rep["images"]:
                p = root / image_dir / f"{img_id}.png"
                if not p.exists():
                    raise InputFileError(p, f"image of report {rep['uid']} is missing",
                                         "put NLMCXR_png next to the reports, or pass require_images=False")
                records.append({"rep": rep, "path": p, "report": rep["report"], "patient": rep["uid"]})
        else:
            records.append({"rep": rep, "path": None, "report": rep["report"], "patient": rep["uid"]})

    def read(r: dict[str, Any]) -> dict[str, Any]:
        rep = r["rep"]
        imgs = {}
        if r["path"] is not None:
            im = read_image(r["path"], modality=modality)
            imgs = {im.modality: im}
        return make_sample(imgs, report=rep["report"], labels={"mesh": rep["mesh"]},
                           ids=Ids(sample_id=rep["uid"] + (f"/{r['path'].stem}" if r["path"] else ""),
                                   patient_id=rep["uid"], study_id=rep["uid"]))

    return SampleList(records, read)


def load_dataset(name: str, root: str | Path, allow_outside_root: bool = False, /, **options: Any) -> SampleList:
    """Load a catalog dataset from a local copy: the entry's layout family with its default options.

    ``allow_outside_root`` (``data.allow_outside_root``, positional only): let the layout read paths that leave
    ``root``. It is a typed key of its own (a security choice, not a loader detail): a keyword of that name is
    one of ``data.options`` and is refused, so no option dictionary can switch it on."""
    entry = get_entry(name)
    if "allow_outside_root" in options:
        raise ConfigError("data.options.allow_outside_root is not an option", f"set {KEY}=true")
    if entry.layout == "mini":
        return load_mini(root, **options)
    LAYOUTS.check_options(entry.layout, options, "data.options")
    opts = {**entry.options, **options}
    if LAYOUTS.accepts(entry.layout, "allow_outside_root"):
        opts["allow_outside_root"] = bool(allow_outside_root)
    return LAYOUTS.get(entry.layout)(Path(root), **opts)
