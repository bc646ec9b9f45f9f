"""The data card of a derived corpus: counts per split, modality and label, and its Markdown rendering."""

from __future__ import annotations

from collections import Counter
from typing import Any


def split_counts(cols: dict[str, list[Any]], label: str, names: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"total": len(cols["split"])}
    for s in ("train", "val", "test"):
        idx = [i for i, x in enumerate(cols["split"]) if x == s]
        out[s] = {"n": len(idx), "by_modality": dict(Counter(cols["modality"][i] for i in idx)),
                  f"by_{label}": dict(Counter(names[cols[label][i]] if names else int(cols[label][i]) for i in idx))}
    return out


def card_markdown(card: dict[str, Any]) -> str:
    lines = [f"# Data card: {card['name']} (v{card['version']})", "", "## Sources", "",
             "| source | package | version | licence | sha256 |", "|---|---|---|---|---|"]
    for key, s in card["sources"].items():
        lines.append(f"| {key} | {s.get('package', '-')} | {s.get('version', '-')} | {s.get('licence', '-')} | "
                     f"{s.get('sha256', '-')[:16]} |")
    if card["missing_sources"]:
        lines += ["", "**Missing sources** (the rest was built): " +
                  "; ".join(f"{k}: {v}" for k, v in card["missing_sources"].items())]
    lines += ["", "## Counts", "", "| set | split | n | by modality | by label |", "|---|---|---|---|---|"]
    for name, s in card["sets"].items():
        if name == "reports":
            continue
        for split in ("train", "val", "test"):
            c = s["counts"][split]
            lab = next(v for k, v in c.items() if k.startswith("by_") and k != "by_modality")
            lines.append(f"| {name} | {split} | {c['n']} | {c['by_modality']} | {lab} |")
    rep = card["sets"].get("reports") or {}
    if rep:
        lines += ["", f"IU X-ray reports: {rep['n']} ({rep['splits']}); {rep['with_findings']} with findings, "
                      f"{rep['with_impression']} with impression."]
    lines += ["", "## How it was derived", ""] + [f"- {d}" for d in card["derivation"]]
    return "\n".join(lines) + "\n"
