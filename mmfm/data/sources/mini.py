"""``mini``: mmfm's built-in default corpus, derived from real medical data shipped in registry packages.

Sets (all intensities preprocessed by the named modality preset to about [0, 1]):

* ``slices2d``  axial 2D slices, 1 x 128 x 128, with masks and labels (region, lesion present), from the LiTS CT
  (liver / tumour masks), Colin27 T1 MRI (brain mask from ch2bet), MNI152 T1 (GM / WM masks), and real DICOM
  radiographs, MR, CT and ultrasound files plus a fundus photograph and an IHC slide (these last in ``train`` only).
* ``patches2d`` 1 x 32 x 32 patches of those volumes, labelled by the tissue under their centre
  (CT background, liver, liver tumour, brain grey matter, brain white matter).
* ``crops3d``   1 x 32 x 32 x 32 crops of the LiTS CT and MNI152 MRI with masks and a lesion/tissue label.
* ``reports.jsonl`` the 3,955 real IU X-ray reports (sections + MeSH terms), split by report.

Single-volume sources cannot be split by patient; they are split into slabs along the slice axis with a gap of
4 slices between splits (``split_group`` records the slab), which the card states.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from mmfm.data.io.mrc import read_mrc_array
from mmfm.data.io.reports import parse_iu_xml
from mmfm.data.presets import get_preset
from mmfm.data.sources import mini_captions as cap
from mmfm.data.sources.card import card_markdown, split_counts
from mmfm.data.sources.fetch import Source, extract_member, fetch, mmfm_home, start_build
from mmfm.data.splits import group_split
from mmfm.errors import MMFMError

VERSION = 2   # 2: captions from masks and positions (mini_captions), the label-only caption in caption_label
SIZE2D, PATCH, CROP = 128, 32, 32
TISSUES = ["ct_background", "liver", "liver_tumour", "brain_grey_matter", "brain_white_matter"]
REGIONS = ["abdomen", "brain", "chest", "leg", "shoulder", "eye", "tissue_slide", "unspecified"]
# the preset applied to each modality when the corpus is built (stored with every model trained on it)
PRESET_BY_MODALITY = {"CT": "ct_abdomen", "MR": "mri_percentile", "XR": "xray", "US": "ultrasound",
                      "fundus": "rgb_unit", "pathology": "rgb_unit"}
SLABS = {"train": (0.0, 0.44), "val": (0.47, 0.72), "test": (0.75, 1.0)}  # fractions along the slice axis

SOURCES = {
    "lits": Source("liver-ct-segmentation-package", "1.6.0", "pypi",
                   "liver_ct_segmentation_package-1.6.0-py2.py3-none-any.whl",
                   "67ffa526d8500ce5e3d9f2c96c1690543d811d352d93d531301d35791b9d6bba",
                   "MIT (package); LiTS challenge data terms", "https://pypi.org/project/liver-ct-segmentation-package/"),
    "iu_reports": Source("torchxrayvision", "1.5.7", "pypi", "torchxrayvision-1.5.7-py3-none-any.whl",
                 "95f6c3475661f3515d4258deb0855bd5d1b1a56e0b65384251d3dd3fa61fac41",
                 "Apache-2.0 (package); IU X-ray reports CC BY-NC-ND 4.0", "https://pypi.org/project/torchxrayvision/"),
    "colin27": Source("mricron-data", "1.2.20211006+dfsg-4", "debian", "mricron-data_1.2.20211006+dfsg-4_all.deb",
                      "d40aa0ed66cf89bf6cafa049ad3884703c9d975c2ee2737525b7196528df9d6f",
                      "BSD-3-Clause (Debian packaging); atlases carry their upstream terms",
                      "https://packages.debian.org/bookworm/mricron-data"),
}
DICOM_FILES = [("RG1_UNCI.dcm", "chest"), ("RG3_UNCI.dcm", "leg"), ("MR2_UNCI.dcm", "shoulder"),
               ("CT_small.dcm", "unspecified"), ("US1_UNCR.dcm", "unspecified")]


def _resize(a: np.ndarray, size: int, mask: bool = False) -> np.ndarray:
    """Pad a 2D array to square (centred) and resize to size x size (area for images, nearest for masks)."""
    h, w = a.shape
    s = max(h, w)
    pad = ((s - h) // 2, s - h - (s - h) // 2), ((s - w) // 2, s - w - (s - w) // 2)
    a = np.pad(a, pad, constant_values=0)
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]
    t = F.interpolate(t, size=(size, size), mode="nearest" if mask else "area")
    return t[0, 0].numpy()


def _tissue_words(t: int) -> str:
    return TISSUES[t].replace("_", " ").replace("ct ", "CT ")


def _slab(z: int, n: int) -> str | None:
    f = z / n
    return next((s for s, (lo, hi) in SLABS.items() if lo <= f < hi or (hi == 1.0 and lo <= f)), None)


def _crop_starts(n: int, stride: int = 16) -> Iterator[tuple[int, str]]:
    """Start indices of CROP-long windows that lie inside one slab, with that slab's split."""
    for split in SLABS:
        zs = [z for z in range(n) if _slab(z, n) == split]
        if len(zs) >= CROP:
            for z0 in range(zs[0], zs[-1] - CROP + 2, stride):
                yield z0, split


class _Builder:
    def __init__(self) -> None:
        self.s2d: dict[str, list[Any]] = {k: [] for k in
                                          ("image", "mask", "region", "lesion", "modality", "patient_id", "series_id",
                                           "slice_index", "split", "split_group", "caption", "caption_label",
                                           "source")}
        self.p2d: dict[str, list[Any]] = {k: [] for k in ("image", "tissue", "modality", "patient_id", "slice_index",
                                                          "split", "split_group", "caption", "caption_label")}
        self.c3d: dict[str, list[Any]] = {k: [] for k in ("image", "mask", "label", "modality", "patient_id",
                                                          "slice_index", "split", "split_group", "caption",
                                                          "caption_label")}

    def add_slice(self, img: np.ndarray, mask: np.ndarray, region: str, lesion: int, modality: str, patient: str,
                  z: int, split: str, captions: tuple[str, str], source: str) -> None:
        """captions: (caption, caption_label), see mini_captions."""
        v = dict(image=img[None].astype(np.float32), mask=mask[None].astype(np.uint8), region=REGIONS.index(region),
                 lesion=lesion, modality=modality, patient_id=patient, series_id=f"{patient}/axial",
                 slice_index=z, split=split, split_group=f"{patient}:{split}", caption=captions[0],
                 caption_label=captions[1], source=source)
        for k, x in v.items():
            self.s2d[k].append(x)

    def add_patch(self, img: np.ndarray, tissue: int, modality: str, patient: str, z: int, split: str,
                  captions: tuple[str, str]) -> None:
        v = dict(image=img[None].astype(np.float32), tissue=tissue, modality=modality, patient_id=patient,
                 slice_index=z, split=split, split_group=f"{patient}:{split}", caption=captions[0],
                 caption_label=captions[1])
        for k, x in v.items():
            self.p2d[k].append(x)

    def patches(self, img: np.ndarray, tissue_map: np.ndarray, modality: str, patient: str, z: int, split: str,
                allowed: set[int], where: tuple[str, str]) -> None:
        """Patches at stride 16; label = majority tissue of the central 8x8 (skip if < 75% agree).
        where: (organ, position of the slice in it) for the caption."""
        for y in range(0, img.shape[0] - PATCH + 1, 16):
            for x in range(0, img.shape[1] - PATCH + 1, 16):
                centre = tissue_map[y + 12:y + 20, x + 12:x + 20].ravel()
                vals, counts = np.unique(centre, return_counts=True)
                t = int(vals[counts.argmax()])
                if t in allowed and counts.max() >= 48:
                    whole = tissue_map[y:y + PATCH, x:x + PATCH]
                    share = {o: float((whole == o).mean()) for o in allowed if o != t}
                    other = max(share, key=lambda o: share[o]) if share else t
                    near = _tissue_words(other) if other != t and share[other] >= 0.2 else ""
                    words = cap.patch(f"{patient}:{z}:{y}:{x}", modality, _tissue_words(t), *where, near)
                    self.add_patch(img[y:y + PATCH, x:x + PATCH], t, modality, patient, z, split, words)

    def add_crop(self, img: np.ndarray, mask: np.ndarray, label: int, modality: str, patient: str, z: int,
                 split: str, captions: tuple[str, str]) -> None:
        v = dict(image=img[None].astype(np.float32), mask=mask[None].astype(np.uint8), label=label,
                 modality=modality, patient_id=patient, slice_index=z, split=split,
                 split_group=f"{patient}:{split}", caption=captions[0], caption_label=captions[1])
        for k, x in v.items():
            self.c3d[k].append(x)


def lits_files(cache: Path | None = None) -> tuple[Path, Path]:
    """(CT, labels) of LiTS case 117 from its verified package (0 background, 1 liver, 2 tumour)."""
    cache = cache or mmfm_home() / "sources"
    whl = fetch(SOURCES["lits"], cache)
    img_p = extract_member(whl, "liver_ct_segmentation_package/data/img_117.mrc", cache / "lits" / "img_117.mrc")
    lab_p = extract_member(whl, "liver_ct_segmentation_package/data/lab_117.mrc", cache / "lits" / "lab_117.mrc")
    return img_p, lab_p


def _lits(b: _Builder, cache: Path) -> dict[str, Any]:
    img_p, lab_p = lits_files(cache)
    ct, _ = read_mrc_array(img_p)
    lab, _ = read_mrc_array(lab_p)
    ct = get_preset(PRESET_BY_MODALITY["CT"])(ct[None])[0]  # (z, y, x) in [0, 1]
    lab = lab.astype(np.uint8)
    n = ct.shape[0]
    zs = [z for z in range(n) if (lab[z] > 0).sum() >= 20] or [0, n - 1]   # the liver's extent, for positions
    for z in range(n):
        split = _slab(z, n)
        if split is None:
            continue
        tum = int((lab[z] == 2).sum())
        pos = cap.third(z, zs[0], zs[-1], cap.LITS_THIRDS)
        b.add_slice(ct[z], lab[z], "abdomen", int(tum >= 20), "CT", "lits-117", z, split,
                    cap.lits_slice(f"lits-117:{z}", pos, tum), "LiTS #117")
        if z % 2 == 0:
            b.patches(ct[z], lab[z], "CT", "lits-117", z, split, {0, 1, 2}, ("liver", pos))
    for z0, split in _crop_starts(n):
        for y0 in range(0, ct.shape[1] - CROP + 1, 32):
            for x0 in range(0, ct.shape[2] - CROP + 1, 32):
                m = lab[z0:z0 + CROP, y0:y0 + CROP, x0:x0 + CROP]
                lesion = int((m == 2).mean() > 0.01)
                pos = cap.third(z0 + CROP / 2, zs[0], zs[-1], cap.LITS_THIRDS)
                b.add_crop(ct[z0:z0 + CROP, y0:y0 + CROP, x0:x0 + CROP], m, lesion, "CT", "lits-117", z0, split,
                           cap.lits_crop(f"lits-117:{z0}:{y0}:{x0}", pos, float((m == 2).mean()),
                                         float((m > 0).mean())))
    return {"files": ["img_117.mrc", "lab_117.mrc"], "shape": list(ct.shape), "classes": {0: "bg", 1: "liver",
                                                                                        2: "tumour"}}


def _brain(b: _Builder, t1: np.ndarray, tissue: np.ndarray, brain: np.ndarray, patient: str, source: str,
           patches: bool) -> None:
    """t1, tissue, brain: RAS volumes (x, y, z); axial slices along z, rows = anterior-posterior. ``patches``
    (tissue masks, patches and crops) is given for the MNI152 template only."""
    t1 = get_preset(PRESET_BY_MODALITY["MR"])(t1[None].astype(np.float32))[0]
    zs = [z for z in range(t1.shape[2]) if brain[:, :, z].sum() > 500]
    lo, hi = zs[0], zs[-1]
    for z in range(lo, hi + 1, 2):
        split = _slab(z - lo, hi - lo + 1)
        if split is None:
            continue
        img = _resize(np.rot90(t1[:, :, z]), SIZE2D)
        msk = _resize(np.rot90(brain[:, :, z]).astype(np.float32), SIZE2D, mask=True)
        pos = cap.third(z, lo, hi, cap.BRAIN_THIRDS)
        b.add_slice(img, msk, "brain", 0, "MR", patient, z, split, cap.brain_slice(f"{patient}:{z}", pos, patches),
                    source)
        if patches:
            tis = _resize(np.rot90(tissue[:, :, z]).astype(np.float32), SIZE2D, mask=True).astype(np.int64)
            b.patches(img, tis, "MR", patient, z, split, {3, 4}, ("brain", pos))
    if patches:  # 3D crops of the downsampled volume (2 mm), tissue mask 3 = GM, 4 = WM
        t2 = t1[::2, ::2, ::2]
        m2 = tissue[::2, ::2, ::2]
        n = t2.shape[2]
        for z0, split in _crop_starts(n):
            for x0 in range(0, t2.shape[0] - CROP + 1, 24):
                for y0 in range(0, t2.shape[1] - CROP + 1, 24):
                    m = m2[x0:x0 + CROP, y0:y0 + CROP, z0:z0 + CROP]
                    if (m > 0).mean() < 0.3:
                        continue
                    crop = np.transpose(t2[x0:x0 + CROP, y0:y0 + CROP, z0:z0 + CROP], (2, 1, 0))
                    main = _tissue_words(3 if (m == 3).sum() >= (m == 4).sum() else 4)
                    pos = cap.third(2 * (z0 + CROP / 2), lo, hi, cap.BRAIN_THIRDS)   # 2 mm grid -> 1 mm slices
                    b.add_crop(crop, np.transpose(m, (2, 1, 0)), 0, "MR", patient, z0, split,
                               cap.brain_crop(f"{patient}:{z0}:{x0}:{y0}", pos, main))


def _colin(b: _Builder, cache: Path) -> dict[str, Any]:
    installed = Path("/usr/share/mricron/templates")
    try:
        deb = fetch(SOURCES["colin27"], cache)
        ch2 = extract_member(deb, "usr/share/mricron/templates/ch2.nii.gz", cache / "colin27" / "ch2.nii.gz")
        bet = extract_member(deb, "usr/share/mricron/templates/ch2bet.nii.gz", cache / "colin27" / "ch2bet.nii.gz")
        how = "apt-get download + dpkg-deb"
    except MMFMError:
        if not (installed / "ch2.nii.gz").exists():
            raise
        ch2, bet, how = installed / "ch2.nii.gz", installed / "ch2bet.nii.gz", "installed Debian package"
    t1 = nib.as_closest_canonical(nib.load(str(ch2))).get_fdata()
    brain = nib.as_closest_canonical(nib.load(str(bet))).get_fdata() > 0
    _brain(b, t1, np.zeros_like(brain, dtype=np.uint8), brain.astype(np.uint8), "colin27", "Colin27 (ch2)", False)
    return {"files": ["ch2.nii.gz", "ch2bet.nii.gz"], "shape": list(t1.shape), "obtained_by": how}


def _mni(b: _Builder) -> dict[str, Any]:
    from nilearn import __version__ as nv
    from nilearn import datasets

    t1 = nib.as_closest_canonical(datasets.load_mni152_template(resolution=1)).get_fdata()
    gm = nib.as_closest_canonical(datasets.load_mni152_gm_template(resolution=1)).get_fdata()
    wm = nib.as_closest_canonical(datasets.load_mni152_wm_template(resolution=1)).get_fdata()
    tissue = np.where((gm > 0.5) & (gm >= wm), 3, np.where(wm > 0.5, 4, 0)).astype(np.uint8)
    brain = ((gm + wm) > 0.5).astype(np.uint8)
    _brain(b, t1, tissue, brain, "mni152", "MNI ICBM152 2009 (nilearn)", True)
    return {"package": "nilearn", "version": nv, "licence": "BSD-3 (nilearn); MNI template permissive notice",
            "shape": list(t1.shape)}


def _singles(b: _Builder) -> dict[str, Any]:
    import pydicom
    import skimage
    import skimage.data
    from pydicom.data import get_testdata_file

    from mmfm.data.io.dicom import read_dicom_file
    used = []
    for name, region in DICOM_FILES:
        path = get_testdata_file(name, download=False)
        if path is None:
            continue
        im = read_dicom_file(str(path))
        arr = im.array.mean(axis=0) if im.array.shape[0] == 3 else im.array[0]
        if arr.ndim == 3:
            arr = arr[..., arr.shape[-1] // 2]
        arr = get_preset(PRESET_BY_MODALITY[im.modality])(arr[None])[0]
        img = _resize(np.ascontiguousarray(arr.T), SIZE2D)  # back to (rows, cols) for display order
        b.add_slice(img, np.zeros_like(img), region, 0, im.modality, im.meta["ids"]["patient_id"] or name, 0,
                    "train", (f"{im.modality} image of the {region}.",) * 2, f"pydicom test file {name}")
        used.append(name)
    for fn, region, mod, text in [(skimage.data.retina, "eye", "fundus", "Colour fundus photograph of the retina."),
                                 (skimage.data.immunohistochemistry, "tissue_slide", "pathology",
                                  "Immunohistochemistry-stained tissue section.")]:
        rgb = fn().astype(np.float32) / 255.0
        img = _resize(rgb.mean(axis=-1), SIZE2D)
        b.add_slice(img, np.zeros_like(img), region, 0, mod, f"skimage-{fn.__name__}", 0, "train", (text, text),
                    f"scikit-image {fn.__name__}")
        used.append(fn.__name__)
    return {"package": "pydicom + pydicom-data, scikit-image",
            "version": f"{pydicom.__version__}, {skimage.__version__}",  # type: ignore[attr-defined]
            "licence": "MIT (pydicom-data), BSD-3 (skimage)",
            "files": used}


def _reports(cache: Path, out: Path) -> dict[str, Any]:
    whl = fetch(SOURCES["iu_reports"], cache)
    tgz = extract_member(whl, "torchxrayvision/data/NLMCXR_reports.tgz", cache / "iu" / "NLMCXR_reports.tgz")
    rows = []
    with tarfile.open(tgz) as tf:
        for m in sorted(tf.getmembers(), key=lambda m: m.name):
            if m.name.endswith(".xml"):
                r = parse_iu_xml(tf.extractfile(m).read(), m.name)  # type: ignore[union-attr]
                rep = r["report"]
                rows.append({"uid": r["uid"], "indication": rep.indication, "findings": rep.findings,
                             "impression": rep.impression, "comparison": rep.sections.get("comparison", ""),
                             "mesh": r["mesh"], "n_images": len(r["images"])})
    splits = group_split([r["uid"] for r in rows], {"train": 0.8, "val": 0.1, "test": 0.1}, seed=0)
    with open(out, "w") as f:
        for r, s in zip(rows, splits):
            f.write(json.dumps({**r, "split": s}) + "\n")
    return {"n": len(rows), "splits": dict(Counter(splits)),
            "with_findings": sum(bool(r["findings"]) for r in rows),
            "with_impression": sum(bool(r["impression"]) for r in rows)}


def _save(path: Path, cols: dict[str, list[Any]]) -> None:
    arrays: dict[str, Any] = {k: np.stack(v) if k in ("image", "mask") else np.asarray(v) for k, v in cols.items()}
    np.savez_compressed(path, **arrays)


def build_mini(root: Path | None = None, force: bool = False, progress: bool = True) -> Path:
    """Build the corpus into ``root`` (default ``$MMFM_HOME/data/mini``) atomically; return its path."""
    home = mmfm_home()
    root = Path(root) if root else home / "data" / "mini"
    force = force or (is_mini_folder(root) and not is_current_mini(root))      # an older build is replaced, not mixed
    tmp = start_build(root, is_mini_folder, "a mini corpus", "mini", force)   # never over a foreign folder
    if tmp is None:
        return root
    cache = home / "sources"
    t0 = time.time()
    b = _Builder()
    sources: dict[str, Any] = {}
    missing: dict[str, str] = {}
    steps = [("LiTS CT (liver-ct-segmentation-package)", "lits", lambda: _lits(b, cache)),
             ("Colin27 MRI (mricron-data)", "colin27", lambda: _colin(b, cache)),
             ("MNI152 template (nilearn)", "mni152", lambda: _mni(b)),
             ("DICOM test files, fundus, IHC", "single_images", lambda: _singles(b)),
             ("IU X-ray reports (torchxrayvision)", "iu_reports", lambda: _reports(cache, tmp / "reports.jsonl"))]
    for title, key, step in steps:
        if progress:
            print(f"[mini] {title} ...", flush=True)
        try:
            sources[key] = step()
            if key in SOURCES:
                s = SOURCES[key]
                sources[key].update(package=s.name, version=s.version, registry=s.registry, sha256=s.sha256,
                                    licence=s.licence, url=s.url)
        except MMFMError as e:
            missing[key] = e.problem
            print(f"[mini] skipped {title}: {e.problem}", flush=True)
    if not b.s2d["image"]:
        shutil.rmtree(tmp, ignore_errors=True)  # our own partial folder
        raise MMFMError("no image source could be fetched; mini was not built", "see the messages above")
    _save(tmp / "slices2d.npz", b.s2d)
    _save(tmp / "patches2d.npz", b.p2d)
    _save(tmp / "crops3d.npz", b.c3d)
    card = {
        "name": "mini", "version": VERSION, "built_seconds": round(time.time() - t0, 1),
        "sources": sources, "missing_sources": missing,
        "presets": {m: get_preset(n).to_dict() for m, n in PRESET_BY_MODALITY.items()},
        "sets": {"slices2d": {"shape": [1, SIZE2D, SIZE2D], "labels": {"region": REGIONS, "lesion": ["no", "yes"]},
                              "counts": split_counts(b.s2d, "region", REGIONS)},
                 "patches2d": {"shape": [1, PATCH, PATCH], "labels": {"tissue": TISSUES},
                               "counts": split_counts(b.p2d, "tissue", TISSUES)},
                 "crops3d": {"shape": [1, CROP, CROP, CROP], "labels": {"label": ["no lesion", "lesion"]},
                             "counts": split_counts(b.c3d, "label", [])},
                 "reports": sources.get("iu_reports", {})},
        "derivation": [
            "Intensities: CT through preset ct_abdomen (W400/L40 HU -> [0,1]); MRI through mri_percentile; "
            "radiographs through xray (MONOCHROME1 inverted); ultrasound min-max; RGB images divided by 255 "
            "and converted to grey. The exact presets are in card.json under 'presets'.",
            "slices2d: every LiTS axial slice (128x128; mask 0 bg, 1 liver, 2 tumour; lesion = >= 20 tumour "
            "pixels); every 2nd axial slice through the brain of Colin27 (mask = ch2bet brain) and MNI152 "
            "(mask = brain), padded to square and resized to 128x128; single DICOM/photo images in train only.",
            "patches2d: 32x32 patches at stride 16 from every 2nd LiTS slice and every MNI152 slice; the label "
            "is the majority tissue of the central 8x8 pixels (kept only if >= 75% agree).",
            "crops3d: 32^3 crops of the LiTS CT (stride 16 along z, 32 in-plane; label = tumour > 1% of voxels) "
            "and of MNI152 at 2 mm (label 0; mask 3 = grey, 4 = white matter).",
            "Splits: each volume is one patient; a single volume is split into slabs along the slice axis "
            f"({SLABS}), leaving a gap of ~4 slices between splits. IU reports are split 80/10/10 by report.",
            "Captions are GENERATED, not clinical reports: 'caption' is written from the masks, the source and "
            "the position (modality, organ/region, tissue, position as thirds of the organ along the slice axis, "
            "tumour size in pixels and small/medium/large bins from the tumour mask; LiTS has no voxel size, so "
            "no mm), in one of three wordings chosen by a fixed hash (mmfm.data.sources.mini_captions); "
            "'caption_label' is the label alone in words (mini v1's caption), for label-only baselines. Splits "
            "are slabs along the same slice axis, so the position words are correlated with the split. The IU "
            "X-ray reports are real but come without their images.",
            "Privacy: DICOM patient identifiers appear only as keyed pseudonyms (HMAC-SHA256 with this installation's "
            "key, mmfm.data.pseudonym).",
        ],
    }
    (tmp / "card.json").write_text(json.dumps(card, indent=2))
    (tmp / "card.md").write_text(card_markdown(card))
    root.parent.mkdir(parents=True, exist_ok=True)
    if root.exists():  # an empty folder, or a mini corpus built by mmfm (checked above): swap it out
        old = root.with_name(root.name + f".old-{os.getpid()}")
        os.replace(root, old)
        os.replace(tmp, root)
        if is_mini_folder(old):
            shutil.rmtree(old)
        else:
            old.rmdir()
    else:
        os.replace(tmp, root)
    return root


def is_current_mini(root: Path) -> bool:
    """True for a mini corpus built by this version of the build (``VERSION`` in its card)."""
    try:
        return json.loads((root / "card.json").read_text()).get("version") == VERSION
    except (OSError, ValueError, AttributeError):
        return False


def is_mini_folder(root: Path) -> bool:
    """True only for a folder this module built: its card.json says so, and it holds nothing else."""
    try:
        card = json.loads((root / "card.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(card, dict) or card.get("name") != "mini":
        return False
    own = {"card.json", "card.md", "slices2d.npz", "patches2d.npz", "crops3d.npz", "reports.jsonl"}
    return all(p.name in own for p in root.iterdir())
