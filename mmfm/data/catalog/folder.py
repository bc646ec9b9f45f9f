"""The ``folder`` layout: a user's plain directory of images, with or without a ``labels.csv``.

Any mix of DICOM (single files, multi-frame files and series folders, grouped by SeriesInstanceUID), NIfTI,
MetaImage, NRRD, PNG/JPEG/TIFF and MRC, in nested sub-folders. Every image's header is checked while the folder is
scanned; files that cannot be images are skipped with their reason (listed in the data card, never silently), and
files that are not images at all (CSV, JSON, text, the ``.raw`` of a MetaImage) are counted and left alone.

Without ``labels.csv`` the folder is an unlabelled pretraining set. With it (columns ``image,label`` and optionally a
patient column) only the listed images are used, each with its class.

Masks (segmentation) are paired with their images by the conventions of :mod:`mmfm.data.catalog.masks`
(``labelsTr/`` beside ``imagesTr/``, ``<name>_label|_seg|_mask.<ext>`` beside ``<name>.<ext>``, or a ``mask`` column
in ``labels.csv``); a mask is never an image. When any image has a mask, the images without one are left out
(counted in ``scan["unmasked"]``): the folder is a segmentation set. Each mask is put on its image's grid when read
(:func:`mmfm.data.io.labels.place_mask`).

A folder is confined to its root (a downloaded folder is as hostile as any file): a ``labels.csv`` row that leaves
it (``../``, an absolute path, a link out) is an error naming its line, and a scanned file or DICOM series folder
that links out is skipped with that reason, unless the user opts in with ``data.allow_outside_root=true``.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from mmfm.data.catalog.confine import OUTSIDE, confine_rows, inside
from mmfm.data.catalog.loaders import (
    LAYOUTS,
    SampleList,
    _need_columns,
    _resolve_images,
    _rows,
    file_id,
    image_text_csv,
)
from mmfm.data.catalog.masks import pair_records
from mmfm.data.io import image_format, image_info, read_image
from mmfm.data.io.dicom import dicom_series_groups, is_dicom, read_dicom_series
from mmfm.data.io.formats import UnrecognisedFormat
from mmfm.data.io.labels import place_mask, read_label_map
from mmfm.data.pseudonym import pseudonym
from mmfm.data.sample import Ids, make_sample
from mmfm.errors import InputFileError

NOT_IMAGES = {".csv", ".json", ".jsonl", ".txt", ".md", ".yaml", ".yml", ".xml", ".raw", ".zraw", ".py", ".log",
              ".pdf", ".html", ".gitignore"}


def shown_name(path: Path, root: Path, dicom: bool | None = None) -> str:
    """How a file is named in logs and cards: its path inside the folder, except DICOM names (often built from
    patient names or accession numbers), which become keyed pseudonyms unless ``MMFM_KEEP_FILE_NAMES=1``.
    ``dicom``: whether it is DICOM, when the caller knows (None: a folder, or a file with the DICOM preamble)."""
    rel = str(path.relative_to(root)) if path.is_relative_to(root) else path.name
    if os.environ.get("MMFM_KEEP_FILE_NAMES") == "1":
        return rel
    if dicom is None:
        try:
            dicom = path.is_dir() or is_dicom(path)
        except OSError:
            dicom = False
    return pseudonym(rel, "file") if dicom else rel


def _reason(e: InputFileError, path: Path, root: Path) -> str:
    """The problem, with the file's full path (a library may quote it) replaced by its shown name."""
    return e.what.replace(str(path), shown_name(path, root))


def _links_out(root: Path, folder: Path) -> list[Path]:
    """Links under ``folder`` (what a DICOM series read takes, recursively) that resolve outside ``root``."""
    return [f for f in sorted(folder.rglob("*")) if f.is_symlink() and not inside(root, f)]


def scan_folder(root: Path, allow_outside_root: bool = False
                ) -> tuple[list[dict[str, Any]], list[dict[str, str]], int]:
    """(images, skipped, other_files): every readable image under ``root`` as a record with its header facts,
    every unreadable one with the reason, and how many other (non-image) files were left alone. Links to files
    outside ``root`` are skipped unless ``allow_outside_root`` (links to folders are never followed)."""
    images: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    others = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        here = Path(dirpath)
        dicoms: list[Path] = []
        for name in sorted(filenames):
            f = here / name
            low = name.lower()
            if name.startswith(".") or any(low.endswith(s) for s in NOT_IMAGES):
                others += 1
                continue
            if not allow_outside_root and f.is_symlink() and not inside(root, f):
                skipped.append({"file": shown_name(f, root, dicom=False), "reason": OUTSIDE})
                continue
            try:
                fmt = image_format(f)
            except UnrecognisedFormat:
                others += 1                            # not an image (a misnamed image is skipped with its reason)
                continue
            except InputFileError as e:
                skipped.append({"file": shown_name(f, root), "reason": _reason(e, f, root)})
                continue
            if fmt == "npz":
                others += 1
                continue
            if fmt == "dicom":
                dicoms.append(f)
                continue
            try:
                images.append({"path": f, "format": fmt, **image_info(f)})
            except InputFileError as e:
                skipped.append({"file": shown_name(f, root), "reason": _reason(e, f, root)})
        if dicoms and len(dicoms) > 1 and not allow_outside_root and _links_out(root, here):
            # a series is read from its whole folder: one link out would pull an outside file into it
            name = shown_name(here, root, dicom=True)
            skipped.append({"file": name, "reason": f"a DICOM series folder that {OUTSIDE}"})
            dicoms = []
        if dicoms:
            groups, bad, steps = dicom_series_groups(dicoms)
            for f, why in bad:
                name = shown_name(f, root, dicom=True)
                skipped.append({"file": name, "reason": why.replace(str(f), name)})
            for uid, files in groups.items():
                try:
                    if len(files) == 1:
                        images.append({"path": files[0], "format": "dicom", **image_info(files[0])})
                    else:
                        info = image_info(files[0])
                        step = steps[uid]
                        if "spacing" in info and (step or info.get("slice_spacing")):
                            info["spacing"] = [*info["spacing"], round(step or info["slice_spacing"], 4)]
                        images.append({"path": here, "series_uid": "" if uid.startswith("no-uid:") else uid,
                                       "format": "dicom-series", **info, "spatial_dims": 3, "depth": len(files)})
                except InputFileError as e:
                    skipped.append({"file": shown_name(files[0], root), "reason": _reason(e, files[0], root)})
    return images, skipped, others


@LAYOUTS.register("folder")
def folder(root: Path, labels: str = "labels.csv", image_column: str = "image", label_column: str = "label",
           patient_column: str = "", mask_column: str = "mask", modality: str = "", captions: str = "captions.csv",
           text_column: str = "text", allow_outside_root: bool = False) -> SampleList:
    """A plain directory of images (any supported format, nested), labelled by ``labels`` when that CSV exists,
    with masks paired by the conventions of :mod:`mmfm.data.catalog.masks`; without ``labels``, a ``captions`` CSV
    (``image_column``, ``text_column``[, ``patient_column``]) makes it image-text pairs, read as the catalog's pairs
    layout reads them (:func:`~mmfm.data.catalog.loaders.image_text_csv`: ROCO, MIMIC-CXR, ...).

    ``mask_column``: the ``labels`` column naming each image's mask (used when the table has it; the class column
    is then optional).
    ``modality``: for files that do not record it (NIfTI, PNG, ...); DICOM files keep their Modality tag.
    ``allow_outside_root`` (``data.allow_outside_root``): follow rows and links that leave ``root``.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputFileError(root, "folder not found", "point data.root at the folder that holds your images")
    table = root / labels
    if not table.exists() and (root / captions).exists():
        pairs = image_text_csv(root, captions, image_column, text_column, patient_column=patient_column,
                               modality=modality, allow_outside_root=allow_outside_root)
        pairs.scan = {"images": len(pairs), "captions": captions, "skipped": [], "other_files": 0}
        return pairs
    if table.exists() and not allow_outside_root and not inside(root, table):
        raise InputFileError(labels, OUTSIDE.replace("a file", "a table"), "copy the table into data.root")
    if table.exists():
        rows = _rows(table)
        if not rows:
            raise InputFileError(table, "has no rows", "one row per image: image,label")
        have = set(rows[0][1])
        with_masks = mask_column in have
        _need_columns(table, rows, [image_column, label_column if label_column in have or not with_masks else "",
                                    patient_column])
        confine_rows(root, table, rows, image_column, allow_outside_root)
        paths = _resolve_images(root, table, rows, image_column)
        mask_paths: list[Path | None] = [None] * len(rows)
        if with_masks:
            listed = [(n, row) for n, row in rows if (row[mask_column] or "").strip()]
            confine_rows(root, table, listed, mask_column, allow_outside_root)
            found = dict(zip([n for n, _ in listed], _resolve_images(root, table, listed, mask_column)))
            mask_paths = [found.get(n) for n, _ in rows]
        records: list[dict[str, Any]] = []
        skipped: list[dict[str, str]] = []
        for p, m, (n, row) in zip(paths, mask_paths, rows):
            try:
                info = image_info(p)
            except InputFileError as e:
                skipped.append({"file": shown_name(p, root), "reason": f"line {n}: {_reason(e, p, root)}"})
                continue
            records.append({"path": p, "format": image_format(p), **info, "label": row.get(label_column, ""),
                            "patient": row.get(patient_column, "") if patient_column else "",
                            **({"mask": m, "mask_format": image_format(m)} if m is not None else {})})
        others = 0
    else:
        records, skipped, others = scan_folder(root, allow_outside_root)
        records, orphans = pair_records(records, lambda p: shown_name(p, root))
        skipped += orphans
    masked = sum(1 for r in records if r.get("mask") is not None)
    unmasked = len(records) - masked if masked else 0
    if masked:   # a segmentation set: an image without a mask has nothing to learn from
        records = [r for r in records if r.get("mask") is not None]
    if not records:
        why = (f"; {len(skipped)} file(s) could not be read, e.g. {skipped[0]['file']}: {skipped[0]['reason']}"
               if skipped else "")
        raise InputFileError(root, f"no readable image in this folder{why}",
                             "mmfm reads DICOM, NIfTI, MetaImage (.mha/.mhd), NRRD, PNG/JPEG/TIFF and MRC, in any "
                             "sub-folder")
    classes = sorted({r["label"] for r in records}) if table.exists() and any(r["label"] for r in records) else []
    for r in records:
        # the group that keeps related images in one split: the CSV's patient, else the image (all its slices)
        rel = r["path"].relative_to(root) if r["path"].is_relative_to(root) else r["path"]   # outside: opted in
        r["patient"] = pseudonym(r.get("patient") or str(rel), "patient")
        r["name"] = shown_name(r["path"], root, dicom=r["format"] in ("dicom", "dicom-series"))
        r["modality"] = modality or r.get("modality", "unknown")

    def read(r: dict[str, Any]) -> dict[str, Any]:
        if r["format"] == "dicom-series":
            img = read_dicom_series(r["path"], modality=modality or None, series_uid=r["series_uid"])
            sid = pseudonym(f"{r['path']}#{r['series_uid']}", "file")
        else:
            img = read_image(r["path"], modality=modality or None)
            sid = file_id(r["path"], dicom=r["format"] == "dicom")
        labels_ = {"label": classes.index(r["label"])} if classes else {}
        mask = None
        if r.get("mask") is not None:
            mask, _ = place_mask(read_label_map(r["mask"]), img, shown_name(r["mask"], root))
        return make_sample({img.modality: img}, mask=mask, labels=labels_,
                           ids=Ids(sample_id=sid, patient_id=r["patient"]))

    out = SampleList(records, read, classes, [classes.index(r["label"]) for r in records] if classes else None)
    out.scan = {"images": len(records), "skipped": skipped, "other_files": others,
                "by_format": dict(Counter(r["format"] for r in records)),
                "by_dims": dict(Counter(f"{r['spatial_dims']}D" for r in records)),
                "masks": masked, "unmasked": unmasked,
                "mask_formats": dict(Counter(r["mask_format"] for r in records if r.get("mask") is not None))}
    return out
