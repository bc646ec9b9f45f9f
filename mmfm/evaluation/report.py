"""A human-readable run report: Markdown with a results table and loss-curve plots."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from mmfm.evaluation.headline import run_headline
from mmfm.evaluation.loss_curves import draw_losses, loss_series
from mmfm.evaluation.metrics.calibration import CalibrationBins
from mmfm.evaluation.results import ResultRecord, write_json_atomic
from mmfm.evaluation.rounding import format_number


def plot_losses(metrics_jsonl: Path, out_png: Path, title: str) -> Path | None:
    """``out_png``: the training loss of ``metrics.jsonl`` against the step (the total and, when there are several,
    each term once: :mod:`mmfm.evaluation.loss_curves`); None when there is nothing to draw."""
    if not metrics_jsonl.exists():
        return None
    rows = [json.loads(ln) for ln in metrics_jsonl.read_text().splitlines() if ln.strip()]
    series = loss_series([r for r in rows if isinstance(r, dict)])
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    draw_losses(ax, series)
    ax.set_ylabel("training loss")
    ax.set_title(title)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def write_report(path: Path, title: str, records: Iterable[ResultRecord], plots: dict[str, Path | None],
                 notes: list[str], summary: str | None = None) -> Path:
    """report.md (and report.html) of a run. ``summary`` is the sentence the report opens with (also written to
    headline.json, which report.html shows first); without one, the run's headline result is
    (:func:`mmfm.evaluation.headline.run_headline`). Values have four significant digits."""
    records = list(records)
    summary = summary or run_headline(records)
    lines = [f"# {title}", ""]
    if summary:
        lines += [f"**{summary}**", ""]
        write_json_atomic(path.parent / "headline.json", {"text": summary})
    lines += ["| task | dataset | split | method | metric | value | seed | labels |",
             "|---|---|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r.task} | {r.dataset} | {r.split} | {r.method} | {r.metric} | {_cell(r.value)} | {r.seed} "
                     f"| {r.label_fraction:g} |")
    lines.append("")
    from mmfm.evaluation.per_case import markdown_tables, read_cases

    lines += markdown_tables(read_cases(path.parent))     # segmentation: cases_<split>.json beside the report
    for name, png in plots.items():
        if png is not None:
            lines += [f"## {name}", "", f"![{name}]({png.relative_to(path.parent)})", ""]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes]
    path.write_text("\n".join(lines) + "\n")
    from mmfm.evaluation.html_report import write_html_report

    write_html_report(path.parent, title)   # the same run as one self-contained page (report.html)
    return path


def _cell(value: object) -> str:
    """A results-table cell: numbers rounded (:func:`mmfm.evaluation.rounding.format_number`), anything else as text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format_number(value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def plot_reliability(curves: dict[str, CalibrationBins], out_png: Path, title: str) -> Path:
    """Reliability diagram: accuracy against mean confidence per bin (one line per curve; the diagonal is perfect
    calibration), with the bins' sample counts below and each curve's ECE in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, hist) = plt.subplots(2, 1, figsize=(4.5, 5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    for name, bins in curves.items():
        rows = [r for r in bins.table() if r["count"] > 0]
        ax.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], "o-",
                label=f"{name} (ECE {bins.ece():.3f})")
        hist.bar([(r["lower"] + r["upper"]) / 2 for r in rows], [r["count"] for r in rows],
                 width=1 / bins.n_bins, alpha=0.5, label=name)
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(fontsize=7)
    hist.set_xlabel("confidence (top class)")
    hist.set_ylabel("samples")
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png
