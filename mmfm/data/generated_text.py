"""Text a corpus generates from its own labels, for sources whose ``synthetic_text`` is true (mini): the
label-only caption of each image-text pair (the baseline a retriever or captioner must beat) and visual questions
with their answers. Commands ask for them through :mod:`mmfm.data.spec`, never by the corpus's name; every report
that uses them says the text is generated."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from mmfm.data.source import mini_arrays, source
from mmfm.data.sources.mini_reader import class_names, mini_root

CLOSED = "CLOSED"
MODALITY_WORDS = {"CT": "ct", "MR": "mri", "XR": "x-ray", "US": "ultrasound", "fundus": "fundus photograph",
                  "pathology": "pathology slide"}


def label_captions(data: Any, split: str, texts: list[str]) -> list[str] | None:
    """The label-only captions of the pairs of ``split``, in the order of ``texts``; None where the source has
    none (its text is not generated, or a mini built before v2)."""
    if not source(data).synthetic_text:
        return None
    d = mini_arrays(dataclasses.replace(data, size=[]), split)
    if "caption_label" not in d or [str(c) for c in d["caption"]] != texts:
        return None
    return [str(c) for c in d["caption_label"]]


def generated_vqa(data: Any, split: str) -> dict[str, Any]:
    """Questions generated from the labels (said in every report). slices2d: modality and body region (open),
    is-it-CT and liver tumour present (closed, yes/no); crops3d (3D): modality and region (open), is-it-CT and
    tumour present in the crop (closed; balanced between yes and no on CT crops). Images resized to
    ``data.size``."""
    if not source(data).synthetic_text:
        raise ValueError(f"{source(data).name} has no generated questions: read its own (catalog layout vqa_json)")
    root = Path(data.root) if data.root else mini_root()
    name = data.set if data.set in ("slices2d", "crops3d") else "slices2d"
    d = mini_arrays(dataclasses.replace(data, set=name, options={}), split)
    if name == "slices2d":
        names = class_names(root, name, "region")
        regions = [names[int(r)].replace("_", " ") for r in d["region"]]
        tumour = d["lesion"]
    else:
        regions = ["abdomen" if str(m) == "CT" else "brain" for m in d["modality"]]
        tumour = d["label"]
    images, qs, answers, types = [], [], [], []
    for i in range(len(d["split"])):
        mod = str(d["modality"][i])
        items = [("what modality is this image?", MODALITY_WORDS.get(mod, mod.lower()), "OPEN"),
                 ("which body region is shown?", regions[i], "OPEN"),
                 ("is this a ct scan?", "yes" if mod == "CT" else "no", CLOSED)]
        if mod == "CT" and regions[i] == "abdomen":
            items.append(("is there a liver tumour?", "yes" if int(tumour[i]) else "no", CLOSED))
        for q, a, t in items:
            images.append(d["image"][i])
            qs.append(q)
            answers.append(a)
            types.append(t)
    return {"image": np.stack(images), "question": qs, "answer": answers, "answer_type": types}
