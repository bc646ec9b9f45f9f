"""`mmfm predict RUN INPUT... --out DIR`: apply a trained supervised run (`mmfm train`) to new images.

* segmentation: the image goes through the run's preprocessing (its intensity preset for the image's modality,
  resampling to ``data.spacing``), the model runs by MONAI sliding-window inference over windows of
  ``data.patch`` (or on the image resized to the training size), and the class probabilities are brought back
  onto the input's own grid (inverse resampling, MONAI ``SpatialResample``) before the argmax: the label map is a
  NIfTI with the input's shape and affine. A 2D run on a volume segments every slice along the third axis.
* classification: class probabilities (softmax of the logits divided by the run's calibrated temperature when it
  has ``calibration.json``), one row per input in ``predictions.csv`` and ``predictions.json``.
* detection: boxes in the input's voxel coordinates (i, j[, k], min then max corner, voxel edges: voxel n spans
  [n, n+1), so a box [2, 5) covers voxels 2, 3 and 4, as the training boxes do) and in world millimetres (RAS, the
  two corners mapped by the affine, which maps voxel centres: corner e lies at index e - 0.5), each labelled by
  its class (the mask value or box category of ``task.classes``), in ``detections.csv`` and ``detections.json``.
  A 2D run on a volume detects on every slice along the third axis: each box spans its slice k as [k, k+1).

Every output folder holds ``predict.json`` (written by mmfm predict: the run, its checkpoint's SHA-256, the
preprocessing, one entry per input). Inputs are named in outputs by their file stem (the user's own names, in the
user's own folder); nothing is written beside the inputs. Python: :class:`TrainedModel` (``mmfm.load_trained``).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmfm.data.io.writers import write_image
from mmfm.errors import ConfigError, InputFileError
from mmfm.workflows.outputs import Staged, check_ours, check_writable

log = logging.getLogger(__name__)

COMMAND = "mmfm predict"
PREDICTABLE = ("segmentation", "classification", "detection")


@dataclass
class Preprocessing:
    """What the run did to an image before the model saw it (from its checkpoint and config.yaml)."""

    dims: int                               # spatial dims the model takes
    channels: int                           # input channels the model takes
    size: list[int]                         # the training grid (images resized to it) ...
    patch: list[int] = field(default_factory=list)    # ... or sliding windows of this size over whole volumes
    spacing: list[float] = field(default_factory=list)  # resampled to this voxel size (mm) first
    presets: dict[str, Any] = field(default_factory=dict)   # modality -> preset dict or name
    modality: str | None = None             # the modality the run was trained on, when it names one

    def preset(self, modality: str, given: str | None = None) -> Any:
        """The intensity preset of ``modality``: the one given, the run's, else the modality's default (as
        :class:`mmfm.data.datasets.SampleDataset` chose it in training)."""
        from mmfm.data.presets import choose_preset

        return choose_preset(modality, given, self.presets)[0]

    def to_dict(self) -> dict[str, Any]:
        return {"dims": self.dims, "channels": self.channels, "size": self.size, "patch": self.patch,
                "spacing": self.spacing, "modality": self.modality}


def adapt_channels(arr: np.ndarray, channels: int) -> np.ndarray:
    """(C, *s) -> (channels, *s) as training did (:meth:`SampleDataset._adapt`: grey repeated, RGB -> ITU-R 601
    luminance); any other mismatch is the user's input error."""
    c = arr.shape[0]
    if c == channels:
        return arr
    if c == 1:
        return np.repeat(arr, channels, axis=0)
    if c == 3 and channels == 1:
        w = np.asarray([0.299, 0.587, 0.114], np.float32).reshape((3,) + (1,) * (arr.ndim - 1))
        return (arr * w).sum(0, keepdims=True)
    raise ConfigError(f"the model takes {channels} channel(s), the image has {c}",
                      "give an image with as many channels as the run was trained on")


class TrainedModel:
    """A trained supervised run, ready to apply: ``TrainedModel(run).predict(image)``.

    ``image``: a path (anything `mmfm data inspect` reads), an :class:`mmfm.data.sample.Image`, or a numpy array
    ``(C, *spatial)`` / ``(*spatial)`` with ``affine=`` (4x4, index -> RAS mm; identity when omitted).
    Returns a dict: ``{"mask": (*spatial) uint8 on the input's grid, "affine", "volumes": {class: voxels}}`` for
    segmentation, ``{"probabilities": {class: p}, "predicted": class}`` for classification, ``{"boxes": [...]}``
    (voxel and world corners, label, score) for detection.
    """

    def __init__(self, run: str | Path) -> None:
        from mmfm.engine.checkpoint import read_state
        from mmfm.workflows.config import load_config
        from mmfm.workflows.supervised import load_trained

        self.run = Path(run)
        ckpt = self.run / "checkpoints" / "last"
        if not self.run.is_dir():
            raise ConfigError(f"{run}: not a folder", "give the out= folder of an `mmfm train` run")
        if not ckpt.is_dir() or not (self.run / "config.yaml").is_file():
            raise ConfigError(f"{run}: not a finished training run (no checkpoints/last or config.yaml)",
                              "give the out= folder of an `mmfm train` run")
        info = read_state(ckpt).get("run_info") or {}
        task = info.get("task")
        if task not in PREDICTABLE:
            raise ConfigError(f"{run}: a run of '{task or 'pretraining'}', which mmfm predict does not apply",
                              f"give a supervised run of {', '.join(PREDICTABLE)}; `mmfm segment` applies promptable "
                              "runs, `mmfm evaluate` pretrained encoders")
        self.model, state = load_trained(self.run)
        self.task, self.info = task, state["run_info"]
        data = load_config(self.run / "config.yaml").data
        contract = self.info.get("preprocessing") or {}
        shape = self.info["input"]
        modality = (data.options or {}).get("modality") or (data.modalities[0] if len(data.modalities) == 1 else None)
        self.prep = Preprocessing(int(shape["spatial_dims"]), int(shape["in_channels"]),
                                  [int(v) for v in shape["image_size"]], [int(v) for v in data.patch],
                                  [float(v) for v in data.spacing], dict(contract.get("presets") or {}), modality)
        names = list(self.info.get("class_names") or [])
        k = int(self.info.get("num_classes") or len(names) or 0)
        self.class_names = names if len(names) == k else [str(c) for c in range(k)]
        self.temperature = float(getattr(self.model, "temperature", 1.0))

    # -- inputs ---------------------------------------------------------------------------------------------------
    def read(self, image: Any, affine: Any = None, modality: str | None = None) -> Any:
        """An :class:`Image` from a path, an Image or an array (+ affine); ``modality``: for formats that do not
        record it (default: the run's own, when it names one)."""
        from mmfm.data.io import read_image
        from mmfm.data.sample import Image

        if isinstance(image, Image):
            img = image
        elif isinstance(image, (str, Path)):
            img = read_image(image, modality=modality)
        else:
            arr = np.asarray(image, dtype=np.float32)
            if arr.ndim == self.prep.dims or (arr.ndim == 3 and self.prep.dims == 2 and arr.shape[0] > 4):
                arr = arr[None]                  # no channel axis given
            if arr.ndim not in (3, 4):
                raise ConfigError(f"an array of shape {arr.shape} is not an image",
                                  "give (C, *spatial) or (*spatial), 2D or 3D")
            img = Image(arr, modality or "unknown", np.eye(4) if affine is None else np.asarray(affine, float))
        if img.modality == "unknown" and (modality or self.prep.modality):
            img = Image(img.array, modality or self.prep.modality, img.affine, img.meta)
        if not np.isfinite(img.array).all():
            raise ConfigError("the image has NaN or infinite values", "fix or drop the image; mmfm never replaces "
                                                                       "them silently")
        if img.spatial_dims < self.prep.dims:
            raise ConfigError(f"the run's model takes {self.prep.dims}D images, this one is {img.spatial_dims}D",
                              f"give {self.prep.dims}D images (a 2D run also segments volumes slice by slice)")
        if img.spatial_dims > self.prep.dims and self.task == "classification":
            raise ConfigError(f"the run's model takes {self.prep.dims}D images, this one is {img.spatial_dims}D",
                              f"give {self.prep.dims}D images")
        adapt_channels(img.array[:, :1, :1], self.prep.channels) if img.array.shape[0] != 1 else None  # refuses
        return img

    def _input(self, img: Any, preset: str | None) -> np.ndarray:
        """The image as the model was trained to see it, before resampling: preset, then channels."""
        arr = self.prep.preset(img.modality, preset)(img.array.astype(np.float32))
        return np.asarray(adapt_channels(arr, self.prep.channels), np.float32)

    # -- prediction -----------------------------------------------------------------------------------------------
    def predict(self, image: Any, affine: Any = None, modality: str | None = None, preset: str | None = None
                ) -> dict[str, Any]:
        """See the class docstring."""
        img = self.read(image, affine, modality)
        if self.task == "segmentation":
            return self._segment(img, preset)
        if self.task == "classification":
            return self._classify(img, preset)
        return self._detect(img, preset)

    def _segment(self, img: Any, preset: str | None) -> dict[str, Any]:
        arr = self._input(img, preset)                                   # (C, *spatial)
        nd = self.prep.dims
        if img.spatial_dims == nd:
            probs = segment_grid(self.model, arr, grid_affine(img.affine, nd), self.prep)     # (K, *spatial)
            labels = probs.argmax(0)
        else:   # a 2D run on a volume: slice by slice along the third axis, each slice on its in-plane grid
            aff = grid_affine(img.affine, 2)
            labels = np.stack([segment_grid(self.model, arr[..., k], aff, self.prep).argmax(0)
                               for k in range(arr.shape[-1])], axis=-1)
        labels = labels.astype(np.uint8)
        volumes = voxel_volumes(labels, img, self.class_names)
        return {"mask": labels, "affine": img.affine, "volumes": volumes,
                "empty": not bool(labels.any())}

    def _tensor(self, img: Any, preset: str | None) -> Any:
        """(1, C, *size): the image preprocessed and resized to the training grid (as SampleDataset resizes)."""
        import torch
        from monai.transforms import Resize

        arr = self._input(img, preset)
        resize = Resize(tuple(self.prep.size), mode="area" if self.prep.dims == 2 else "trilinear")
        return torch.as_tensor(np.asarray(resize(arr)), dtype=torch.float32)[None]

    def _classify(self, img: Any, preset: str | None) -> dict[str, Any]:
        import torch

        with torch.no_grad():
            p = self.model.predict(self._tensor(img, preset))[0].float().numpy()   # (K,), temperature-scaled
        probs = {name: float(v) for name, v in zip(self.class_names, p)}
        return {"probabilities": probs, "predicted": self.class_names[int(p.argmax())],
                "temperature": self.temperature}

    def _detect(self, img: Any, preset: str | None) -> dict[str, Any]:
        import torch

        from mmfm.data.sample import Image

        if img.spatial_dims > self.prep.dims:   # a 2D run on a volume: every slice along the third axis
            boxes = []
            for k in range(img.array.shape[-1]):
                plane = Image(img.array[..., k], img.modality, img.affine, img.meta)
                for b in self._detect(plane, preset)["boxes"]:
                    i0, j0, i1, j1 = b["voxel"]
                    vox = np.array([[i0, j0, k], [i1, j1, k + 1]], float)        # slice k spans [k, k+1)
                    boxes.append({**b, "slice": k, "voxel": [round(float(v), 2) for v in vox.ravel()],
                                  "world_mm": [round(float(v), 2) for c in vox for v in world_point(img.affine,
                                                                                                     c - 0.5)]})
            return {"boxes": boxes}
        with torch.no_grad():
            out = self.model.predict(self._tensor(img, preset))[0]
        scale = np.asarray(img.spatial_shape, float) / np.asarray(self.prep.size, float)   # training grid -> input
        nd = self.prep.dims
        names = self.class_names
        boxes = []
        classes = list(getattr(self.model, "classes", []))
        for b, lab, s in zip(out["boxes"].cpu().numpy(), out["labels"].cpu().numpy(), out["scores"].cpu().numpy()):
            vox = np.asarray(b, float).reshape(2, nd) * scale           # [2, nd]: min, max corner (voxel edges)
            world = [world_point(img.affine, c - 0.5) for c in vox]     # the affine maps centres: edge e = e - 0.5
            label = classes[int(lab)] if int(lab) < len(classes) else int(lab)   # detector index -> task class
            boxes.append({"label": names[label] if label < len(names) else str(label), "score": float(s),
                          "voxel": [round(float(v), 2) for v in vox.ravel()],
                          "world_mm": [round(float(v), 2) for c in world for v in c]})
        return {"boxes": boxes}


def segment_grid(model: Any, arr: np.ndarray, affine: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """Class probabilities (K, *spatial) of a preprocessed image ``arr`` (C, *spatial) on its own grid.

    The image is resampled to ``prep.spacing`` (MONAI ``Spacing``, as in training), segmented by sliding windows
    of ``prep.patch`` (25% overlap, Gaussian blending, as :func:`mmfm.evaluation.evaluate.evaluate`) or on the
    training grid ``prep.size``, and the probabilities are resampled back onto ``affine``'s grid (MONAI
    ``SpatialResample``, linear) so the argmax is taken on the input's own voxels.
    """
    import torch
    import torch.nn.functional as F
    from monai.data import MetaTensor
    from monai.inferers import sliding_window_inference
    from monai.transforms import Resize, Spacing, SpatialResample

    shape = arr.shape[1:]
    x = torch.as_tensor(arr, dtype=torch.float32)
    grid = torch.as_tensor(affine, dtype=torch.float64)
    if prep.spacing:
        if len(prep.spacing) != prep.dims:
            raise ConfigError(f"the run resampled to {prep.spacing} mm, which is not {prep.dims}D",
                              "the run's config.yaml is inconsistent; retrain it")
        x = Spacing(pixdim=prep.spacing, mode="bilinear")(MetaTensor(x, affine=grid))
        grid = x.affine
        x = x.as_tensor()
    with torch.no_grad():
        if prep.patch:
            logits = sliding_window_inference(x[None], tuple(prep.patch), sw_batch_size=4, predictor=model.logits,
                                              overlap=0.25, mode="gaussian")[0]          # (K, *resampled)
        else:
            mode = "area" if prep.dims == 2 else "trilinear"
            small = torch.as_tensor(np.asarray(Resize(tuple(prep.size), mode=mode)(x)), dtype=torch.float32)
            logits = model.logits(small[None])                                          # (1, K, *size)
            logits = F.interpolate(logits, size=tuple(x.shape[1:]), mode="bilinear" if prep.dims == 2 else
                                   "trilinear", align_corners=False)[0]                 # (K, *resampled)
        probs = logits.float().softmax(0)
    if prep.spacing:   # back onto the input's grid
        probs = SpatialResample(mode="bilinear")(MetaTensor(probs, affine=grid),
                                                 dst_affine=torch.as_tensor(affine, dtype=torch.float64),
                                                 spatial_size=tuple(int(s) for s in shape))
        probs = probs.as_tensor() if hasattr(probs, "as_tensor") else probs
    return np.asarray(probs.detach().cpu().numpy(), np.float32)


def grid_affine(affine: np.ndarray, nd: int) -> np.ndarray:
    """The (nd+1, nd+1) index -> mm affine of the first ``nd`` axes of a 4x4 affine (as SampleDataset resamples)."""
    aff = np.eye(nd + 1)
    aff[:nd, :nd], aff[:nd, nd] = affine[:nd, :nd], affine[:nd, 3]
    return aff


def world_point(affine: np.ndarray, index: np.ndarray) -> list[float]:
    """Voxel index (i, j[, k]) -> RAS millimetres (x, y, z) through the 4x4 affine."""
    v = np.zeros(4)
    v[3] = 1.0
    v[: len(index)] = index
    return [float(x) for x in (affine @ v)[:3]]


def voxel_volumes(labels: np.ndarray, img: Any, names: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per foreground class: voxels, and mL (3D) or mm^2 (2D) from the input's voxel size."""
    unit = float(np.prod(img.spacing))
    out = {}
    for c, name in enumerate(names):
        if c == 0:
            continue
        n = int((labels == c).sum())
        out[name] = {"voxels": n, ("ml" if labels.ndim == 3 else "mm2"): round(n * unit / (1000.0 if labels.ndim
                                                                                          == 3 else 1.0), 4)}
    return out


# -- the command -----------------------------------------------------------------------------------------------------
def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr", ".dcm", ".png", ".jpg", ".jpeg", ".tif",
                   ".tiff", ".npz"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or "image"
    return name or "image"


def _names(inputs: Sequence[Path]) -> list[str]:
    """One output name per input, unique (a repeated stem gets ``-2``, ``-3``, ...)."""
    seen: dict[str, int] = {}
    out = []
    for p in inputs:
        s = _stem(p)
        seen[s] = seen.get(s, 0) + 1
        out.append(s if seen[s] == 1 else f"{s}-{seen[s]}")
    return out


MASK_FORMATS = {"nifti": ".nii.gz", "dcm": ".dcm"}     # segmentation outputs: label map NIfTI, or DICOM SEG


def _outputs(task: str, names: Sequence[str], out: Path, fmt: str = "nifti") -> list[Path]:
    if task == "segmentation":
        return [out / f"{n}_seg{MASK_FORMATS[fmt]}" for n in names]
    stem = "predictions" if task == "classification" else "detections"
    reports = [out / f"{n}_sr.dcm" for n in names] if task == "classification" and fmt == "dcm" else []
    return [out / f"{stem}.csv", out / f"{stem}.json", *reports]


def predict_files(run: str | Path, inputs: Sequence[str | Path], out: str | Path, modality: str | None = None,
                  preset: str | None = None, overwrite: bool = False, progress: bool = True,
                  fmt: str = "nifti") -> dict[str, Any]:
    """`mmfm predict`: apply ``run`` to every input, write the outputs and ``predict.json`` into ``out``; return
    the record. The run, --out and every input's format are checked before any compute; the outputs appear
    together (staged), so an input that fails leaves none. ``fmt``: segmentation masks as ``nifti`` label maps or
    ``dcm``, a DICOM SEG per input (DICOM inputs only) with one segment per foreground class."""
    from mmfm.data.io import image_format
    from mmfm.data.io.dicom_seg import DICOM_FORMATS
    from mmfm.data.sources.fetch import sha256

    if not inputs:
        raise ConfigError("mmfm predict needs at least one input image", "mmfm predict RUN IMAGE... --out DIR")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file", "give a folder (new, empty, or an earlier mmfm predict output)")
    check_writable(out)
    model = TrainedModel(run)
    paths = [Path(p) for p in inputs]
    for p in paths:
        if not p.exists():
            raise InputFileError(p, "not found", "check the path")
    names = _names(paths)
    sidecar = out / "predict.json"
    if fmt not in MASK_FORMATS:
        raise ConfigError(f"--format {fmt} is not an output format of mmfm predict", "use nifti or dcm")
    if fmt == "dcm" and model.task == "detection":
        raise ConfigError("--format dcm writes DICOM SEG masks (segmentation) or SRs (classification); the run is "
                          "detection", "leave out --format")
    check_ours([*_outputs(model.task, names, out, fmt), sidecar], sidecar, COMMAND, overwrite)
    record: dict[str, Any] = {
        "written_by": COMMAND, "task": model.task, "run": model.run.name,
        "checkpoint_sha256": sha256(model.run / "checkpoints" / "last" / "model.safetensors"),
        "classes": model.class_names, "preprocessing": model.prep.to_dict(), "cases": []}
    if model.task == "classification":
        record["temperature"] = model.temperature
    for p in paths:              # every input's format known before any compute (unknown: one error, exit 2)
        if image_format(p) not in DICOM_FORMATS and fmt == "dcm":
            raise ConfigError(f"--format dcm: {p.name} is not DICOM; a DICOM SEG or SR references DICOM source images",
                              "give DICOM files or series folders, or leave out --format")
    with Staged() as staged:     # a failure on a later input leaves no output at all
        for i, (name, path) in enumerate(zip(names, paths)):
            if progress:
                log.info(f"predicting {i + 1}/{len(paths)}")
            img = model.read(path, modality=modality)
            r = model.predict(img, preset=preset)
            case: dict[str, Any] = {"case": name, "shape": list(img.spatial_shape),
                                    "spacing": [round(s, 4) for s in img.spacing], "modality": img.modality}
            if model.task == "segmentation":
                target = _outputs(model.task, [name], out, fmt)[0]
                _write_mask(staged.path(target), target.name, fmt, r["mask"], img.affine, model, path)
                case.update(mask=target.name, volumes=r["volumes"], empty=r["empty"])
            elif model.task == "classification":
                case.update(probabilities=r["probabilities"], predicted=r["predicted"])
                if fmt == "dcm":
                    _write_report(staged.path(out / f"{name}_sr.dcm"), r["probabilities"], model, path,
                                  record["checkpoint_sha256"])
                    case["report"] = f"{name}_sr.dcm"
            else:
                case.update(boxes=r["boxes"])
            record["cases"].append(case)
        if model.task == "classification":
            _write_table(staged, out / "predictions", record["cases"], _classification_rows(record["cases"],
                                                                                             model.class_names))
        elif model.task == "detection":
            _write_table(staged, out / "detections", record["cases"], _detection_rows(record["cases"]))
        staged.path(sidecar).write_text(json.dumps(record, indent=2))
    return record


def _write_report(target: Path, probabilities: dict[str, float], model: TrainedModel, source: Path,
                  checksum: str) -> None:
    """The class probabilities as a DICOM SR (TID 1500) that references the source's images."""
    from mmfm import __version__
    from mmfm.data.io.dicom_seg import dicom_sources
    from mmfm.data.io.dicom_sr import write_classification_sr

    write_classification_sr(target, probabilities, dicom_sources(source), f"run:{model.run.name}",
                            f"mmfm {__version__}", checksum)


def _write_mask(target: Path, name: str, fmt: str, mask: np.ndarray, affine: np.ndarray, model: TrainedModel,
                source: Path) -> None:
    """A label map as NIfTI on the input's grid, or as a DICOM SEG on the source's slices (one segment per class)."""
    if fmt == "nifti":
        write_image(target, mask.astype(np.uint8), affine, name=name)
        return
    from mmfm import __version__
    from mmfm.data.io.dicom_seg import write_dicom_result

    names = {c: n for c, n in enumerate(model.class_names) if c > 0}
    write_dicom_result(target, "SEG", mask, names, source, f"run:{model.run.name}", f"mmfm {__version__}")


def _classification_rows(cases: list[dict[str, Any]], names: Sequence[str]) -> list[list[Any]]:
    rows: list[list[Any]] = [["case", "predicted", *[f"p_{n}" for n in names]]]
    rows += [[c["case"], c["predicted"], *[f"{c['probabilities'][n]:.6f}" for n in names]] for c in cases]
    return rows


def _detection_rows(cases: list[dict[str, Any]]) -> list[list[Any]]:
    rows: list[list[Any]] = [["case", "label", "score", "voxel_box", "world_box_mm"]]
    rows += [[c["case"], b["label"], f"{b['score']:.4f}", " ".join(map(str, b["voxel"])),
              " ".join(map(str, b["world_mm"]))] for c in cases for b in c["boxes"]]
    return rows


def _write_table(staged: Staged, stem: Path, cases: list[dict[str, Any]], rows: list[list[Any]]) -> None:
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    staged.path(stem.with_suffix(".csv")).write_text(buf.getvalue())
    staged.path(stem.with_suffix(".json")).write_text(json.dumps(cases, indent=2))


