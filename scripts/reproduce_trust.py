"""The trust and privacy evidence of docs/trust.md (issue "Trust and privacy"), written to docs/results/trust_*.json:

    python scripts/reproduce_trust.py calibration  # ECE before/after temperature scaling, mini tissue, 3 seeds
    python scripts/reproduce_trust.py pointing     # pointing game: LiTS tumours, TotalSegmentator organs, 3 seeds
    python scripts/reproduce_trust.py dp           # accuracy against epsilon (Opacus), epsilon re-checked
    python scripts/reproduce_trust.py deid         # every DICOM mmfm can reach, de-identified and audited
    python scripts/reproduce_trust.py all

Runs go under runs/trust/<part>/ (a finished run is not repeated). A run that fails is recorded as failed and listed
as FAILED under its table; the others go on, and the script exits 1 at the end. Environment: SEEDS="0 1 2",
MMFM=.venv/bin/mmfm.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import reproduce_runs  # noqa: E402
from reproduce_runs import attempt  # noqa: E402

RUNS = ROOT / "runs" / "trust"
RESULTS = ROOT / "docs" / "results"
SEEDS = [int(s) for s in os.environ.get("SEEDS", "0 1 2").split()]
MMFM = os.environ.get("MMFM", str(ROOT / ".venv" / "bin" / "mmfm"))


def run(out: Path, *args: str) -> Path:
    """``mmfm ARGS out=OUT`` unless OUT already holds a finished run; RunFailed if it fails."""
    return reproduce_runs.run(MMFM, out, *args)


def save(name: str, recs: list[dict]) -> None:
    """docs/results/NAME.json, every record with its provenance (records made here: this machine, now)."""
    from mmfm.workflows.provenance import provenance

    here = provenance()
    reproduce_runs.save(RESULTS, name, [r if r.get("provenance") else {**r, "provenance": here} for r in recs])


def rec(task: str, dataset: str, split: str, method: str, metric: str, value: float, seed: int) -> dict:
    return {"task": task, "dataset": dataset, "split": split, "method": method, "metric": metric,
            "value": float(value), "seed": seed, "label_fraction": 1.0}


# -- calibration -----------------------------------------------------------------------------------------------
def calibration() -> None:
    """Tissue classification on mini (5 classes); temperature fitted on val, test scored before and after."""
    recs = []
    for enc, extra in (("resnet_tiny", []), ("vit_mini", ["encoder.patch_size=4"])):
        for seed in SEEDS:
            with attempt(recs, "classification", "mini/patches2d", f"{enc}-scratch", seed):
                out = run(RUNS / "calibration" / f"{enc}-s{seed}", "train", "configs/quickstart_classification.yaml",
                          f"encoder.name={enc}", *extra, "train.max_steps=200", "train.batch_size=64",
                          f"train.seed={seed}", f"method={enc}-scratch")
                recs += [r for r in json.loads((out / "results.json").read_text()) if r["split"] in ("val", "test")]
    save("trust_calibration", recs)


# -- pointing game ---------------------------------------------------------------------------------------------
def _windows(image: np.ndarray, target: np.ndarray, centres: np.ndarray, size: int, rng: np.random.Generator
             ) -> tuple[np.ndarray, np.ndarray]:
    """Windows of ``size`` around each (z, y, x) centre, shifted by a random offset (so the structure is not
    always at the window centre); zero-padded at the borders."""
    pad = size
    img = np.pad(image, ((0, 0), (pad, pad), (pad, pad)))
    tgt = np.pad(target, ((0, 0), (pad, pad), (pad, pad)))
    xs, ms = [], []
    for z, y, x in centres:
        dy, dx = rng.integers(-size // 3, size // 3 + 1, size=2)
        y0, x0 = y + pad - size // 2 + dy, x + pad - size // 2 + dx
        xs.append(img[z, y0:y0 + size, x0:x0 + size])
        ms.append(tgt[z, y0:y0 + size, x0:x0 + size])
    return np.stack(xs)[:, None].astype(np.float32), np.stack(ms)


def lits_task(rng: np.random.Generator) -> dict:
    """LiTS #117: 48x48 windows, tumour present (class 1, window around a tumour voxel) or liver without tumour
    (class 0); train on slices 0-79, test on slices 88-127 (a gap of 8 slices)."""
    from mmfm.data.io.mrc import read_mrc_array
    from mmfm.data.presets import get_preset
    from mmfm.data.sources.mini import lits_files

    img_p, lab_p = lits_files()
    ct = get_preset("ct_abdomen")(read_mrc_array(img_p)[0][None])[0]
    lab = read_mrc_array(lab_p)[0].astype(np.uint8)
    out = {}
    for split, zr in (("train", range(0, 80)), ("test", range(88, 128))):
        tum = np.argwhere(lab[list(zr)] == 2)
        tum[:, 0] += zr.start
        liver = np.argwhere(lab[list(zr)] == 1)
        liver[:, 0] += zr.start
        n = 400 if split == "train" else 60
        pos = tum[rng.choice(len(tum), n, replace=False)]
        negc = liver[rng.choice(len(liver), 4 * n, replace=False)]
        xp, mp = _windows(ct, (lab == 2).astype(np.uint8), pos, 48, rng)
        xn, mn = _windows(ct, (lab == 2).astype(np.uint8), negc, 48, rng)
        keep = mn.reshape(len(mn), -1).sum(1) == 0            # liver windows without any tumour
        xn, mn = xn[keep][:n], mn[keep][:n]
        out[split] = (np.concatenate([xp, xn]), np.r_[np.ones(len(xp)), np.zeros(len(xn))].astype(int),
                      np.concatenate([mp, mn]).astype(bool))
    out["classes"] = ["liver", "tumour"]
    out["explain"] = [1]                                       # tumour windows, explained for class tumour
    return out


def organ_task(rng: np.random.Generator) -> dict:
    """TotalSegmentator example CT (3 mm) and its SILVER label map: 48x48 axial windows around a voxel of spleen,
    right kidney, left kidney or liver (class = organ); train on slices 0-17, test on 21-29."""
    import nibabel as nib

    sys.path.insert(0, str(ROOT / "scripts"))
    from real_3d_totalsegmentator import fetch_reference

    from mmfm.data.presets import get_preset

    ref = fetch_reference()
    ct = nib.as_closest_canonical(nib.load(ref / "example_ct_sm.nii.gz"))
    seg = nib.as_closest_canonical(nib.load(ref / "example_seg.nii.gz"))
    vol = get_preset("ct_abdomen")(np.asarray(ct.dataobj, dtype=np.float32)[None])[0].transpose(2, 1, 0)
    lab = np.asarray(seg.dataobj).astype(np.int16).transpose(2, 1, 0)        # (z, y, x)
    organs = {1: "spleen", 2: "kidney_right", 3: "kidney_left", 5: "liver"}
    out = {}
    for split, zr in (("train", range(0, 18)), ("test", range(21, lab.shape[0]))):
        xs, ys, ms = [], [], []
        for c, (value, _) in enumerate(organs.items()):
            vox = np.argwhere(lab[list(zr)] == value)
            if not len(vox):
                continue
            vox[:, 0] += zr.start
            n = min(len(vox), 150 if split == "train" else 20)
            x, m = _windows(vol, (lab == value).astype(np.uint8), vox[rng.choice(len(vox), n, replace=False)], 48,
                            rng)
            xs.append(x)
            ys.append(np.full(n, c))
            ms.append(m.astype(bool))
        out[split] = (np.concatenate(xs), np.concatenate(ys), np.concatenate(ms))
    out["classes"] = list(organs.values())
    out["explain"] = list(range(len(organs)))
    return out


def pointing() -> None:
    """A classifier per task, encoder and seed (mmfm's Trainer, 150 steps); its maps on the test windows of the
    explained classes (for the true class); pointing game at 0 and 3 pixels, against two baselines: a random
    point (uniform; its hit rate is the mask's area fraction) and the window centre."""
    import torch

    from mmfm.encoders import build_encoder
    from mmfm.engine.trainer import OptimConfig, TrainConfig, Trainer
    from mmfm.tasks.classification import ClassificationTask
    from mmfm.trust.explain import explain_methods, pointing_game, saliency

    recs = []
    for task_name, build in (("lits_tumour", lits_task), ("totalseg_organs", organ_task)):
        for seed in SEEDS:
            data = build(np.random.default_rng(seed))
            xtr, ytr, _ = data["train"]
            xte, yte, mte = data["test"]
            sel = np.isin(yte, data["explain"])
            for enc in ("resnet_tiny", "vit_mini"):
                torch.manual_seed(seed)
                opts = {"patch_size": 4} if enc == "vit_mini" else {}
                model = ClassificationTask(build_encoder(enc, spatial_dims=2, in_channels=1, **opts),
                                           len(data["classes"]))
                ds = [{"image": torch.from_numpy(x), "label": torch.tensor(int(y))} for x, y in zip(xtr, ytr)]
                run_dir = RUNS / "pointing" / f"{task_name}-{enc}-s{seed}"
                Trainer(model, ds, TrainConfig(max_steps=150, batch_size=32, seed=seed, progress=False,
                                               ckpt_every=150), OptimConfig(lr=1e-3, warmup_steps=10), run_dir,
                        run_info={"config": {"task": task_name, "enc": enc, "seed": seed}}).fit()
                model.eval()
                x = torch.from_numpy(xte[sel])
                y = yte[sel]
                masks = mte[sel]
                with torch.no_grad():
                    acc = float((model.predict(torch.from_numpy(xte)).argmax(1).numpy() == yte).mean())
                recs.append(rec("pointing", task_name, "test", enc, "accuracy", acc, seed))
                for method in explain_methods(model):
                    maps = torch.stack([saliency(model, x[j:j + 1], method, int(y[j]))[0] for j in range(len(x))])
                    for tol in (0, 3):
                        hits = [pointing_game(m.numpy(), k, tol) for m, k in zip(maps, masks)]
                        recs.append(rec("pointing", task_name, "test", f"{enc}:{method}", f"hit@{tol}px",
                                        float(np.mean(hits)), seed))
                print(f"{task_name} {enc} seed {seed}: accuracy {acc:.3f}", flush=True)
            g = np.random.default_rng(1000 + seed)
            centre = masks.shape[1] // 2
            for tol in (0, 3):
                from scipy.ndimage import distance_transform_edt
                rnd = [float(distance_transform_edt(~k)[tuple(g.integers(0, k.shape[0], 2))] <= tol) for k in masks]
                cen = [float(distance_transform_edt(~k)[centre, centre] <= tol) for k in masks]
                recs.append(rec("pointing", task_name, "test", "random:point", f"hit@{tol}px", np.mean(rnd), seed))
                recs.append(rec("pointing", task_name, "test", "baseline:centre", f"hit@{tol}px", np.mean(cen), seed))
    save("trust_pointing", recs)


# -- differential privacy --------------------------------------------------------------------------------------
def _recomputed_epsilon(out: Path, name: str, seed: int) -> list[dict]:
    """The run's spent epsilon recomputed with Opacus's RDP and PRV accountants, and its noise multiplier."""
    from opacus.accountants import PRVAccountant, RDPAccountant

    p = json.loads((out / "privacy.json").read_text())
    rdp, prv = RDPAccountant(), PRVAccountant()
    rdp.history = [(p["noise_multiplier"], p["sample_rate"], p["steps"])]
    prv.history = [(p["noise_multiplier"], p["sample_rate"], p["steps"])]
    return [rec("classification", "mini", "train", f"dp-{name}", "epsilon_rdp_recomputed", rdp.get_epsilon(p["delta"]),
                seed),
            rec("classification", "mini", "train", f"dp-{name}", "epsilon_prv", prv.get_epsilon(p["delta"]), seed),
            rec("classification", "mini", "train", f"dp-{name}", "noise_multiplier", p["noise_multiplier"], seed)]


def dp() -> None:
    """Tissue classification on mini, resnet_tiny with BatchNorm replaced by GroupNorm in every arm (the
    non-private arm too, so only DP differs); epsilon 1, 4, 16 at delta 1e-5, clipping norm 1, 300 steps of
    expected batch 64; the spent epsilon recomputed here with Opacus's RDP and PRV accountants."""
    recs = []
    base = ["train", "configs/quickstart_classification.yaml", "encoder.name=resnet_tiny", "train.max_steps=300",
            "train.batch_size=64", "train.dp.fix_norms=true", "optim.lr=0.002", "data.eval_splits=[test]",
            "calibrate="]
    for seed in SEEDS:
        for eps in (0, 1, 4, 16):
            name = f"eps{eps}" if eps else "nonprivate"
            with attempt(recs, "classification", "mini", f"dp-{name}", seed):
                out = run(RUNS / "dp" / f"{name}-s{seed}", *base, f"train.dp.epsilon={eps}", f"train.seed={seed}",
                          f"method=dp-{name}")
                recs += [r for r in json.loads((out / "results.json").read_text())
                         if r["metric"] in ("balanced_accuracy", "accuracy", "dp_epsilon")]
                if eps:
                    recs += _recomputed_epsilon(out, name, seed)
    save("trust_dp", recs)


# -- de-identification -----------------------------------------------------------------------------------------
def dicom_sources() -> dict[str, list[Path]]:
    import pydicom

    out: dict[str, list[Path]] = {"pydicom": sorted(Path(pydicom.__file__).parent.glob("data/test_files/**/*.dcm"))}
    try:
        import data_store  # the pydicom-data package

        out["pydicom-data"] = sorted(Path(data_store.__file__).parent.glob("**/*.dcm"))
    except ImportError:
        pass
    try:
        import deid_data

        out["deid-data"] = sorted(Path(deid_data.__file__).parent.glob("**/*.dcm"))
    except ImportError:
        pass
    sys.path.insert(0, str(ROOT / "scripts"))
    from real_3d_totalsegmentator import fetch_reference

    out["totalsegmentator"] = sorted(p for p in (fetch_reference() / "example_ct_dicom").iterdir() if p.is_file())
    return out


def deid() -> None:
    """Each source's DICOMs de-identified by `mmfm data deid` into a fresh folder; every written file audited:
    identifying values left (by attribute), pixel data byte-identical, re-read by pydicom, and by mmfm with the
    same array and affine (where mmfm reads the original)."""
    import shutil
    import tempfile

    import pydicom

    from mmfm.data.deid import leaked
    from mmfm.data.io import read_image

    recs, leaks_by_attr = [], {}
    for source, files in dicom_sources().items():
        with tempfile.TemporaryDirectory() as tmp:
            inp = Path(tmp) / "in"
            inp.mkdir()
            for i, f in enumerate(files):
                shutil.copy(f, inp / f"{i:04d}.dcm")
            out = Path(tmp) / "out"
            subprocess.run([MMFM, "data", "deid", str(inp), str(out), "--json"], check=True, cwd=ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            summary = json.loads((out / "deid.json").read_text())
            from mmfm.data.pseudonym import pseudonym

            written = {w["source"]: out / w["file"] for w in summary["written"]}
            counts = {"files": len(files), "written": len(summary["written"]), "skipped": len(summary["skipped"]),
                      "burned_in_flagged": len(summary["burned_in_annotation"]), "files_with_leaks": 0,
                      "pixel_identical": 0, "pydicom_reread": 0, "mmfm_same_geometry": 0, "mmfm_readable": 0}
            for f in sorted(inp.iterdir()):
                dst_path = written.get(pseudonym(f.name, "file"))
                if dst_path is None:
                    continue
                src = pydicom.dcmread(f)
                dst = pydicom.dcmread(dst_path)
                counts["pydicom_reread"] += 1
                counts["pixel_identical"] += int(bytes(dst.PixelData) == bytes(src.PixelData))
                left = leaked(src, dst)
                counts["files_with_leaks"] += int(bool(left))
                for a in left:
                    leaks_by_attr[a] = leaks_by_attr.get(a, 0) + 1
                try:
                    a, b = read_image(f), read_image(dst_path)
                except Exception:
                    continue
                counts["mmfm_readable"] += 1
                counts["mmfm_same_geometry"] += int(np.allclose(a.affine, b.affine) and a.array.shape == b.array.shape
                                                    and np.array_equal(a.array, b.array))
            recs += [rec("deid", source, "all", "mmfm-deid", k, v, 0) for k, v in counts.items()]
            print(source, counts, flush=True)
    recs += [rec("deid", "all", "leaks", "mmfm-deid", a, n, 0) for a, n in sorted(leaks_by_attr.items())]
    save("trust_deid", recs)


PARTS = {"calibration": calibration, "pointing": pointing, "dp": dp, "deid": deid}

if __name__ == "__main__":
    from mmfm.cli.logs import setup as show_progress

    show_progress()   # the library's log lines (progress, decisions), as the mmfm command shows them
    names = sys.argv[1:] or ["all"]
    for n in (list(PARTS) if names == ["all"] else names):
        if n not in PARTS:
            raise SystemExit(f"unknown part {n}; choose from {list(PARTS)} or all")
        PARTS[n]()
    sys.exit(reproduce_runs.exit_status())
