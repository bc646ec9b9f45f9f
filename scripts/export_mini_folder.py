"""Export a set of the built-in ``mini`` corpus as a plain folder, the way a user brings data: one NIfTI file per
image (the preprocessed float values, so nothing is lost to 8-bit), ``labels.csv`` (image,label,patient) and
``splits.json`` (mini's own patient-level splits, as file names), to run the user-data path on known data.

    python scripts/export_mini_folder.py OUT [--set patches2d] [--label tissue]

Then, e.g.: ``mmfm evaluate --encoder ... --dataset folder --data-root OUT --label label data.size=[32,32]
data.splits_file=OUT/splits.json data.presets={unknown: unit}`` (``unit``: the values are already in [0, 1]).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np

from mmfm.data.sources.mini_reader import class_names, load_mini_arrays


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--set", default="patches2d")
    ap.add_argument("--label", default="tissue")
    a = ap.parse_args()
    out = Path(a.out)
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty: give a new folder")
    d = load_mini_arrays(None, a.set)
    names = class_names(None, a.set, a.label)
    (out / "images").mkdir(parents=True)
    rows, splits = ["image,label,patient"], {"train": [], "val": [], "test": []}
    for i in range(len(d["split"])):
        rel = f"images/{d['split'][i]}_{i:05d}.nii.gz"
        img = d["image"][i]
        nib.save(nib.Nifti1Image(np.ascontiguousarray(img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1)),
                                 np.eye(4)), out / rel)
        rows.append(f"{rel},{names[int(d[a.label][i])]},{d['patient_id'][i]}")
        splits[str(d["split"][i])].append(rel)
    (out / "labels.csv").write_text("\n".join(rows) + "\n")
    (out / "splits.json").write_text(json.dumps(splits))
    print(f"{len(rows) - 1} images -> {out} (labels.csv, splits.json)")


if __name__ == "__main__":
    main()
