"""`mmfm predict CLIP_RUN IMAGE... --classes A B ... --out DIR`: zero-shot classification of each image by an
image-text run (`mmfm pretrain` with clip, medclip or gloria), no labels and no training.

Each class name becomes a prompt ensemble (:func:`mmfm.tasks.zero_shot.class_prompts`: the templates filled with
the name, embeddings averaged), and the image's probabilities are the softmax of the model's scaled cosine
similarities to them (:func:`mmfm.tasks.zero_shot.zero_shot_probs`), as `mmfm zeroshot` scores a dataset. The image
goes through the model's own preprocessing (as `mmfm explain` prepares it: its preset, resized to its input size; a
2D model on a volume sees the middle slice). Outputs as for a classification run: ``predictions.csv`` and
``.json``, ``predict.json`` (the run, the SHA-256 of ``dual.safetensors``, classes and prompts) and, with
``--format dcm`` (DICOM inputs), ``<name>_sr.dcm``: the probabilities as a DICOM SR (TID 1500,
:mod:`mmfm.data.io.dicom_sr`) whose algorithm parameters name the checksum and the prompt templates.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmfm.errors import ConfigError, InputFileError
from mmfm.workflows.outputs import Staged, check_ours, check_writable
from mmfm.workflows.predict import COMMAND, MASK_FORMATS, _classification_rows, _names, _outputs, _write_table

log = logging.getLogger(__name__)


def is_image_text_run(run: str | Path) -> bool:
    """Whether ``run`` is a vision-language pretraining run (its ``dual/`` model)."""
    return (Path(run) / "dual" / "dual.json").exists() or (Path(run) / "dual.json").exists()


def zeroshot_files(run: str | Path, inputs: Sequence[str | Path], out: str | Path, classes: Sequence[str],
                   templates: Sequence[str] = (), modality: str | None = None, preset: str | None = None,
                   overwrite: bool = False, progress: bool = True, fmt: str = "nifti") -> dict[str, Any]:
    """Classify every input among ``classes`` with the image-text run ``run``; write the outputs and
    ``predict.json`` into ``out`` (all together, staged) and return the record."""
    import torch

    from mmfm.data.io import image_format, read_image
    from mmfm.data.io.dicom_seg import DICOM_FORMATS
    from mmfm.data.sources.fetch import sha256
    from mmfm.tasks.zero_shot import DEFAULT_TEMPLATES, class_prompts, zero_shot_probs
    from mmfm.workflows.model_input import dual_input
    from mmfm.workflows.towers import load_dual

    names_ = [c.strip() for c in classes if c.strip()]
    if len(names_) < 2 or len(set(names_)) != len(names_):
        raise ConfigError("zero-shot classification needs two or more different class names",
                          "e.g. --classes 'pleural effusion' 'no finding'")
    if fmt not in MASK_FORMATS:
        raise ConfigError(f"--format {fmt} is not an output format of mmfm predict", "use nifti or dcm")
    out, paths = Path(out), [Path(p) for p in inputs]
    if not paths:
        raise ConfigError("mmfm predict needs at least one input image", "mmfm predict RUN IMAGE... --out DIR")
    check_writable(out)
    for p in paths:
        if not p.exists():
            raise InputFileError(p, "not found", "check the path")
        if fmt == "dcm" and image_format(p) not in DICOM_FORMATS:
            raise ConfigError(f"--format dcm: {p.name} is not DICOM; a DICOM SR references DICOM source images",
                              "give DICOM files or series folders, or leave out --format")
    names, sidecar = _names(paths), out / "predict.json"
    check_ours([*_outputs("classification", names, out, fmt), sidecar], sidecar, COMMAND, overwrite)
    model, spec = load_dual(str(run))
    folder = Path(run) / "dual" if (Path(run) / "dual").is_dir() else Path(run)
    templates = list(templates) or DEFAULT_TEMPLATES
    prompts = class_prompts(names_, templates)
    record: dict[str, Any] = {
        "written_by": COMMAND, "task": "zeroshot", "run": Path(run).name, "method": spec.get("method"),
        "checkpoint_sha256": sha256(folder / "dual.safetensors"), "classes": names_,
        "prompts": dict(zip(names_, prompts)), "cases": []}
    with Staged() as staged:
        for i, (name, path) in enumerate(zip(names, paths)):
            if progress:
                log.info(f"predicting {i + 1}/{len(paths)}")
            img = read_image(path, modality=modality)
            if not np.isfinite(img.array).all():
                raise InputFileError(path, "has NaN or infinite values", "fix or drop the image")
            x, k = dual_input(img, spec, preset)                                 # (1, C, *size)
            with torch.no_grad():
                p = zero_shot_probs(model, x, prompts)[0].numpy()                 # (K,)
            probs = {c: float(v) for c, v in zip(names_, p)}
            case: dict[str, Any] = {"case": name, "shape": list(img.spatial_shape), "modality": img.modality,
                                    "slice": k, "probabilities": probs, "predicted": names_[int(p.argmax())]}
            if fmt == "dcm":
                _write_report(staged.path(out / f"{name}_sr.dcm"), probs, record, path, templates)
                case["report"] = f"{name}_sr.dcm"
            record["cases"].append(case)
        _write_table(staged, out / "predictions", record["cases"], _classification_rows(record["cases"], names_))
        staged.path(sidecar).write_text(json.dumps(record, indent=2))
    return record


def _write_report(target: Path, probabilities: dict[str, float], record: dict[str, Any], source: Path,
                  templates: Sequence[str]) -> None:
    """The zero-shot probabilities as a DICOM SR (TID 1500) of the source's images; the prompt templates are
    algorithm parameters beside the checksum."""
    from mmfm import __version__
    from mmfm.data.io.dicom_seg import dicom_sources
    from mmfm.data.io.dicom_sr import write_classification_sr

    write_classification_sr(target, probabilities, dicom_sources(source), f"zeroshot:{record['run']}",
                            f"mmfm {__version__}", record["checkpoint_sha256"],
                            description="mmfm zero-shot classification",
                            parameters=[f"prompt:{t}" for t in templates])
