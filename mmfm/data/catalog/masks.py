"""Which file is whose mask: the pairing conventions of the ``folder`` layout and of ``imagesTr/``-``labelsTr/``.

Three conventions, any readable format on either side (a NRRD image may have a NIfTI mask):

* ``labelsTr/`` beside ``imagesTr/`` (MSD, nnU-Net): ``labelsTr/<case>.<ext>`` is the mask of
  ``imagesTr/<case>.<ext>`` or of nnU-Net's ``imagesTr/<case>_0000.<ext>`` (also ``labelsTs/`` for ``imagesTs/``);
* a suffix next to the image: ``<name>_label.<ext>``, ``<name>_seg.<ext>`` or ``<name>_mask.<ext>`` is the mask of
  ``<name>.<ext>`` in the same folder (a DICOM series folder ``<name>/`` included);
* a ``mask`` column in ``labels.csv`` (see :mod:`mmfm.data.catalog.folder`).

A file that is a mask by these rules is never an image; one whose image is missing is skipped with that reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MASK_SUFFIXES = ("_label", "_seg", "_mask")
MASK_FOLDERS = {"labelsTr": "imagesTr", "labelsTs": "imagesTs"}
NNUNET_CHANNEL = "_0000"


def stem(path: Path) -> str:
    """A file's name without its format's extension (``.nii.gz`` counts as one); a folder's name."""
    name = path.name
    if path.is_dir():
        return name
    low = name.lower()
    for ext in (".nii.gz", ".nii"):
        if low.endswith(ext):
            return name[:-len(ext)]
    return path.stem


def mask_suffix(path: Path) -> str:
    """The mask suffix ``path``'s name ends with (``_seg``, ...), or ''."""
    s = stem(path).lower()
    return next((x for x in MASK_SUFFIXES if s.endswith(x)), "")


def image_folder_of(path: Path) -> Path | None:
    """``.../imagesTr`` for a file right inside ``.../labelsTr`` (or ``labelsTs``), else None."""
    up = MASK_FOLDERS.get(path.parent.name)
    return path.parent.parent / up if up else None


def image_stems(mask: Path) -> list[str]:
    """The image names a mask in ``labelsTr/`` pairs with: the same case, or nnU-Net's first channel, or
    BTCV's ``labelXXXX`` for ``imgXXXX``."""
    s = stem(mask)
    return [s, s + NNUNET_CHANNEL, *([s.replace("label", "img", 1)] if "label" in s else [])]


def pair_records(records: list[dict[str, Any]], shown: Any) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """(images, skipped): the scanned ``records`` with every mask taken out and set as ``record["mask"]`` (its
    path) of its image; a record that is a mask by name but has no image becomes a skipped entry.
    ``shown(path)``: how a path is named in the card."""
    by_place = {(r["path"].parent, stem(r["path"])): r for r in records}
    masks, skipped = set(), []
    for r in records:
        p = r["path"]
        owner = None
        folder = image_folder_of(p)
        if folder is not None:
            owner = next((by_place.get((folder, s)) for s in image_stems(p) if (folder, s) in by_place), None)
            why = f"a mask in {p.parent.name}/ without its image in {folder.name}/"
        elif mask_suffix(p):
            owner = by_place.get((p.parent, stem(p)[:-len(mask_suffix(p))]))
            why = f"named like a mask ({mask_suffix(p)}) but no image {stem(p)[:-len(mask_suffix(p))]}.* beside it"
        else:
            continue
        masks.add(id(r))
        if owner is None or id(owner) in masks:
            skipped.append({"file": shown(p), "reason": why})
        elif "mask" in owner:
            skipped.append({"file": shown(p), "reason": f"a second mask of {shown(owner['path'])} (the first, "
                                                        f"{shown(owner['mask'])}, is used)"})
        else:
            owner["mask"] = p
            owner["mask_format"] = r["format"]
    return [r for r in records if id(r) not in masks], skipped


def labels_index(labels_dir: Path) -> dict[str, Path]:
    """Every entry of a ``labelsTr/`` folder by its name without extension (files of any format, series folders)."""
    if not labels_dir.is_dir():
        return {}
    return {stem(f): f for f in sorted(labels_dir.iterdir()) if not f.name.startswith(".")}


def labels_folder_mask(image: Path, index: dict[str, Path]) -> Path | None:
    """The mask of ``imagesTr/<image>`` among a :func:`labels_index`, or None."""
    s = stem(image)
    wanted = [s, s.removesuffix(NNUNET_CHANNEL), s.replace("img", "label", 1)]
    return next((index[w] for w in wanted if w in index), None)


def image_path(record: dict[str, Any]) -> Path:
    """The image file or series folder of a layout's record (``path`` in ``folder``, ``image`` in the MSD family)."""
    return Path(record.get("path") or record["image"])


def check_mask(record: dict[str, Any]) -> dict[str, Any]:
    """What a case's mask holds and where it lies, read before training and for the card: ``grid`` (``same``,
    ``other``: resampled onto the image grid, ``apart``: no overlap in space, ``dims``: 2D against 3D, from the
    headers) and ``voxels`` ({label value: voxel count}, in the mask's own grid). Raises
    :class:`mmfm.errors.InputFileError` for a file that is not a label map."""
    import numpy as np

    from mmfm.data.io.labels import grid_relation, header_grid, read_label_map

    mask = read_label_map(record["mask"])
    values, counts = np.unique(mask.array, return_counts=True)
    grid = grid_relation(header_grid(image_path(record), record.get("series_uid")),
                         (tuple(mask.spatial_shape), mask.affine))
    return {"grid": grid, "voxels": {int(v): int(c) for v, c in zip(values, counts)}}
