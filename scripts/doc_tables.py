"""Every table and number in docs/ and the README is written here, from result files, never pasted.

    python scripts/doc_tables.py collect NAME FOLDER [--splits test val]  # results.json -> docs/results/NAME.json
    python scripts/doc_tables.py write [NAME ...]                         # regenerate every (or these) block(s)
    python scripts/doc_tables.py write --check [NAME ...]                 # exit 1 if a block differs; writes nothing

A marked block in a Markdown file is ``<!-- table:NAME -->`` ... ``<!-- /table:NAME -->``; its body is replaced by
the output of the generator NAME below, which reads ``docs/results/*.json`` (lists of result records, as
``results.json``). A block whose results file is missing says which command produces it. The reproduce_*.sh
scripts end with ``collect`` and ``write``. A run that failed is a record with metric ``failed`` (no value; see
:func:`failed_record`): the block of every table reading that file lists it as FAILED under the table.
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SOURCE = {  # results file -> the command that produces it
    "vfm": "scripts/reproduce_vfm_table.sh", "vfm_litemedsam": "scripts/reproduce_vfm_table.sh",
    "section_matching": "scripts/reproduce_report_tables.sh", "labeller": "scripts/reproduce_report_tables.sh",
    "summarization": "scripts/reproduce_report_tables.sh runs/reports summarization",
    "summarization_prompt": "python scripts/select_summary_prompt.py",
    "report_generation_2d": "scripts/reproduce_report_tables.sh", "report_generation_3d":
    "scripts/reproduce_report_tables.sh", "vqa_2d": "scripts/reproduce_report_tables.sh",
    "vqa_3d": "scripts/reproduce_report_tables.sh", "vlm": "scripts/reproduce_vlm_table.sh",
    "bench_mae": "benchmarks/mae_step.py --json docs/results/bench_mae.json",
    "bench_clip": "benchmarks/clip_step.py --json docs/results/bench_clip.json",
    "real_3d": "scripts/real_3d_totalsegmentator.py",
    "small_data": "python scripts/small_data_recipes.py",
    "bench_memory": "benchmarks/folder_memory.py --json docs/results/bench_memory.json",
    "vfm_folder": "scripts/reproduce_vfm_folder.sh",
    "promptable_lits": "python scripts/real_promptable_lits.py",
    "promptable_organs": "python scripts/real_promptable_organs.py",
    "litemedsam_liver": "python scripts/litemedsam_liver_definitions.py",
    "registration": "python scripts/real_registration.py",
    "detection": "scripts/reproduce_detection.sh",
    "segmentation": "scripts/reproduce_segmentation.sh",
    "segmentation_foundation": "scripts/reproduce_segmentation_foundation.sh",
    "quickstart": "mmfm quickstart --out runs/quickstart --max-per-split 300 && python scripts/doc_tables.py collect "
                  "quickstart runs/quickstart/label_efficiency --splits val test",
    "text_prompt": "python scripts/real_text_prompt.py",
    "bench_mae_vit_b": "benchmarks/mae_step.py --size vit_b --img 224 --patch 16 --batch 2 --steps 1 --rounds 3 "
                       "--json docs/results/bench_mae_vit_b.json",
    "bench_promptable": "benchmarks/promptable.py --json docs/results/bench_promptable.json",
    "bench_data": "benchmarks/data_pipeline.py --json docs/results/bench_data.json",
    "bench_quickstart": "benchmarks/quickstart_time.py --json docs/results/bench_quickstart.json",
    "bench_promptable_amx": "benchmarks/promptable.py --slices 12 --propagate-slices 40 --engines onnx --json "
                            "docs/results/bench_promptable_amx.json (on a CPU with native bf16)",
    "adapt_peft": "python scripts/reproduce_adaptation.py peft",
    "adapt_peft_sam": "python scripts/reproduce_adaptation.py peft_sam",
    "adapt_federated": "python scripts/reproduce_adaptation.py federated",
    "adapt_continual": "python scripts/reproduce_adaptation.py continual",
    "adapt_federated_kill": "python scripts/reproduce_adaptation.py federated_kill",
    "adapt_missing": "python scripts/reproduce_adaptation.py missing",
    "trust_calibration": "python scripts/reproduce_trust.py calibration",
    "trust_pointing": "python scripts/reproduce_trust.py pointing",
    "trust_dp": "python scripts/reproduce_trust.py dp",
    "trust_deid": "python scripts/reproduce_trust.py deid",
    "bench_serve": "python benchmarks/serve_load.py --json docs/results/bench_serve.json",
    "bench_app_second_prompt": "python benchmarks/app_second_prompt.py --json "
                               "docs/results/bench_app_second_prompt.json",
}


class Missing(Exception):
    pass


FAILED_METRIC = "failed"     # a run that did not finish: {"metric": "failed", "value": null, "error": "..."}
FAILED: dict[str, list[dict]] = {}   # results file -> its failed runs, gathered by load() while a block renders


def failed_record(task: str, dataset: str, method: str, seed: int, error: str, split: str = "test",
                  label_fraction: float = 1.0) -> dict:
    """The record a reproduce script writes for a run that failed: every table that reads the results file lists
    it under the table (never silently dropped); it holds no number."""
    return {"task": task, "dataset": dataset, "split": split, "method": method, "metric": FAILED_METRIC,
            "value": None, "seed": seed, "label_fraction": label_fraction, "error": error[-300:]}


def load(name: str) -> list[dict]:
    """The records of ``docs/results/NAME.json``, without failed-run records (kept in ``FAILED`` for the table)."""
    path = RESULTS / f"{name}.json"
    if not path.exists():
        raise Missing(f"_No results file `docs/results/{name}.json` yet: run `{SOURCE.get(name, '?')}`._")
    records, seen, failed = [], set(), []
    for r in json.loads(path.read_text()):  # a record written by two runs (a shared baseline) counts once
        if r["metric"] == FAILED_METRIC:
            failed.append(r)
            continue
        key = (r["task"], r["dataset"], r["split"], r["method"], r["metric"], r["seed"], r.get("label_fraction"))
        if key not in seen:
            seen.add(key)
            records.append(r)
    FAILED[name] = failed
    return records


def failed_note() -> str:
    """The failed runs of the results files the last block read: one line each, under its table."""
    runs = [(name, r) for name, rs in FAILED.items() for r in rs]
    if not runs:
        return ""
    lines = [f"**{len(runs)} run(s) FAILED** and are not in the numbers above (`docs/results/` records with "
             f"metric `{FAILED_METRIC}`):", ""]
    for name, r in runs:
        frac = f", {r['label_fraction']:g} of the labels" if r.get("label_fraction", 1.0) != 1.0 else ""
        error = str(r.get("error", "")).replace("|", "/").replace("\n", " ").strip()
        lines.append(f"- FAILED: `{r['method']}` seed {r['seed']}{frac} ({r['task']}, {r['dataset']}; {name})"
                     + (f": {error}" if error else ""))
    return "\n\n" + "\n".join(lines)


def _stats(values: list[float]) -> tuple[float, float, int]:
    return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else 0.0), len(values)


def cell(values: list[float], digits: int = 3) -> str:
    if not values:
        return "-"
    present = [v for v in values if not np.isnan(v)]   # NaN: the structure is absent from that test image
    if not present:
        return "absent"
    values = present
    m, s, n = _stats(values)
    if n == 1 and float(m).is_integer() and abs(m) >= 1:
        return str(int(m))  # counts (support, median rank)
    return f"{m:.{digits}f}" if n == 1 else f"{m:.{digits}f} ± {s:.{digits}f} (n={n})"


def grid(records: list[dict], rows: Callable[[dict], tuple], cols: list[str], col_of: Callable[[dict], str],
         headers: list[str], digits: int = 3) -> str:
    """Markdown table: one row per ``rows(record)`` key, one column per value of ``col_of``; mean ± sd."""
    cells: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        cells[rows(r)][col_of(r)].append(float(r["value"]))
    out = ["| " + " | ".join(headers + cols) + " |", "|" + "---|" * (len(headers) + len(cols))]
    for key in sorted(cells):
        out.append("| " + " | ".join([*map(str, key), *(cell(cells[key][c], digits) for c in cols)]) + " |")
    return "\n".join(out)


def paired_differences(recs: list[dict], a: str, b: str) -> list[float]:
    """``a - b`` for each seed that both methods hold, in seed order (``recs``: one metric, split and column).

    Arms that share a seed share what the seed draws (the labelled subset, the initialisation, the data order),
    so the spread of these differences is the comparison's own noise, not the two arms' spreads added."""
    va = {r["seed"]: float(r["value"]) for r in recs if r["method"] == a}
    vb = {r["seed"]: float(r["value"]) for r in recs if r["method"] == b}
    return [va[s] - vb[s] for s in sorted(va.keys() & vb.keys())]


def diff_cell(diffs: list[float], digits: int = 3) -> str:
    """Mean ± sample sd of paired differences, signed, with n (the seeds both arms hold)."""
    present = [d for d in diffs if not np.isnan(d)]
    if not present:
        return "-"
    m, s, n = _stats(present)
    m = m if round(m, digits) != 0 else 0.0   # no "-0.000"
    return f"{m:+.{digits}f} ± {s:.{digits}f} (n={n})"


def paired_table(recs: list[dict], pairs: list[tuple[str, str]], cols: list[str], col_of: Callable[[dict], str],
                 digits: int = 3) -> str:
    """One row per ``(a, b)`` pair, one column per value of ``col_of``: mean ± sd of the per-seed ``a - b``."""
    out = ["| paired difference | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for a, b in pairs:
        cells = [diff_cell(paired_differences([r for r in recs if col_of(r) == c], a, b), digits) for c in cols]
        out.append(f"| {a} − {b} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def best_on_val(val: list[dict], candidates: list[str], baseline: Callable[[str], str | None] = lambda m: None
                ) -> tuple[str, float] | None:
    """The candidate with the highest mean VALIDATION value (minus its ``baseline``'s mean where one is named), and
    that value; ``val``: records of one metric, split ``val`` and column. The test split is never read here."""
    means = {m: float(np.mean([r["value"] for r in val if r["method"] == m])) for m in {r["method"] for r in val}}
    scored = {}
    for m in candidates:
        base = baseline(m)
        if m in means and (base is None or base in means):
            scored[m] = means[m] - (means[base] if base else 0.0)
    if not scored:
        return None
    best = max(sorted(scored), key=scored.get)   # sorted: a tie goes to the first name, the same on every run
    return best, scored[best]


# -- generators -------------------------------------------------------------------------------------------------
def _label_efficiency(name: str) -> str:
    recs = [r for r in load(name) if r["metric"] == "balanced_accuracy" and r["split"] in ("test", "val")]
    fr = sorted({r["label_fraction"] for r in recs})
    splits = [s for s in ("val", "test") if any(r["split"] == s for r in recs)]
    cols = [f"{f:g} {s}" for f in fr for s in splits]
    note = ("; `val`: the validation patches the probe's head was not chosen on (what a best row is picked by), "
            "`test`: the test patches" if "val" in splits else
            " (no validation records in this file: nothing can be chosen from it without reading test)")
    return grid(recs, lambda r: (r["task"].split("/")[-1], r["method"]), cols,
                lambda r: f"{r['label_fraction']:g} {r['split']}", ["protocol", "method"]) + \
        f"\n\nColumns: fraction of the training labels and split{note}; cells: balanced accuracy, mean ± sample sd " \
        "over seeds."


def label_efficiency() -> str:
    return _label_efficiency("vfm")


def label_efficiency_litemedsam() -> str:
    return _label_efficiency("vfm_litemedsam")


def quickstart_selection() -> str:
    """The quickstart's pretraining choice, made on validation (scripts/select_quickstart.py): every candidate and
    the random baselines at 1% and 10% labels, and the candidate with the best mean over both."""
    recs = [r for r in load("quickstart_selection") if r["metric"] == "balanced_accuracy" and r["split"] == "val"]
    fr = sorted({r["label_fraction"] for r in recs})
    means = {m: np.mean([r["value"] for r in recs if r["method"] == m]) for m in {r["method"] for r in recs}}
    chosen = max((m for m in means if not m.endswith("-random")), key=means.get)
    return (grid(recs, lambda r: (r["method"],), [f"{f:g}" for f in fr], lambda r: f"{r['label_fraction']:g}",
                 ["method"]) + "\n\nColumns: fraction of the training labels; cells: VALIDATION balanced accuracy "
            f"(linear probe), mean ± sample sd over label seeds. Chosen: `{chosen}` (best mean over both fractions, "
            f"{means[chosen]:.3f}).")


def quickstart_table() -> str:
    recs = [r for r in load("quickstart") if r["metric"] == "balanced_accuracy" and r["split"] == "test"]
    fr = sorted({r["label_fraction"] for r in recs})
    return grid(recs, lambda r: (r["method"],), [f"{f:g}" for f in fr], lambda r: f"{r['label_fraction']:g}",
                ["starting point"]) + \
        "\n\nColumns: fraction of the training labels; cells: test balanced accuracy (linear probe), mean ± sample " \
        "sd over seeds 0-2 (seed s pretrains or initialises the encoder and draws the labels)."


def quickstart_headline() -> str:
    """The sentence the quickstart's report leads with, from the same records and the same function."""
    from mmfm.evaluation.claims import pretraining_headline
    from mmfm.evaluation.results import ResultRecord

    fields = ("task", "dataset", "split", "method", "metric", "value", "seed", "label_fraction")
    return pretraining_headline([ResultRecord(*(r[f] for f in fields)) for r in load("quickstart")])


def vfm_findings() -> str:
    """For each label fraction <= 10%, linear probe: the pretrained encoder with the largest VALIDATION gain over
    the random encoder of its architecture, then its TEST score against that baseline, unpaired (mean ± sd of
    each) and paired by seed (seed s draws the same labelled subset for both)."""
    recs = [r for r in load("vfm") if r["metric"] == "balanced_accuracy" and r["task"].endswith("linear")]
    val, test = ([r for r in recs if r["split"] == s] for s in ("val", "test"))
    if not val:   # nothing chosen: every pretrained encoder against its random baseline, paired by seed, on test
        fr = sorted({r["label_fraction"] for r in test if r["label_fraction"] <= 0.1})
        methods = sorted({r["method"] for r in test if not r["method"].endswith("-random")})
        return (f"_`docs/results/vfm.json` holds no validation records, so no best encoder is named (naming one "
                f"by its test mean would overstate it): `{SOURCE['vfm']}` records validation beside test._ Every "
                "pretrained encoder against the random one of its architecture on test, paired by seed (linear probe, "
                "per-seed differences of balanced accuracy, mean ± sample sd; columns: fraction of the labels):\n\n"
                + paired_table(test, [(m, f"{m.split('-')[0]}-random") for m in methods], [f"{f:g}" for f in fr],
                               lambda r: f"{r['label_fraction']:g}"))
    lines = []
    for f in sorted({r["label_fraction"] for r in val if r["label_fraction"] <= 0.1}):
        at_val = [r for r in val if r["label_fraction"] == f]
        pretrained = sorted({r["method"] for r in at_val if not r["method"].endswith("-random")})
        chosen = best_on_val(at_val, pretrained, lambda m: f"{m.split('-')[0]}-random")
        if chosen is None:
            continue
        method, val_gain = chosen
        base = f"{method.split('-')[0]}-random"
        at = [r for r in test if r["label_fraction"] == f]
        (m, s, n), (bm, bs, bn) = (_stats([r["value"] for r in at if r["method"] == x]) for x in (method, base))
        lines.append(f"- {f:g} of the labels, linear probe: chosen on validation `{method}` ({100 * val_gain:+.1f} "
                     f"points over `{base}` on val); on test {m:.3f} ± {s:.3f} against {bm:.3f} ± {bs:.3f} "
                     f"({100 * (m - bm):+.1f} points, n = {n} and {bn}); paired by seed: "
                     f"{diff_cell(paired_differences(at, method, base))}.")
    return "\n".join(lines) or "_no label fraction at or below 10%_"


def section_matching() -> str:
    recs = load("section_matching")
    cols = ["R@1", "R@5", "R@10", "median_rank", "mAP"]
    body = grid([r for r in recs if r["metric"] in cols], lambda r: (r["split"], r["method"]), cols,
                lambda r: r["metric"], ["split", "text tower"])
    once = {(r["split"], r["metric"]): r for r in recs if r["metric"].startswith("chance_")}  # same for every tower
    chance = grid(list(once.values()), lambda r: (r["split"],),
                  ["chance_R@1", "chance_R@5", "chance_mAP"], lambda r: r["metric"], ["split"])
    return body + "\n\nA random ranking (chance, same splits):\n\n" + chance


def labeller() -> str:
    """Per finding: the dev part (where the rules are developed) and the held-out part (only scored)."""
    recs = load("labeller")
    parts = {r["split"] for r in recs}
    if parts != {"dev", "held_out"}:
        raise Missing(f"_`docs/results/labeller.json` holds parts {sorted(parts)}, not dev and held_out: run "
                      f"`{SOURCE['labeller']}`._")
    cols = ["dev support", "dev F1", "held_out support", "held_out precision", "held_out recall", "held_out F1"]
    table = grid([r for r in recs if f"{r['split']} {r['metric']}" in cols], lambda r: (r["task"].split("/")[-1],),
                 cols, lambda r: f"{r['split']} {r['metric']}", ["finding"])
    n = {r["split"]: int(r["value"]) for r in recs if r["metric"] == "reports"}
    return (table + f"\n\nParts of the {n['dev'] + n['held_out']:,} IU reports, fixed by the SHA-256 of each report id "
            f"(`mmfm.data.labeller.report_part`): dev {n['dev']:,} reports, where the rules are developed; held_out "
            f"{n['held_out']:,} reports, only scored. Support: MeSH-positive reports in the part.")


def _metric_table(name: str, cols: list[str]) -> str:
    recs = [r for r in load(name) if r["split"] == "test" and r["metric"] in cols]
    return grid(recs, lambda r: (r["task"], r["method"]), cols, lambda r: r["metric"], ["task", "method"])


def real_3d() -> str:
    recs = [r for r in load("real_3d") if r["metric"].startswith("dice_")]
    organs = ["dice_spleen", "dice_kidney_right", "dice_kidney_left", "dice_liver", "dice_foreground"]
    pooled = grid(recs, lambda r: (r["method"],), organs, lambda r: r["metric"], ["fine-tuned from"])
    held = grid(recs, lambda r: (r["dataset"].split("held out: ")[1].split(";")[0], r["method"]), organs,
                lambda r: r["metric"], ["held-out scan", "fine-tuned from"])
    seeds = sorted({r["seed"] for r in recs})
    return (pooled + f"\n\nTest Dice against SILVER labels (TotalSegmentator's own reference outputs, not manual "
            f"ground truth), mean ± sd over the held-out scans x seeds {seeds} where the organ is in the held-out "
            "scan (n says in how many; `absent`: in none). Per held-out scan:\n\n" + held)


def small_data() -> str:
    """Trained 3D segmenter vs one box, per held-out case (rotating folds), and over the cases."""
    recs = [r for r in load("small_data") if r["split"] == "test" and r["metric"] in ("dice_liver", "hd95_liver_mm",
                                                                                       "empty_prediction")]
    cases = list(dict.fromkeys(r["case"] for r in recs))
    methods = sorted({r["method"] for r in recs}, reverse=True)
    vals: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for r in recs:
        vals[(r["case"], r["method"], r["metric"])].append(float(r["value"]))
    about = {r["case"]: (r.get("modality", "?"), r["dataset"].split("; ", 1)[-1][:-1]) for r in recs}

    def one(v: list[float], digits: int) -> str:     # a single run keeps its decimals (cell shows 2.0 as a count)
        return f"{v[0]:.{digits}f}" if len(v) == 1 else cell(v, digits)

    vol: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for r in recs:
        if r["metric"] == "dice_liver":
            vol[(r["case"], r["method"])].append((float(r["pred_ml"]), float(r["true_ml"])))
    lines = ["| held-out case | labels | method | seeds | Dice | HD95 (mm) | predicted / true volume (mL) | "
             "empty predictions |", "|---|---|---|---|---|---|---|---|"]
    for case in cases:
        for m in methods:
            d = vals[(case, m, "dice_liver")]
            if not d:
                continue
            empty = int(sum(vals[(case, m, "empty_prediction")]))
            lines.append(f"| {case} ({about[case][0]}) | {about[case][1]} | {m} | {len(d)} | {one(d, 3)} | "
                         f"{one(vals[(case, m, 'hd95_liver_mm')], 1) if vals[(case, m, 'hd95_liver_mm')] else '-'} | "
                         f"{np.mean([v[0] for v in vol[(case, m)]]):.0f} / {vol[(case, m)][0][1]:.0f} | "
                         f"{empty} of {len(d)} |")
    lines += ["", "| method | held-out cases | Dice, mean ± sd over the cases (each case: mean over its seeds) | "
                  "HD95 (mm), same |", "|---|---|---|---|"]
    means: dict[str, dict[str, float]] = {}
    for m in methods:
        per = {c: float(np.mean(vals[(c, m, "dice_liver")])) for c in cases if vals[(c, m, "dice_liver")]}
        hd = [float(np.mean(vals[(c, m, "hd95_liver_mm")])) for c in cases if vals[(c, m, "hd95_liver_mm")]]
        means[m] = per
        lines.append(f"| {m} | {len(per)} | {cell(list(per.values()))} | {cell(hd, 1)} |")
    if len(methods) == 2:
        a, b = methods
        shared = [c for c in cases if c in means[a] and c in means[b]]
        wins = {m: sum(means[m][c] > means[o][c] for c in shared) for m, o in ((a, b), (b, a))}
        lines += ["", "Higher Dice on the same held-out case: " + "; ".join(
            f"`{m}` on {wins[m]} of {len(shared)}" for m in sorted(wins, key=lambda m: -wins[m])) + "."]
    return "\n".join(lines) + failed_note()


def load_doc(name: str) -> dict:
    """A results file that is one JSON object (a script's own summary) rather than a list of records."""
    path = RESULTS / f"{name}.json"
    if not path.exists():
        raise Missing(f"_No results file `docs/results/{name}.json` yet: run `{SOURCE.get(name, '?')}`._")
    return json.loads(path.read_text())


def promptable_lits() -> str:
    d = load_doc("promptable_lits")
    lines = ["| prompt | structure | n | Dice mean ± sd | median [IQR] |", "|---|---|---|---|---|"]
    for key, what, unit in (("liver_per_slice", "liver", "slices"), ("tumour_per_lesion", "tumour", "lesions")):
        s = d[key]
        lines.append(f"| box on every slice | {what} | {s['n']} {unit} | {s['mean']:.3f} ± {s['std']:.3f} | "
                     f"{s['median']:.3f} [{s['q25']:.3f}, {s['q75']:.3f}] |")
    prop = ["| propagation | structure | boxes | 3D Dice | HD95 (mm) | decoder s per slice |",
            "|---|---|---|---|---|---|"]
    groups: dict[tuple[str, str, int], list[dict]] = {}
    for r in d["propagation"]:
        kind = "liver" if r["structure"] == "liver" else "tumour"
        groups.setdefault((r["method"], kind, r["boxes"]), []).append(r)
    for (method, kind, boxes), rs in groups.items():
        dices, hds = [r["dice_3d"] for r in rs], [r["hd95"] for r in rs]
        where = (f"slice {rs[0]['prompt_slices'][0]}" if boxes == 1 else
                 f"slices {', '.join(str(k) for k in rs[0]['prompt_slices'])}") if kind == "liver" else \
            f"{len(rs)} lesions of >= {d['min_lesion_voxels_3d']} voxels, mean"
        spread = f" ± {np.std(dices, ddof=1):.3f}" if len(rs) > 1 else ""
        prop.append(f"| {method} | {kind} ({where}) | {boxes} | {np.mean(dices):.3f}{spread} | "
                    f"{np.mean(hds):.1f} | {np.mean([r['decoder_seconds_per_slice'] for r in rs]):.3f} |")
    return ("\n".join(lines) + "\n\n" + "\n".join(prop) +
            f"\n\nModel SHA-256 `{d['model_sha256'][:16]}...`, box margin {d['box_margin_voxels']:g} voxels, preset "
            f"{d['preset']}; image encoder {d['embed_seconds_per_slice']:.2f} s per slice on this CPU "
            f"({d['threads']} threads), once per slice (cached: prompts and corrections run the decoder only).")


def promptable_organs() -> str:
    """One box per TotalSegmentator structure: per-scan summary (mean ± sd, median over structures) and every
    structure's row, single-axis propagation beside the three-axis fusion where it ran."""
    d = load_doc("promptable_organs")
    rows = d["structures"]

    def cell(r: dict, key: str) -> str:
        if key not in r:
            return "-"
        h = r[key]["hd95_mm"]
        return f"{r[key]['dice_3d']:.3f} / " + ("empty" if h is None else f"{h:.1f}")

    fused_any = any("fused" in r for r in rows)
    summary = ["| scan | structures | one box: 3D Dice mean ± sd | median | three axes fused: 3D Dice mean ± sd | "
               "median | fused better on |", "|---|---|---|---|---|---|---|"]
    for scan in d["scans"]:
        rs = [r for r in rows if r["scan"] == scan["scan"]]
        if not rs:
            continue
        one = np.array([r["one_box"]["dice_3d"] for r in rs])
        fused = [r["fused"]["dice_3d"] for r in rs if "fused" in r]
        f = (f"{np.mean(fused):.3f} ± {np.std(fused, ddof=1):.3f} | {np.median(fused):.3f} | "
             f"{sum(x > y for x, y in zip(fused, one))} of {len(fused)}") if len(fused) > 1 else "- | - | -"
        summary.append(f"| {scan['scan']} ({'x'.join(map(str, scan['shape']))}, "
                       f"{'x'.join(f'{v:.3g}' for v in scan['spacing_mm'])} mm) | {len(rs)} | "
                       f"{one.mean():.3f} ± {one.std(ddof=1):.3f} | {np.median(one):.3f} | {f} |")
    per = ["| scan | structure | voxels | slices | one box: Dice / HD95 mm | fused: Dice / HD95 mm |",
           "|---|---|---|---|---|---|"]
    per += [f"| {r['scan']} | {r['structure']} | {r['voxels']} | {r['slices']} | {cell(r, 'one_box')} | "
            f"{cell(r, 'fused')} |" for r in sorted(rows, key=lambda r: (r["scan"], -r["one_box"]["dice_3d"]))]
    if not fused_any:                                  # a run without fusion: no empty columns
        summary = ["|".join(c.split("|")[:5]) + "|" for c in summary]
        per = ["|".join(c.split("|")[:6]) + "|" for c in per]
    times = ", ".join(f"{s['scan']} {s['embed_seconds_per_slice']:.2f} s" for s in d["scans"])
    return ("\n".join(summary) + "\n\n" + "\n".join(per) + "\n\n"
            + f"Labels: {d['labels']}. Model SHA-256 `{d['model_sha256'][:16]}...`, box "
            f"margin {d['box_margin_voxels']:g} voxels, structures of at least {d['min_voxels']} voxels on at "
            f"least 3 axial slices; image encoder per slice ({d['threads']} threads): {times}.")


def registration() -> str:
    d = load_doc("registration")
    a = ["| known transform (Colin27, other grid) | error mean (mm) | error max (mm) | seconds |", "|---|---|---|---|"]
    a += [f"| {r['transform']} | {r['error_mm_mean']:.2f} | {r['error_mm_max']:.2f} | {r['seconds']:.0f} |"
          for r in d["known_transforms"]]
    b = ["| pair | mode | similarity | Dice before | Dice after | folding fraction | seconds |",
         "|---|---|---|---|---|---|---|"]
    b += [f"| {r['pair']} | {r['mode']} | {r['similarity']} | {r['dice_before']:.3f} | {r['dice_after']:.3f} | "
          f"{r['folding_fraction']:.4f} | {r['seconds']:.0f} |" for r in d["pairs"]]
    return "\n".join(a) + "\n\n" + "\n".join(b)


def text_prompt() -> str:
    recs = load("text_prompt")
    names = ["spleen", "right kidney", "left kidney", "liver", "stomach", "liver tumour"]
    dice = grid([r for r in recs if r["metric"].startswith("dice_")], lambda r: (r["method"],),
                names + ["foreground"], lambda r: r["metric"][len("dice_"):], ["model and prompt"])
    absent = grid([r for r in recs if r["metric"].startswith("predicted_when_absent_")], lambda r: (r["method"],),
                  names, lambda r: r["metric"][len("predicted_when_absent_"):], ["model and prompt"])
    return (dice + "\n\nCells: test Dice per class (slices where it is present), mean ± sample sd over seeds.\n\n"
            + absent + "\n\nCells: fraction of test slices *without* the class on which the text-prompted model "
            "predicted it anyway (lower is better).")


# -- speed: benchmark tables (benchmarks/*.py --json) ------------------------------------------------------------
FRACTION = "fraction of the matmul peak of its precision"


def _provenance(recs: list[dict]) -> dict:
    return next((r["provenance"] for r in recs if "provenance" in r), {})


def _bench_table(name: str, rows: Callable[[dict], tuple], headers: list[str], precision_of: Callable[[dict], str],
                 digits: int) -> str:
    """A benchmark's records as a table with each row's precision; a peak fraction that would be of an emulated
    peak is ``n/a`` (the benchmark does not write it), and the run's provenance and notes follow the table."""
    recs = load(name)
    prov = _provenance(recs)
    timed = [r for r in recs if r["method"] != "machine" and r["split"] == "bench"]
    metrics = sorted({r["metric"] for r in timed})
    cells: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in timed:
        cells[(*rows(r), precision_of(r))][r["metric"]].append(float(r["value"]))
    cols = [*headers, "precision", *metrics]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    native = prov.get("native_bf16", True)
    for key in sorted(cells):
        row = []
        for m in metrics:
            if not cells[key][m] and m == FRACTION and key[-1] == "bf16" and not native:
                row.append("n/a")
            else:
                row.append(cell(cells[key][m], digits))
        out.append("| " + " | ".join([*map(str, key), *row]) + " |")
    return "\n".join(out) + "\n\n" + _bench_note(recs, prov)


def _bench_note(recs: list[dict], prov: dict) -> str:
    if not prov:
        return "_No provenance in this results file: run the benchmark again._"
    peak = {r["metric"].split()[0]: r["value"] for r in recs if r["method"] == "machine"}
    flags = ", ".join(prov["cpu_flags"]) or "none of avx2, avx512f, avx512_vnni, avx_vnni, avx512_bf16, amx_bf16"
    load = prov.get("load_average_1min")
    shared = f", load average {load:g} when written" if load is not None else ""
    text = (f"Measured {prov['date'][:10]} on {prov['device']} ({prov['threads']} threads{shared}; CPU flags: {flags}; "
            f"native bf16: {'yes' if prov['native_bf16'] else 'no'}), torch {prov['torch']}, commit "
            f"`{prov['commit'][:10]}`{' with uncommitted changes' if prov.get('uncommitted_changes') else ''}: "
            f"`{prov['command']}`. Precision asked: {prov['precision'].get('asked', '?')}.")
    if peak:
        text += " Matmul peak in this run: " + ", ".join(
            f"{p} {v:.1f} GFLOP/s{' (emulated)' if p == 'bf16' and not prov['native_bf16'] else ''}"
            for p, v in sorted(peak.items(), reverse=True)) + "."
    checks = [r for r in recs if r["split"] == "one-step check"]
    if checks:
        text += (f" Before timing, {checks[0]['task']} ({checks[0]['method']}): "
                 + ", ".join(f"{r['metric']} {r['value']:.1e}" for r in checks) + ".")
    if not prov["native_bf16"]:
        text += " No fraction of the bf16 peak is given: bf16 is emulated here (`n/a`)."
    notes = prov.get("notes", [])
    return text + ("\n\n" + "\n".join(f"- {n}" for n in notes) if notes else "")


def _bench_mae(name: str) -> str:
    prov = _provenance(load(name))
    return _bench_table(name, lambda r: (r["method"],), ["implementation"],
                        lambda r: prov.get("precision", {}).get(r["method"], "fp32"), 2)


def _bench_clip() -> str:
    prov = _provenance(load("bench_clip"))
    used = prov.get("precision", {})
    # only the whole training step runs at each side's precision; the loss-only and projection parts are fp32
    return _bench_table("bench_clip", lambda r: (r["task"], r["method"]), ["part", "implementation"],
                        lambda r: used.get(r["method"], "fp32") if r["task"].startswith("step") else "fp32", 3)


def _bench_promptable(name: str = "bench_promptable") -> str:
    prov = _provenance(load(name))
    return _bench_table(name, lambda r: (r["method"],), ["implementation"],
                        lambda r: prov.get("precision", {}).get(r["method"], "fp32"), 3)


def _value(name: str, method: str, metric: str, task: str | None = None) -> float | None:
    try:
        recs = load(name)
    except Missing:
        return None
    vals = [r["value"] for r in recs if r["method"] == method and r["metric"] == metric
            and (task is None or r["task"].startswith(task))]
    return vals[0] if vals else None


def _used(name: str, method: str) -> str:
    """The precision ``method`` ran in, in the results file ``name`` ("?" where the file has no provenance)."""
    try:
        return _provenance(load(name)).get("precision", {}).get(method, "?")
    except Missing:
        return "?"


def _speedup(name: str, part: str) -> float | None:
    """open_clip's time over mmfm's in one part of the CLIP benchmark (> 1: mmfm is faster)."""
    theirs, ours = _value(name, "open_clip", "ms", part), _value(name, "mmfm", "ms", part)
    return theirs / ours if theirs and ours else None


def speed_targets() -> str:
    """Issue 11's targets beside the measured numbers of the benchmark results (this machine's), each side at its
    best working precision (named in the row)."""
    def f(v: float | None, fmt: str = "{:.2f}") -> str:
        return "not measured" if v is None else fmt.format(v)

    def vs(name: str, ours: str, theirs: str) -> str:
        return f"{_used(name, ours)} vs {_used(name, theirs)}"

    rows = [
        (f"MAE step, mmfm / MONAI as shipped ({vs('bench_mae', 'mmfm', 'monai')})", ">= 2.0",
         f(_value("bench_mae", "monai", "mmfm speed-up over it"))),
        (f"MAE step, mmfm / MONAI with flash attention ({vs('bench_mae', 'mmfm', 'monai+flash')})", "-",
         f(_value("bench_mae", "monai+flash", "mmfm speed-up over it"))),
        (f"MAE step, fraction of the matmul peak of its precision ({_used('bench_mae', 'mmfm')})", ">= 0.50",
         f(_value("bench_mae", "mmfm", FRACTION))),
        (f"MAE step ViT-B/16, mmfm / MONAI ({vs('bench_mae_vit_b', 'mmfm', 'monai')})", ">= 2.0",
         f(_value("bench_mae_vit_b", "monai", "mmfm speed-up over it"))),
        (f"MAE step ViT-B/16, fraction of the matmul peak ({_used('bench_mae_vit_b', 'mmfm')})", ">= 0.50",
         f(_value("bench_mae_vit_b", "mmfm", FRACTION))),
        (f"CLIP step, mmfm / open_clip, same towers ({vs('bench_clip', 'mmfm', 'open_clip')})", ">= 1.5",
         f(_speedup("bench_clip", "step"))),
        ("CLIP loss alone, mmfm / open_clip (batch 2048, fp32)", "-", f(_speedup("bench_clip", "loss (batch 2048"))),
        (f"LiteMedSAM s per 2D box prompt ({_used('bench_promptable', 'mmfm')})", "<= 0.3",
         f(_value("bench_promptable", "mmfm", "s per 2D prompt"))),
        (f"LiteMedSAM speed-up over the package as shipped ({vs('bench_promptable', 'mmfm', 'shipped')})", "-",
         f(_value("bench_promptable", "shipped", "mmfm speed-up over it"))),
        ("LiteMedSAM max per-slice Dice change (same precision)", "<= 0.005",
         f(_value("bench_promptable", "mmfm", "max per-slice Dice difference (same precision)"), "{:.5f}")),
        ("LiteMedSAM s per second prompt (embedding reused)", "<= 0.05",
         f(_value("bench_promptable", "mmfm", "s per second prompt"), "{:.3f}")),
        ("LiteMedSAM s per 100 propagated slices", "< 40", f(_value("bench_promptable", "mmfm",
                                                                     "s per 100 propagated slices"), "{:.0f}")),
        ("LiteMedSAM by ONNX Runtime (fp32), speed-up over the package as shipped", ">= 4.0",
         f(_value("bench_promptable", "mmfm onnx", "speed-up over shipped"))),
        ("LiteMedSAM by ONNX Runtime (int8 encoder), speed-up over the package as shipped", ">= 4.0",
         f(_value("bench_promptable", "mmfm onnx-int8", "speed-up over shipped"))),
        ("LiteMedSAM int8 encoder: mean Dice change against fp32", "<= 0.01",
         f(_value("bench_promptable", "mmfm onnx-int8", "mean Dice change against torch fp32"), "{:.4f}")),
        ("LiteMedSAM int8 encoder: largest per-slice Dice change against fp32", "<= 0.05",
         f(_value("bench_promptable", "mmfm onnx-int8", "max per-slice Dice change against torch fp32"), "{:.4f}")),
        ("LiteMedSAM by ONNX Runtime, s per second prompt (embedding reused)", "<= 0.05",
         f(_value("bench_promptable", "mmfm onnx", "s per second prompt"), "{:.3f}")),
        ("LiteMedSAM by ONNX Runtime, s per 100 propagated slices", "<= 40",
         f(_value("bench_promptable", "mmfm onnx", "s per 100 propagated slices"), "{:.0f}")),
        ("Step on files / in memory, first epoch", "<= 1.10", f(_value("bench_data", "files", "time / in-memory"))),
        ("Step on files / in memory, data.cache filled", "<= 1.10", f(_value("bench_data", "files, cached",
                                                                            "time / in-memory"))),
        ("mmfm quickstart, minutes", "< 15", f(_value("bench_quickstart", "mmfm", "minutes"), "{:.1f}")),
    ]
    try:
        native = _provenance(load("bench_mae")).get("native_bf16")
    except Missing:
        native = None
    rows += [("matmul peak here (MAE run), fp32 GFLOP/s", "-",
              f(_value("bench_mae", "machine", "fp32 matmul GFLOP/s"), "{:.0f}")),
             ("matmul peak here (MAE run), bf16 GFLOP/s" + (" (emulated)" if native is False else ""), "-",
              f(_value("bench_mae", "machine", "bf16 matmul GFLOP/s"), "{:.1f}"))]
    used = _used("bench_promptable", "mmfm")
    gflop = _value("bench_promptable", "mmfm", "GFLOP per prompt")
    peak = _value("bench_promptable", "machine", f"{used} matmul GFLOP/s")
    frac, speedup = _value("bench_mae", "mmfm", FRACTION), _value("bench_mae", "monai", "mmfm speed-up over it")
    rows += [
        (f"LiteMedSAM s per prompt at 100% of the {used} peak (a floor)", "-",
         f(gflop / peak if gflop and peak else None)),
        # mmfm at 2x MONAI's speed runs its own FLOPs 2 / speed-up times faster than now
        ("MAE: mmfm's fraction of the peak a 2.0x speed-up over MONAI needs", "-",
         f(frac * 2 / speedup if frac and speedup else None)),
    ]
    lines = ["| what | target | measured |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def segmentation_foundation() -> str:
    """LiteMedSAM's encoder (full, frozen, LoRA) vs the same network from scratch: Dice per structure and label
    fraction, then each arm minus scratch paired by seed (the seed draws the labelled slices and the decoder)."""
    recs = [r for r in load("segmentation_foundation") if r["split"] == "test"
            and r["metric"] in ("dice_liver", "dice_tumour")]
    fracs = sorted({r["label_fraction"] for r in recs})
    methods = sorted({r["method"] for r in recs})
    table = grid(recs, lambda r: (r["method"], f"{r['label_fraction']:g}"), ["dice_liver", "dice_tumour"],
                 lambda r: r["metric"], ["method", "labelled fraction"])
    cols = [f"{m} at {f:g}" for f in fracs for m in ("dice_liver", "dice_tumour")]
    pairs = [(m, "litemedsam-random") for m in methods if m != "litemedsam-random"]
    return (table + "\n\nPaired by seed, each start minus the same network from scratch (mean ± sd of the per-seed "
            "differences, n seeds both arms hold):\n\n"
            + paired_table(recs, pairs, cols, lambda r: f"{r['metric']} at {r['label_fraction']:g}"))


def vfm_folder() -> str:
    """The same encoders, protocols and seeds through the user-data path, beside the mini-array path."""
    via_folder = [r for r in load("vfm_folder") if r["metric"] == "balanced_accuracy" and r["split"] == "test"]
    methods = {r["method"] for r in via_folder}
    arrays = [dict(r, method=r["method"]) for r in load("vfm") if r["metric"] == "balanced_accuracy"
              and r["method"] in methods and r["split"] == "test"]
    rows = [dict(r, path="mini arrays") for r in arrays] + [dict(r, path="plain folder") for r in via_folder]
    fr = sorted({r["label_fraction"] for r in rows})
    return grid(rows, lambda r: (r["task"].split("/")[-1], r["method"], r["path"]), [f"{f:g}" for f in fr],
                lambda r: f"{r['label_fraction']:g}", ["protocol", "method", "data path"]) + \
        "\n\nColumns: fraction of the training labels; cells: test balanced accuracy, mean ± sd over seeds 0-2."


def pretraining_corpus() -> str:
    """Each starting point by linear probe on mini's tissue task, and each against random init paired by seed (a
    seed pretrains, initialises and draws the labels, so the arms share what it draws)."""
    recs = [r for r in load("pretraining_corpus") if r["metric"] == "balanced_accuracy" and r["split"] == "test"]
    fr = [f"{f:g}" for f in sorted({r["label_fraction"] for r in recs})]
    col = lambda r: f"{r['label_fraction']:g}"   # noqa: E731
    methods = sorted({r["method"] for r in recs})
    random = [m for m in methods if m.endswith("-random")]
    table = grid(recs, lambda r: (r["method"],), fr, col, ["starting point"])
    pairs = [(m, random[0]) for m in methods if m not in random] if random else []
    seeds = sorted({r["seed"] for r in recs})
    return table + "\n\n" + paired_table(recs, pairs, fr, col) + \
        f"\n\nColumns: fraction of the training labels; cells: test balanced accuracy, mean ± sample sd over seeds " \
        f"{', '.join(map(str, seeds))}; paired rows: the arm minus random init, seed by seed."


TEXT_GEN = ["BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr-D", "CE_precision", "CE_recall", "CE_F1"]
VQA = ["accuracy", "closed_accuracy", "open_exact_match", "open_token_f1"]
def adapt_continual() -> str:
    recs = load("adapt_continual")
    final = [r for r in recs if r["split"] == "final"]
    summary = grid(final, lambda r: (r["method"],), ["final_mean", "mean_forgetting", "routing_accuracy"],
                   lambda r: r["metric"], ["method"])
    curves = [r for r in recs if r["split"].startswith("after:")]
    order = list(dict.fromkeys(r["split"] for r in curves))
    tasks = list(dict.fromkeys(r["dataset"] for r in curves))
    matrix = grid(curves, lambda r: (r["method"], f"{tasks.index(r['dataset']) + 1}. {r['dataset']} "
                                                  f"({r['metric']})"), order, lambda r: r["split"],
                  ["method", "task (metric)"])
    return (summary + "\n\n`final_mean`: every task's metric after the last task; `mean_forgetting`: best earlier "
            "value minus the final one, averaged over all but the last task (0 = nothing forgotten); "
            "`routing_accuracy`: how often the gate sent a task's test input to that task's expert (after the last "
            "task, mean over tasks); `continual-moe-oracle`: each task through its own expert.\n\nEach task (rows) "
            "after learning each task in turn (columns):\n\n" + matrix)


def litemedsam_liver() -> str:
    recs = load("litemedsam_liver")
    n = next(int(r["value"]) for r in recs if r["metric"] == "slices")
    what = {"liver_class_as_evaluated": "liver class, one box per class, tumour painted over it (as `evaluate` "
                                        "scores a multi-class model)",
            "liver_class_not_painted_over": "liver class, its own box, tumour not painted over",
            "whole_liver_own_box": "whole liver (liver + tumour), its own tight box",
            "whole_liver_box_2px": "whole liver (liver + tumour), box widened by 2 pixels"}
    lines = ["| definition | liver Dice |", "|---|---|"]
    lines += [f"| {what[r['metric']]} | {r['value']:.3f} |" for r in recs if r["metric"] in what]
    return "\n".join(lines) + (f"\n\nLiteMedSAM as shipped on the same {n} slices (mini's LiTS test slab), per-slice "
                               "Dice, mean over slices.")


def adapt_federated_kill() -> str:
    """Sites that trained per round, then the final model's test balanced accuracy on each site that evaluated;
    the run's site-weighted mean is labelled by the sites it covers (a killed site reports nothing)."""
    recs = load("adapt_federated_kill")
    tests = [r for r in recs if r["task"] != "federation" and r["metric"] == "balanced_accuracy"]
    sites = sorted(r["dataset"].split("@", 1)[1] for r in tests if "@" in r["dataset"])

    def row(r: dict) -> tuple[str]:
        if r["task"] == "federation":
            return ("sites that trained",)
        if "@" in r["dataset"]:
            return (f"test balanced accuracy, {r['dataset']}",)
        return (f"test balanced accuracy, mean over the sites that evaluated ({', '.join(sites)})",)

    rounds = sorted({r["split"] for r in recs if r["task"] == "federation"}, key=lambda s: int(s.split()[-1]))
    return grid([r for r in recs if r["task"] == "federation"] + tests, row, rounds + ["test"],
                lambda r: r["split"], ["measure"], 3)


def adapt_federated() -> str:
    recs = [r for r in load("adapt_federated") if r["split"] == "test" and r["metric"] == "balanced_accuracy"]
    where = ["mini/patches2d", "mini/patches2d@CT", "mini/patches2d@MR"]
    pairs = [("federated-iid-fedavg", "centralised"), ("federated-modality-fedavg", "centralised"),
             ("federated-modality-fedprox", "federated-modality-fedavg")]
    return grid(recs, lambda r: (r["method"],), where, lambda r: r["dataset"], ["training"]) + (
        "\n\nTest balanced accuracy of each final model on all of mini's test patches and on each modality's share "
        "(CT: LiTS background/liver/tumour; MR: brain grey/white matter), mean ± sd over seeds. "
        "`federated-modality-*`: one site per modality (non-IID: the sites hold disjoint classes, CT about five "
        "times more samples); `federated-iid-*`: the same data split at random into 2 sites.\n\n"
        "The same runs paired by seed (every arm was run with `train.seed` 0, 1, 2; per-seed differences of test "
        "balanced accuracy, mean ± sample sd of the differences, n = seeds both arms hold):\n\n"
        + paired_table(recs, pairs, where, lambda r: r["dataset"]))


LR = re.compile(r"(?P<arm>.+)\[lr=(?P<lr>[^\]]+)\]")


def adapt_peft() -> str:
    """LoRA, full fine-tuning and the linear probe from one learning-rate sweep (methods ``<arm>[lr=<lr>]``, the
    same seeds at every rate): each arm at the rate with the best mean VALIDATION balanced accuracy, its TEST
    numbers at that rate, and LoRA minus full fine-tuning paired by seed."""
    recs = load("adapt_peft")
    swept = [dict(r, arm=m.group("arm"), lr=float(m.group("lr"))) for r in recs if (m := LR.fullmatch(r["method"]))]
    cols = ["balanced_accuracy", "auroc", "trainable_fraction"]
    if not swept:   # an older file: one learning rate per arm, set by hand; shown as such, nothing chosen
        return (grid([r for r in recs if r["metric"] in cols], lambda r: (r["method"],), cols, lambda r: r["metric"],
                     ["method"], 4) + "\n\nOne learning rate per arm, set by hand (no sweep, no validation scores): "
                f"not a comparison at each arm's best rate; `{SOURCE['adapt_peft']}` runs the sweep.")
    val = [r for r in swept if r["split"] == "val" and r["metric"] == "balanced_accuracy"]
    # the rate is chosen on the seeds that ran every rate of the arm (the sweep), so a rate run with more seeds
    # afterwards (the chosen one) is not compared on different seeds
    sweep_val, chosen = [], {}
    for arm in sorted({r["arm"] for r in swept}):
        mine = [r for r in val if r["arm"] == arm]
        by_lr = [{r["seed"] for r in mine if r["lr"] == lr} for lr in {r["lr"] for r in mine}]
        seeds = set.intersection(*by_lr) if by_lr else set()
        sweep_val += [r for r in mine if r["seed"] in seeds]
        best = best_on_val([r for r in mine if r["seed"] in seeds], sorted({r["method"] for r in mine}))
        if best:
            chosen[best[0]] = arm
    lrs = sorted({r["lr"] for r in swept})
    sweep = grid(sweep_val, lambda r: (r["arm"],), [f"{lr:g}" for lr in lrs], lambda r: f"{r['lr']:g}", ["arm"], 4)
    at = [dict(r, method=f"{chosen[r['method']]} (lr {r['lr']:g})") for r in swept if r["method"] in chosen
          and r["split"] in ("test", "train")]
    table = grid([r for r in at if r["metric"] in cols], lambda r: (r["method"],), cols, lambda r: r["metric"],
                 ["arm (learning rate chosen on val)"], 4)
    names = {arm: f"{arm} (lr {float(LR.fullmatch(m).group('lr')):g})" for m, arm in chosen.items()}
    pairs = [(names[a], names[b]) for a, b in (("vit_mini-mae-lora", "vit_mini-mae-full"),
                                               ("vit_mini-mae-lora", "vit_mini-mae-linear_probe"))
             if a in names and b in names]
    paired = paired_table([r for r in at if r["split"] == "test"], pairs, ["balanced_accuracy", "auroc"],
                          lambda r: r["metric"], 4)
    return (f"Validation balanced accuracy of every arm at every learning rate (the sweep: mean ± sample sd over "
            f"the seeds that ran every rate of the arm):\n\n{sweep}\n\nEach arm at its learning rate of best mean "
            f"validation balanced accuracy in the sweep, on the test split (mean ± sample sd over every seed run at "
            f"that rate):\n\n{table}\n\nPaired by seed (every arm was run with the same `train.seed` values; "
            f"per-seed differences on test, mean ± sample sd):\n\n{paired}")


def adapt_peft_sam() -> str:
    cols = ["dice_liver", "dice_tumour", "trainable_fraction"]
    recs = [r for r in load("adapt_peft_sam") if r["metric"] in cols]
    pairs = [("litemedsam-lora", "litemedsam-decoder_only"), ("litemedsam-full", "litemedsam-decoder_only"),
             ("litemedsam-lora", "litemedsam-full")]
    return (grid(recs, lambda r: (r["method"],), cols, lambda r: r["metric"], ["method"], 4) +
            "\n\nThe trained arms paired by seed (per-seed differences of test Dice, mean ± sample sd):\n\n" +
            paired_table([r for r in recs if r["split"] == "test"], pairs, cols[:2], lambda r: r["metric"], 4))


def adapt_missing() -> str:
    recs = [r for r in load("adapt_missing") if r["metric"] == "balanced_accuracy" and r["split"] != "train"]
    cols = ["test", "test-noCT", "test-noPT"]
    pairs = [("early-dropout0.5", "early-dropout0.0"), ("late-dropout0.5", "late-dropout0.0"),
             ("late-dropout0.0", "early-dropout0.0")]
    return (grid(recs, lambda r: (r["method"],), cols, lambda r: r["split"], ["fusion, dropout"]) +
            "\n\nPaired by seed (every variant was run with the same `train.seed` values; per-seed differences of "
            "balanced accuracy, mean ± sample sd):\n\n" + paired_table(recs, pairs, cols, lambda r: r["split"]))


def trust_calibration() -> str:
    cols = ["balanced_accuracy", "ece_unscaled", "ece", "brier_unscaled", "brier", "temperature"]
    recs = [r for r in load("trust_calibration") if r["metric"] in cols]
    return grid(recs, lambda r: (r["method"], r["split"]), cols, lambda r: r["metric"], ["model", "split"]) + (
        "\n\n`*_unscaled`: the model as trained; `ece`, `brier`: after temperature scaling fitted on the validation "
        "split (so its val rows are the fit itself). ECE: 15 equal-width top-label bins. Mean ± sample sd over seeds.")


def trust_pointing() -> str:
    recs = load("trust_pointing")
    out = []
    for task in sorted({r["dataset"] for r in recs}):
        rs = [r for r in recs if r["dataset"] == task and r["metric"].startswith("hit@")]
        acc = [r for r in recs if r["dataset"] == task and r["metric"] == "accuracy"]
        out += [f"**{task}**", "", grid(rs, lambda r: (r["method"],), ["hit@0px", "hit@3px"], lambda r: r["metric"],
                                         ["model:method"]), "",
                grid(acc, lambda r: (r["method"],), ["accuracy"], lambda r: r["metric"], ["classifier"]), ""]
    return "\n".join(out).rstrip()


def trust_dp() -> str:
    cols = ["balanced_accuracy", "dp_epsilon", "epsilon_rdp_recomputed", "epsilon_prv", "noise_multiplier"]
    recs = [r for r in load("trust_dp") if r["metric"] in cols and r["split"] in ("test", "train")]
    return grid(recs, lambda r: (r["method"],), cols, lambda r: r["metric"], ["run"]) + (
        "\n\n`dp_epsilon`: what the run reports (privacy.json); `epsilon_rdp_recomputed` and `epsilon_prv`: Opacus's "
        "RDP and PRV accountants run again here on the run's noise multiplier, sample rate and steps (delta 1e-5).")


def trust_deid() -> str:
    recs = load("trust_deid")
    cols = ["files", "written", "skipped", "burned_in_flagged", "files_with_leaks", "pixel_identical",
            "pydicom_reread", "mmfm_readable", "mmfm_same_geometry"]
    table = grid([r for r in recs if r["split"] == "all"], lambda r: (r["dataset"],), cols, lambda r: r["metric"],
                 ["source"], 0)
    leaks = [r for r in recs if r["split"] == "leaks"]
    return table + "\n\nIdentifying values left, by attribute: " + (
        ", ".join(f"{r['metric']} ({r['value']:g} files)" for r in leaks) if leaks else "none") + "."


GENERATORS: dict[str, Callable[[], str]] = {
    "label-efficiency": label_efficiency,
    "label-efficiency-litemedsam": label_efficiency_litemedsam,
    "vfm-findings": vfm_findings,
    "quickstart-selection": quickstart_selection,
    "quickstart": quickstart_table,
    "quickstart-headline": quickstart_headline,
    "section-matching": section_matching,
    "labeller": labeller,
    "vlm": lambda: _metric_table("vlm", ["accuracy", "chance_accuracy", "balanced_accuracy", "chance_balanced_accuracy",
                                         "auroc", "i2t_R@1", "i2t_chance_R@1", "i2t_mAP", "t2i_R@1", "t2i_mAP",
                                         "t2i_chance_mAP"]),
    "report-generation-2d": lambda: _metric_table("report_generation_2d", TEXT_GEN),
    "report-generation-3d": lambda: _metric_table("report_generation_3d", TEXT_GEN),
    "vqa-2d": lambda: _metric_table("vqa_2d", VQA),
    "summarization-prompt": lambda: grid([r for r in load("summarization_prompt") if r["metric"] in
                                          ("ROUGE-L", "CIDEr-D", "CE_precision", "CE_recall", "CE_F1", "reports")],
                                         lambda r: (r["method"],), ["ROUGE-L", "CIDEr-D", "CE_precision", "CE_recall",
                                                                   "CE_F1", "reports"], lambda r: r["metric"],
                                         ["wording (validation)"]),
    "summarization": lambda: _metric_table("summarization", ["BLEU-1", "BLEU-4", "ROUGE-L", "CIDEr-D", "CE_precision",
                                                             "CE_recall", "CE_F1", "reports"]),
    "vqa-3d": lambda: _metric_table("vqa_3d", VQA),
    "bench-mae": lambda: _bench_mae("bench_mae"),
    "real-3d": real_3d,
    "small-data": small_data,
    "promptable-lits": promptable_lits,
    "promptable-organs": promptable_organs,
    "registration": registration,
    "detection": lambda: grid([r for r in load("detection") if r["split"] == "test"], lambda r: (r["method"],),
                              ["map@0.1", "map@0.5", "sensitivity@0.5fp", "sensitivity@1fp", "froc"],
                              lambda r: r["metric"], ["encoder"]),
    "vfm-folder": vfm_folder,
    "pretraining-corpus": pretraining_corpus,
    "text-prompt": text_prompt,
    "segmentation": lambda: grid([r for r in load("segmentation") if r["split"] == "test"],
                                 lambda r: (r["method"], f"{r['label_fraction']:g}"),
                                 ["dice_liver", "dice_tumour", "dice_foreground"], lambda r: r["metric"],
                                 ["method", "labelled fraction"]),
    "segmentation-foundation": segmentation_foundation,
    "bench-memory": lambda: grid(load("bench_memory"), lambda r: (r["method"],), ["peak_rss_main_MB",
                                 "peak_rss_with_workers_MB", "peak_ratio_to_smallest", "scan_s", "wall_s"],
                                 lambda r: r["metric"], ["corpus"], 2),
    "bench-mae-vit-b": lambda: _bench_mae("bench_mae_vit_b"),
    "bench-promptable": _bench_promptable,
    "bench-promptable-amx": lambda: _bench_promptable("bench_promptable_amx"),
    "bench-data": lambda: grid(load("bench_data"), lambda r: (r["method"],), sorted(
        {r["metric"] for r in load("bench_data")}), lambda r: r["metric"], ["data"], 2),
    "speed-targets": speed_targets,
    "adapt-peft": adapt_peft,
    "adapt-peft-sam": adapt_peft_sam,
    "adapt-federated": adapt_federated,
    "trust-calibration": trust_calibration,
    "trust-pointing": trust_pointing,
    "trust-dp": trust_dp,
    "trust-deid": trust_deid,
    "bench-serve": lambda: grid(load("bench_serve"), lambda r: (r["method"],),
                                ["requests", "errors", "median_s", "p95_s", "wall_s", "alone_s"],
                                lambda r: r["metric"], ["server"], 2),
    "bench-app-second-prompt": lambda: grid(load("bench_app_second_prompt"), lambda r: (r["method"],), [
        "s first click", "s per second click (app, HTTP)", "s per second prompt (decoder)", "slices embedded"],
        lambda r: r["metric"], ["side"], 3),
    "adapt-continual": adapt_continual,
    "adapt-federated-kill": adapt_federated_kill,
    "litemedsam-liver": litemedsam_liver,
    "adapt-missing": adapt_missing,
    "bench-clip": _bench_clip,
}
BLOCK = re.compile(r"(<!-- table:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /table:(?P=name) -->)", re.S)


def render(name: str) -> str:
    if name not in GENERATORS:
        raise SystemExit(f"unknown table '{name}' (known: {', '.join(GENERATORS)})")
    FAILED.clear()
    try:
        return GENERATORS[name]() + failed_note()
    except Missing as e:
        return str(e)


def rendered(text: str, names: set[str] | None = None) -> str:
    """``text`` with every marked block (or those in ``names``) replaced by its generator's output."""
    def block(m: re.Match) -> str:
        if names is not None and m.group("name") not in names:
            return m.group(0)
        return m.group(1) + render(m.group("name")).rstrip() + "\n" + m.group(4)

    return BLOCK.sub(block, text)


def write(names: set[str] | None = None) -> None:
    for doc in DOCS:
        text = doc.read_text()
        new = rendered(text, names)
        if new != text:
            doc.write_text(new)
            print(f"updated {doc.name}")


def check(names: set[str] | None = None) -> list[str]:
    """The docs whose marked blocks differ from what the results files give now; writes nothing."""
    stale = []
    for doc in DOCS:
        text = doc.read_text()
        new = rendered(text, names)
        if new != text:
            changed = [m.group("name") for m, n in zip(BLOCK.finditer(text), BLOCK.finditer(new))
                       if m.group(0) != n.group(0)]
            stale.append(f"{doc.relative_to(ROOT)}: {', '.join(changed)}")
    return stale


def collect(name: str, folder: str, splits: list[str]) -> None:
    """The records of every ``results.json`` under ``folder`` (of ``splits``), and the failed runs a shell
    reproduce script listed in ``failed.jsonl`` files there (one ``failed_record`` per line)."""
    records = []
    for p in sorted(Path(folder).rglob("results.json")):
        records += [r for r in json.loads(p.read_text()) if r["split"] in splits and r["task"] != "pretrain"]
    for p in sorted(Path(folder).rglob("failed.jsonl")):
        records += [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    if not records:
        raise SystemExit(f"no results.json records under {folder}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(records, indent=1))
    print(f"{len(records)} records -> docs/results/{name}.json")


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["write"]:
        only = {a for a in args[1:] if not a.startswith("--")} or None
        unknown = sorted((only or set()) - set(GENERATORS))
        if unknown:
            raise SystemExit(f"unknown table(s) {unknown} (known: {', '.join(GENERATORS)})")
        if "--check" in args:   # nothing written: exit 1 naming every stale block
            stale = check(only)
            if stale:
                raise SystemExit("docs differ from docs/results (run `python scripts/doc_tables.py write`):\n  "
                                 + "\n  ".join(stale))
            print("docs match docs/results")
        else:
            write(only)
    elif args[:1] == ["collect"] and len(args) >= 3:
        splits = args[args.index("--splits") + 1:] if "--splits" in args else ["test"]
        collect(args[1], args[2], splits)
    else:
        raise SystemExit(__doc__)
