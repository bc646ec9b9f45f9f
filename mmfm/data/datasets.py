"""Torch-facing datasets: sample dicts -> ``{"image", "label", "mask"}`` tensors for the engine.

* :class:`ArrayDataset`  arrays already preprocessed on one grid (the ``mini`` corpus, MedMNIST).
* :class:`PairDataset`   image-text pairs (captions or reports) for vision-language objectives and tasks.
* :class:`ReportDataset` reports alone, by section, for the report-side objectives.
* :class:`SampleDataset` any catalog :class:`~mmfm.data.catalog.loaders.SampleList`: applies the modality preset
  and resizes to a fixed grid with MONAI (image: area/trilinear, mask: nearest) so batches can be stacked.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import Resize

from mmfm.data.presets import Preset, default_preset
from mmfm.data.sample import Image, early_fuse
from mmfm.errors import InputFileError, SampleError


class ArrayDataset(torch.utils.data.Dataset):
    """image (N, C, *s) float, optional label (N,), optional mask (N, 1, *s)."""

    def __init__(self, image: np.ndarray, label: np.ndarray | None = None, mask: np.ndarray | None = None,
                 extras: dict[str, np.ndarray] | None = None) -> None:
        self.image = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        self.extras = {k: torch.as_tensor(v) for k, v in (extras or {}).items()}  # e.g. patient, position
        self.label = None if label is None else torch.from_numpy(np.asarray(label, dtype=np.int64))
        self.mask = None if mask is None else torch.from_numpy(np.asarray(mask, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.image)

    @property
    def labels(self) -> np.ndarray | None:
        return None if self.label is None else self.label.numpy()

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        out = {"image": self.image[i]}
        if self.label is not None:
            out["label"] = self.label[i]
        if self.mask is not None:
            out["mask"] = self.mask[i]
        for k, v in self.extras.items():
            out[k] = v[i]
        return out

    def subset(self, idx: Sequence[int]) -> ArrayDataset:
        sel = np.asarray(idx, dtype=np.int64)
        return ArrayDataset(self.image[sel].numpy(), None if self.label is None else self.label[sel].numpy(),
                            None if self.mask is None else self.mask[sel].numpy(),
                            {k: v[sel].numpy() for k, v in self.extras.items()})


VARIABLE_LENGTH = ("boxes", "box_labels")   # per-item tensors of different lengths: batched as lists


def collate_samples(items: list[Any]) -> Any:
    """torch's ``default_collate``, except that box annotations (a different number per image) stay lists."""
    from torch.utils.data import default_collate

    if items and isinstance(items[0], dict) and any(k in items[0] for k in VARIABLE_LENGTH):
        out = default_collate([{k: v for k, v in it.items() if k not in VARIABLE_LENGTH} for it in items])
        out.update({k: [it[k] for it in items] for k in VARIABLE_LENGTH if k in items[0]})
        return out
    return default_collate(items)


class SampleDataset(torch.utils.data.Dataset):
    """Catalog samples -> tensors on a fixed grid: each modality through its own preset, then stacked as
    channels (early fusion of ``modalities``, review Fig. 3).

    ``modalities`` empty: a sample's only image whatever its modality (a folder mixing CT DICOMs and PNGs), or
    the modalities the first sample holds, in sorted order, when samples hold several.
    ``presets``: a preset per modality (default: each modality's documented default, ``CT`` -> ``ct_abdomen``).
    ``channels``: the channel count every image is brought to (grey -> repeated, colour -> luminance); 0 keeps
    what the files hold (then they must agree). ``spacing``: resample to this voxel size (mm) before resizing.
    ``text``: add the report (``text``); ``extras``: add ``patient`` (int) and ``position`` (slice position in its
    volume) for the objectives that pair images of one patient (MICLe, PCL).
    ``cache``: a folder for preprocessed items (:class:`~mmfm.data.cache.PreprocessedCache`), so a second epoch
    does not decode DICOM or NIfTI again. ``skip_unreadable``: a file that fails to decode during training is
    skipped (warned once, listed in ``self.unreadable``) and the next sample is used, instead of stopping the run.
    """

    reads_files = True  # items are decoded from the user's files: worth DataLoader workers

    def __init__(self, samples: Sequence[dict[str, Any]], modalities: Sequence[str], size: Sequence[int],
                 label_key: str | None = "label", presets: dict[str, Preset] | None = None, channels: int = 0,
                 spacing: Sequence[float] = (), text: bool = False, extras: bool = False,
                 cache: str | None = None, skip_unreadable: bool = False, patch: Sequence[int] = (),
                 random_patches: bool = False, patches_per_volume: int = 1, missing: str = "error",
                 drop: Sequence[str] = ()) -> None:
        if len(samples) == 0:
            raise SampleError("the dataset split is empty", "check data.root and the split options")
        self.samples, self.label_key, self.channels = samples, label_key, int(channels)
        self.modalities = list(modalities)
        if not self.modalities:   # the loader's list of modalities (multimodal_csv), else the first sample's
            self.modalities = list(getattr(samples, "scan", {}).get("modalities", []))
        if not self.modalities:   # several modalities per sample: fuse what the first sample holds, in order
            try:
                held = sorted(samples[0]["images"])
            except InputFileError:
                held = []
            if len(held) > 1:
                self.modalities = held
        if missing not in ("error", "zero"):
            raise SampleError(f"data.missing_modalities='{missing}' is not a policy", "use error or zero")
        unknown = sorted(set(drop) - set(self.modalities))
        if unknown:
            raise SampleError(f"data.drop_modalities names {unknown}, which are not among the fused modalities "
                              f"{self.modalities}", "name modalities of data.modalities")
        # missing="zero": a sample without some modality gets zeros in its channels and item["present"] says which
        # modalities are there (late fusion ignores absent ones); drop: modalities removed from every sample
        self.missing, self.drop = missing, set(drop)
        self.user_presets = dict(presets or {})
        self.size, self.spacing, self.text = [int(v) for v in size], [float(v) for v in spacing], text
        self.resize_img = Resize(tuple(self.size), mode="area" if len(self.size) == 2 else "trilinear")
        self.resize_mask = Resize(tuple(self.size), mode="nearest")
        self.skip_unreadable = skip_unreadable
        self.unreadable: dict[int, str] = {}
        # patch mode (3D done properly): whole volumes at data.spacing, padded to at least the patch; training
        # items are random patches (half centred on the foreground when there are masks), evaluation items whole
        # volumes for sliding-window inference
        self.patch, self.random_patches = [int(v) for v in patch], random_patches
        self.repeat = max(1, int(patches_per_volume)) if (self.patch and random_patches) else 1
        self.extras: dict[str, list[Any]] | None = None
        if extras:
            recs = getattr(samples, "records", None) or [{} for _ in range(len(samples))]
            groups = [str(r.get("patient") or r.get("case") or i) for i, r in enumerate(recs)]
            index = {g: n for n, g in enumerate(dict.fromkeys(groups))}
            self.extras = {"patient": [index[g] for g in groups],
                           "position": [float(r.get("position") or 0.0) for r in recs]}
        self.cache = None
        if cache:
            from mmfm.data.cache import PreprocessedCache

            # every option that changes an item: a change of any gives another cache folder
            self.cache = PreprocessedCache(cache, {**self.preprocessing(), "missing": self.missing,
                                                   "drop": sorted(self.drop)})

    # -- what a model trained on these items expects ---------------------------------------------------------
    @property
    def presets(self) -> dict[str, Preset]:
        """The preset of each modality (of ``modalities``, else of the first sample's images)."""
        return {m: self.preset_for(m) for m in (self.modalities or sorted(self.samples[0]["images"]))}

    def preset_for(self, modality: str) -> Preset:
        return self.user_presets.get(modality) or default_preset(modality)

    def preprocessing(self) -> dict[str, Any]:
        return {"modalities": self.modalities, "presets": {m: p.to_dict() for m, p in self.user_presets.items()},
                "size": self.size if not self.patch else "whole", "spacing": self.spacing,
                "channels": self.channels, "patch": self.patch}

    # -- labels and texts without decoding images --------------------------------------------------------------
    @property
    def labels(self) -> np.ndarray | None:
        lab = getattr(self.samples, "labels", None)
        return None if lab is None or not self.label_key else np.tile(np.asarray(lab, dtype=np.int64), self.repeat)

    @property
    def label(self) -> torch.Tensor | None:
        lab = self.labels
        return None if lab is None else torch.from_numpy(lab)

    @property
    def texts(self) -> list[str]:
        """The report or caption of every sample, from the loader's records (layouts with reports keep them
        there; a layout without, such as a folder of images, has none: no image is decoded to find that out)."""
        recs = getattr(self.samples, "records", None)
        if recs is not None:
            return [r["report"].text if r.get("report") is not None else "" for r in recs] * self.repeat
        return [self._report_text(self.samples[i]) for i in range(len(self.samples))] * self.repeat

    def subset(self, idx: Sequence[int]) -> SampleDataset:
        out = copy.copy(self)
        out.samples = self.samples.subset(idx) if hasattr(self.samples, "subset") else [self.samples[i] for i in idx]
        if self.extras is not None:
            out.extras = {k: [v[i] for i in idx] for k, v in self.extras.items()}
        return out

    def __len__(self) -> int:
        return len(self.samples) * self.repeat   # several random patches of each volume per pass

    # -- items -----------------------------------------------------------------------------------------------
    def __getitem__(self, i: int) -> dict[str, Any]:
        i = i % len(self.samples)
        for attempt in range(len(self.samples)):
            j = (i + attempt) % len(self.samples)
            try:
                out = self._item(j)
                break
            except InputFileError as e:
                if not self.skip_unreadable:
                    raise
                if j not in self.unreadable:
                    self.unreadable[j] = e.what
                    warnings.warn(f"skipped an unreadable sample ({e.what}); training goes on", stacklevel=2)
        else:
            raise SampleError("no sample of this dataset can be read", "check the files with `mmfm data inspect`")
        if self.extras is not None:   # of the sample served (j: the next readable one when i was skipped)
            out["patient"] = torch.as_tensor(self.extras["patient"][j])
            out["position"] = torch.as_tensor(self.extras["position"][j], dtype=torch.float32)
        return out

    def _item(self, i: int) -> dict[str, Any]:
        key = self._cache_key(i)
        hit = self.cache.get(key, self._cached_ok) if self.cache is not None and key is not None else None
        s = None
        if hit is not None:
            arrays = hit
        else:
            s = self.samples[i]
            arrays = {"image": self._image(s)}
            if len(self.modalities) > 1:
                held = self._select(s)
                arrays["present"] = np.asarray([m in held for m in self.modalities], np.float32)
            if s.get("mask") is not None:
                arrays["mask"] = self._mask(s)
            if s.get("boxes") is not None:
                arrays["boxes"], arrays["box_labels"] = self._boxes(s)
            if self.cache is not None and key is not None:
                self.cache.put(key, arrays)
        if self.patch and self.random_patches:
            arrays = self._crop(arrays)
        return self._finish(i, arrays, s)

    def _crop(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A random ``patch`` of a (padded) volume: centred on foreground or background with equal odds when a
        mask is there (MONAI ``RandCropByPosNegLabel``), anywhere otherwise (``RandSpatialCrop``)."""
        from monai.transforms import RandCropByPosNegLabel, RandSpatialCrop

        seed = int(torch.randint(0, 2**31 - 1, ()).item())   # torch seeds each worker differently; MONAI does not
        img = arrays["image"]
        if "mask" in arrays and arrays["mask"].any():
            t = RandCropByPosNegLabel(self.patch, pos=1.0, neg=1.0, num_samples=1, allow_smaller=False)
            t.set_random_state(seed)
            img_c = t(img, label=arrays["mask"], randomize=True)[0]
            # the same crop for the mask: the centre chosen for the image is reused
            mask_c = t(arrays["mask"], label=arrays["mask"], randomize=False)[0]
            return {"image": np.asarray(img_c), "mask": np.asarray(mask_c)}
        t2 = RandSpatialCrop(self.patch, random_size=False)
        t2.set_random_state(seed)
        out = {"image": np.asarray(t2(img))}
        if "mask" in arrays:
            out["mask"] = np.asarray(t2(arrays["mask"], randomize=False))
        return out

    def _cache_key(self, i: int) -> str | None:
        """The item's identity: its record (which slice of which series, the loader's options it carries such as
        the modality) and the resolved path, size and mtime of every file it reads (the record's image, mask and
        label-map paths, a header's detached data, a series folder's files). None: not cacheable."""
        from mmfm.data.cache import file_identity

        recs = getattr(self.samples, "records", None)
        if recs is None:
            return None
        r = recs[i]
        paths = _paths_in(r)
        for k in ("path", "image"):
            if isinstance(r.get(k), str):
                paths.append(Path(r[k]))
        files = file_identity(paths) if paths else None
        if not files:
            return None
        record = {k: v for k, v in r.items() if k != "report"}   # the text is not the image's
        return json.dumps({"files": files, "record": record}, sort_keys=True, default=str)

    def _cached_ok(self, arrays: dict[str, np.ndarray]) -> str | None:
        """Why a cached item is not what this dataset makes (wrong arrays, shapes or dtypes), or None."""
        img = arrays.get("image")
        if img is None or img.dtype != np.float32 or img.ndim != len(self.patch or self.size) + 1:
            return "image"
        spatial = tuple(img.shape[1:])
        if (self.patch and any(s < p for s, p in zip(spatial, self.patch))) or \
                (not self.patch and spatial != tuple(self.size)):
            return "image shape"
        if self.channels and img.shape[0] != self.channels:
            return "channels"
        if len(self.modalities) > 1 and arrays.get("present", np.zeros(0)).shape != (len(self.modalities),):
            return "present"
        mask = arrays.get("mask")
        if mask is not None and (mask.dtype != np.int64 or tuple(mask.shape[1:]) != spatial):
            return "mask"
        if "boxes" in arrays and len(arrays["boxes"]) != len(arrays.get("box_labels", ())):
            return "boxes"
        return None

    def _finish(self, i: int, arrays: dict[str, np.ndarray], s: dict[str, Any] | None) -> dict[str, Any]:
        out: dict[str, Any] = {"image": torch.as_tensor(np.asarray(arrays["image"]), dtype=torch.float32)}
        if "present" in arrays:
            out["present"] = torch.as_tensor(np.asarray(arrays["present"]), dtype=torch.float32)
        if "mask" in arrays:
            out["mask"] = torch.as_tensor(np.asarray(arrays["mask"]), dtype=torch.int64)
        if "boxes" in arrays:    # variable length: batched as lists by collate_samples
            out["boxes"] = torch.as_tensor(np.asarray(arrays["boxes"]), dtype=torch.float32)
            out["box_labels"] = torch.as_tensor(np.asarray(arrays["box_labels"]), dtype=torch.int64)
        if self.label_key:
            lab = getattr(self.samples, "labels", None)      # known without reading (i indexes the samples)
            if lab is not None:
                out["label"] = torch.as_tensor(int(lab[i]))
            else:
                s = s if s is not None else self.samples[i]
                if self.label_key not in s["labels"]:
                    raise SampleError(f"sample '{s['ids'].sample_id}' has no label '{self.label_key}' "
                                      f"(labels: {sorted(s['labels'])})", "set data.label to one of its labels")
                out["label"] = torch.as_tensor(int(s["labels"][self.label_key]))
        if self.text:
            recs = getattr(self.samples, "records", None)
            if recs and "report" in recs[i]:
                out["text"] = recs[i]["report"].text
            else:
                out["text"] = self._report_text(s if s is not None else self.samples[i])
        return out

    @staticmethod
    def _report_text(s: dict[str, Any]) -> str:
        rep = s.get("report")
        return rep.text if rep is not None else ""

    def holds_any(self, i: int) -> bool:
        """Whether sample ``i`` keeps at least one modality after ``drop`` (from the records where they list the
        sample's files, else by reading it)."""
        recs = getattr(self.samples, "records", None)
        held = set(recs[i]["paths"]) if recs is not None and "paths" in recs[i] else set(self.samples[i]["images"])
        return bool(held - self.drop)

    def _select(self, s: dict[str, Any]) -> dict[str, Image]:
        if self.modalities:
            held = {m: s["images"][m] for m in self.modalities if m in s["images"] and m not in self.drop}
            return held if (held or self.drop) else s["images"]
        return s["images"]

    def _image(self, s: dict[str, Any]) -> np.ndarray:
        images = self._select(s)
        order = self.modalities or sorted(images)
        if not self.modalities and len(images) == 1:
            order = list(images)
        prepped = {m: Image(self.preset_for(m)(self._adapt(im.array)), m, im.affine, im.meta)
                   for m, im in images.items()}
        absent = [m for m in order if m not in prepped]
        if absent and (self.missing == "zero" or set(absent) <= self.drop):
            if not prepped:
                raise SampleError(f"sample '{s['ids'].sample_id}' has none of the modalities {order} left",
                                  "keep at least one modality (data.drop_modalities)")
            ref = next(iter(prepped.values()))
            for m in absent:   # zeros where the modality is missing; item["present"] records it
                prepped[m] = Image(np.zeros_like(ref.array), m, ref.affine, ref.meta)
        image = early_fuse(prepped, order)
        if image.ndim - 1 != len(self.patch or self.size):
            what = "patch" if self.patch else "size"
            raise SampleError(f"sample '{s['ids'].sample_id}' is {image.ndim - 1}D but data.{what} is "
                              f"{len(self.patch or self.size)}D", f"set data.{what} to match the images (3 numbers "
                                                                  "for volumes), or let mmfm slice volumes for a "
                                                                  "2D encoder")
        if self.spacing:
            image = self._resample(image, next(iter(images.values())).affine, "bilinear")
        if self.patch:
            return self._pad(image)
        return np.asarray(self.resize_img(image), dtype=np.float32)

    def _boxes(self, s: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """Box annotations (N, 2 * dims) in the original pixels -> on the resized grid (scaled per axis)."""
        if self.patch or self.spacing:
            raise SampleError("box annotations are scaled with data.size only",
                              "leave data.patch and data.spacing empty for a dataset with boxes")
        original = next(iter(self._select(s).values())).spatial_shape
        scale = np.asarray(self.size, np.float32) / np.asarray(original, np.float32)
        boxes = np.asarray(s["boxes"], np.float32).reshape(-1, 2 * len(self.size)) * np.tile(scale, 2)
        return boxes, np.asarray(s["box_labels"], np.int64)

    def _pad(self, arr: np.ndarray) -> np.ndarray:
        from monai.transforms import SpatialPad

        return np.asarray(SpatialPad(self.patch)(arr), dtype=arr.dtype)

    def _mask(self, s: dict[str, Any]) -> np.ndarray:
        mask = s["mask"]
        if self.spacing:
            mask = self._resample(mask, next(iter(self._select(s).values())).affine, "nearest")
        if self.patch:
            return self._pad(np.asarray(mask)).astype(np.int64)
        return np.asarray(self.resize_mask(mask)).astype(np.int64)

    def _adapt(self, arr: np.ndarray) -> np.ndarray:
        """Bring an image to ``channels`` (grey repeated; RGB -> ITU-R 601 luminance)."""
        c = arr.shape[0]
        if not self.channels or c == self.channels:
            return arr
        if c == 1:
            return np.repeat(arr, self.channels, axis=0)
        if c == 3 and self.channels == 1:
            w = np.asarray([0.299, 0.587, 0.114], np.float32).reshape((3,) + (1,) * (arr.ndim - 1))
            return (arr * w).sum(0, keepdims=True)
        raise SampleError(f"an image has {c} channels, which cannot be brought to data.channels={self.channels}",
                          "set data.channels to 1 or 3, or to 0 to keep the channels the files hold")

    def _resample(self, arr: np.ndarray, affine: np.ndarray, mode: str) -> np.ndarray:
        from monai.data import MetaTensor
        from monai.transforms import Spacing

        nd = arr.ndim - 1
        if len(self.spacing) != nd:
            raise SampleError(f"data.spacing has {len(self.spacing)} values for {nd}D images",
                              f"give {nd} voxel sizes in mm")
        aff = np.eye(nd + 1)
        aff[:nd, :nd], aff[:nd, nd] = affine[:nd, :nd], affine[:nd, 3]
        out = Spacing(pixdim=self.spacing, mode=mode)(MetaTensor(torch.as_tensor(arr, dtype=torch.float32),
                                                                  affine=torch.as_tensor(aff)))
        return np.asarray(out.detach().cpu().numpy() if hasattr(out, "detach") else out, dtype=np.float32)


class PairDataset(ArrayDataset):
    """Image-text pairs: ``{"image", "text", "label"?, ...}``; ``texts`` holds one string per image."""

    def __init__(self, image: np.ndarray, texts: Sequence[str], label: np.ndarray | None = None,
                 extras: dict[str, np.ndarray] | None = None) -> None:
        if len(texts) != len(image):
            raise SampleError(f"{len(image)} images but {len(texts)} texts: image-text pairs must match one to one",
                              "give every image exactly one report or caption (use '' where there is none)")
        super().__init__(image, label, None, extras)
        self.texts = [str(t) for t in texts]

    def __getitem__(self, i: int) -> dict[str, Any]:
        out: dict[str, Any] = super().__getitem__(i)
        out["text"] = self.texts[i]
        return out

    def subset(self, idx: Sequence[int]) -> PairDataset:
        sel = np.asarray(idx, dtype=np.int64)
        return PairDataset(self.image[sel].numpy(), [self.texts[i] for i in sel],
                           None if self.label is None else self.label[sel].numpy(),
                           {k: v[sel].numpy() for k, v in self.extras.items()})


def _paths_in(value: Any) -> list[Path]:
    """Every ``Path`` in a record (recursively through dicts and lists)."""
    if isinstance(value, Path):
        return [value]
    if isinstance(value, dict):
        return [p for v in value.values() for p in _paths_in(v)]
    if isinstance(value, (list, tuple)):
        return [p for v in value for p in _paths_in(v)]
    return []


class ReportDataset(torch.utils.data.Dataset):
    """Reports as sections: ``{"text", "findings", "impression"}`` strings (``text`` = findings + impression)."""

    def __init__(self, rows: Sequence[dict[str, Any]]) -> None:
        self.rows = [{"findings": str(r.get("findings") or ""), "impression": str(r.get("impression") or "")}
                     for r in rows]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, str]:
        r = self.rows[i]
        return {**r, "text": " ".join(t for t in (r["findings"], r["impression"]) if t)}
