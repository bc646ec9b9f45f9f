"""`report.html`: one self-contained page per run (images embedded as data URIs, no script, no network), rebuilt
from the run's files alone by `mmfm report RUN_DIR`.

It gathers, for the run folder and every run folder below it (a quickstart holds several):
results tables with mean ± sample sd over seeds (``results.json``), the training curves (``metrics.jsonl``),
every plot the run wrote (``plots/*.png``: label-efficiency curves, reliability diagrams, segmentation cases,
saliency overlays, embedding maps, ...), calibration and privacy records, the data card (``card.json`` in the run,
or mini's card) and the configuration (``config.yaml``). Nothing here runs a model.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from mmfm.evaluation.headline import run_headline
from mmfm.evaluation.loss_curves import draw_losses, loss_series
from mmfm.evaluation.rounding import format_number, rounded

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1c2430;background:#f6f7f9}
header{background:#17324d;color:#fff;padding:14px 28px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;opacity:.8;font-size:13px}main{padding:8px 28px 40px;max-width:1200px}
section{background:#fff;border:1px solid #dde2e8;border-radius:8px;margin:16px 0;padding:10px 18px}
header p.headline{opacity:1;font-size:16px}.scroll{overflow-x:auto;max-width:100%}
h2{font-size:18px;margin:8px 0}h3{font-size:15px;margin:14px 0 6px;color:#33506e}
table{border-collapse:collapse;font-size:13px;margin:6px 0}td,th{border:1px solid #dde2e8;padding:3px 8px;
text-align:left}th{background:#eef2f6}td.n{text-align:right;font-variant-numeric:tabular-nums}
figure{display:inline-block;margin:6px 12px 6px 0;vertical-align:top}figcaption{font-size:12px;color:#555}
img{max-width:560px;border:1px solid #e5e8ec}pre{background:#f3f5f7;padding:8px;font-size:12px;overflow:auto;
max-height:420px}nav a{margin-right:12px;font-size:13px}
"""


def _png_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _fig_uri(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _number(v: Any) -> float | None:
    """``v`` as a float when it is a number (bools and numeric text are not: a run folder from elsewhere may hold
    anything), else None."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    return None


def _json_lines(path: Path) -> list[dict[str, Any]]:
    rows = []
    for ln in path.read_text(errors="replace").splitlines():
        try:
            r = json.loads(ln)
        except ValueError:
            continue                                   # a line cut by a crash, or not JSON: skipped
        if isinstance(r, dict):
            rows.append(r)
    return rows


def _curve(metrics: Path) -> str | None:
    """The training curves of ``metrics.jsonl`` (the loss, each further term once, and DP's epsilon against the step:
    :func:`mmfm.evaluation.loss_curves.loss_series`), as a data URI; points whose step or value is not a number are
    left out."""
    series = loss_series(_json_lines(metrics), extra=("epsilon",))
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    draw_losses(ax, series)
    fig.tight_layout()
    uri = _fig_uri(fig)
    plt.close(fig)
    return uri


def _results_table(records: list[Any]) -> str:
    """Rows (task, dataset, split, method, label fraction) x metrics; cells mean ± sd (n seeds). A value that is not
    a number (text, null, a list) is shown as text beside the numbers, escaped; a record that is not one is skipped."""
    cells: dict[tuple, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
    metrics: list[str] = []
    for r in records:
        if not isinstance(r, dict):
            continue
        key = tuple(str(r.get(k, "")) for k in ("task", "dataset", "split", "method")) + \
            (r.get("label_fraction", 1.0),)
        metric = str(r.get("metric", "?"))
        value = r.get("value")
        cells[key][metric].append(_number(value) if _number(value) is not None else
                                  (json.dumps(value) if isinstance(value, (dict, list)) else str(value)))
        if metric not in metrics:
            metrics.append(metric)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["task", "dataset", "split", "method", "labels", *metrics])
    body = []
    for key in sorted(cells, key=lambda k: tuple(map(str, k))):
        frac = f"{key[4]:g}" if _number(key[4]) is not None else html.escape(str(key[4]))
        tds = "".join(f"<td>{html.escape(str(v))}</td>" for v in key[:4]) + f"<td class=n>{frac}</td>"
        for m in metrics:
            got = cells[key].get(m, [])
            vs = [v for v in got if isinstance(v, float) and np.isfinite(v)]
            texts = [html.escape(v[:200]) for v in dict.fromkeys(v for v in got if isinstance(v, str))]
            if not vs:
                num = "-"
            elif len(vs) == 1:
                num = format_number(vs[0])
            else:
                num = f"{np.mean(vs):.4g} ± {np.std(vs, ddof=1):.2g} (n={len(vs)})"
            tds += f"<td class=n>{'; '.join(([num] if vs or not texts else []) + texts)}</td>"
        body.append(f"<tr>{tds}</tr>")
    return _scroll(f"<table><tr>{head}</tr>{''.join(body)}</table>")


def _cases_section(run: Path) -> str:
    """Per-case segmentation results (``cases_<split>.json``, :mod:`mmfm.evaluation.per_case`): a plain warning when
    the model predicts nothing on some case, then one table per split (at most 200 rows shown)."""
    from mmfm.evaluation.per_case import empty_note, read_cases

    parts = []
    for split, rows in read_cases(run).items():
        if not rows:
            continue
        keys = [k for k in rows[0] if k not in ("split", "index", "size_unit", "hd95_unit")]
        note = empty_note(split, rows)
        warn = f'<p style="color:#a40000;font-weight:bold">{html.escape(note)}</p>' if note else ""
        head = "".join(f"<th>{html.escape(str(k))}</th>" for k in keys)

        def cell(v: Any) -> str:
            if v is None:
                return "<td class=n>missing</td>"
            if isinstance(v, bool):
                return f"<td>{'YES' if v else ''}</td>"
            n = _number(v)
            return f"<td class=n>{format_number(n)}</td>" if n is not None else f"<td>{html.escape(str(v)[:80])}</td>"

        body = "".join("<tr>" + "".join(cell(r.get(k)) for k in keys) + "</tr>" for r in rows[:200])
        more = f"<p>... {len(rows) - 200} more rows in cases_{html.escape(split)}.csv</p>" if len(rows) > 200 else ""
        unit = f"sizes in {rows[0].get('size_unit', 'voxels')}, HD95 in {rows[0].get('hd95_unit', 'mm')}"
        parts.append(f"<h3>Per-case results: {html.escape(split)} ({html.escape(unit)})</h3>{warn}"
                     f"{_scroll(f'<table><tr>{head}</tr>{body}</table>')}{more}")
    return "".join(parts)


def _scroll(table: str) -> str:
    """``table`` in a box that scrolls sideways when the table is wider than the page."""
    return f"<div class=scroll>{table}</div>"


def _kv_table(d: dict[str, Any]) -> str:
    """A record (calibration, privacy, ...) as a two-column table, numbers to four significant digits."""
    def text(v: Any) -> str:
        if isinstance(v, float):
            return format_number(v)
        return html.escape(json.dumps(rounded(v)) if isinstance(v, (dict, list)) else str(v))

    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{text(v)}</td></tr>" for k, v in d.items())
    return _scroll(f"<table>{rows}</table>")


def _data_card(run: Path) -> dict[str, Any] | None:
    """The run's data card (its own, or mini's for a mini run); None when there is none or it cannot be read (a
    damaged side file leaves its section out of the page, it does not stop the report)."""
    for candidate in (run / "card.json", run / "data" / "card.json"):
        if candidate.is_file():
            card = _read_json(candidate)
            return card if isinstance(card, dict) else None
    config = run / "config.yaml"
    if config.is_file():
        import yaml

        try:
            cfg = yaml.safe_load(config.read_text(errors="replace")) or {}
        except yaml.YAMLError:
            return None
        data = cfg.get("data") if isinstance(cfg, dict) else None
        if isinstance(data, dict):
            from mmfm.data.source import recorded_card

            return recorded_card(data)
    return None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(errors="replace"))
    except ValueError:
        return None


def _run_section(run: Path, root: Path) -> str:
    rel = "." if run == root else str(run.relative_to(root))
    parts = [f'<section id="{html.escape(rel)}"><h2>{html.escape(rel if rel != "." else run.name)}</h2>']
    results = run / "results.json"
    if results.is_file():
        try:
            recs = json.loads(results.read_text())
        except ValueError:
            recs = []
        if isinstance(recs, list) and recs:
            parts.append("<h3>Results</h3>" + _results_table(recs))
    parts.append(_cases_section(run))
    for name in ("calibration.json", "privacy.json", "federation.json", "continual.json", "explain.json"):
        f = run / name
        if f.is_file():
            try:
                d = json.loads(f.read_text())
            except ValueError:
                continue
            if isinstance(d, dict):
                small = {k: v for k, v in d.items() if not isinstance(v, (list, dict)) or len(json.dumps(v)) < 400}
                parts.append(f"<h3>{name[:-5]}</h3>" + _kv_table(small))
    figs = []
    if (run / "metrics.jsonl").is_file():
        uri = _curve(run / "metrics.jsonl")
        if uri:
            figs.append(f'<figure><img src="{uri}" alt="training curves"><figcaption>training curves'
                        "</figcaption></figure>")
    drawn = bool(figs)   # plots/loss.png repeats the training curves drawn above
    for png in sorted(run.glob("plots/*.png")) + sorted(p for p in run.glob("*.png")):
        if drawn and png.name == "loss.png":
            continue
        figs.append(f'<figure><img src="{_png_uri(png)}" alt="{html.escape(png.stem)}"><figcaption>'
                    f"{html.escape(png.stem.replace('_', ' '))}</figcaption></figure>")
    if figs:
        parts.append("<h3>Plots</h3>" + "".join(figs))
    card = _data_card(run)
    if card:
        parts.append("<h3>Data card</h3><pre>" + html.escape(json.dumps(rounded(card), indent=1)[:20000]) + "</pre>")
    if (run / "config.yaml").is_file():
        config = (run / "config.yaml").read_text(errors="replace")
        parts.append("<h3>Configuration</h3><pre>" + html.escape(config) + "</pre>")
    parts.append("</section>")
    return "".join(parts)


def run_folders(root: Path, depth: int = 3) -> list[Path]:
    """``root`` and the folders below it (to ``depth``) that hold a run's outputs."""
    marks = ("results.json", "metrics.jsonl", "config.yaml", "explain.json")
    found = []

    def walk(p: Path, d: int) -> None:
        if any((p / m).is_file() for m in marks) or (p / "plots").is_dir() or any(p.glob("cases_*.json")):
            found.append(p)
        if d:
            for child in sorted(c for c in p.iterdir() if c.is_dir() and not c.name.startswith(".")
                                and c.name not in ("checkpoints", "plots", "encoder", "text_encoder", "dual",
                                                   "adapter", "tensorboard")):
                walk(child, d - 1)

    walk(root, depth)
    return found


def _headline(root: Path) -> str:
    """The sentence the run leads with, escaped: headline.json (written by write_report), else the headline result
    of the run's results.json (:func:`mmfm.evaluation.headline.run_headline`; a pretraining run has no report.md)."""
    path, text = root / "headline.json", ""
    if path.is_file() and path.stat().st_size <= 8192:
        try:
            text = json.loads(path.read_text(encoding="utf-8")).get("text", "")
        except (ValueError, AttributeError, UnicodeDecodeError):
            text = ""
    if not text and (root / "results.json").is_file():
        recs = _read_json(root / "results.json")
        text = (run_headline(recs) if isinstance(recs, list) else None) or ""
    return f"<p class=headline><strong>{html.escape(str(text))}</strong></p>" if text else ""


def write_html_report(run_dir: str | Path, title: str | None = None) -> Path:
    """Write ``run_dir/report.html`` from the run's files; return its path."""
    root = Path(run_dir)
    runs = run_folders(root)
    nav = "".join(f'<a href="#{html.escape("." if r == root else str(r.relative_to(root)))}">'
                  f'{html.escape(r.name if r == root else str(r.relative_to(root)))}</a>' for r in runs)
    body = "".join(_run_section(r, root) for r in runs) or "<section><p>No run outputs found.</p></section>"
    page = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title or root.name)}"
            f"</title><style>{CSS}</style></head><body><header><h1>{html.escape(title or 'mmfm run: ' + root.name)}"
            "</h1>" + _headline(root) +
            f"<p>{len(runs)} run folder(s) · written by mmfm from the run's files</p></header>"
            f"<main><nav>{nav}</nav>{body}</main>"
            "</body></html>")
    out = root / "report.html"
    tmp = out.with_name(".report.html.mmfm-partial")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out

