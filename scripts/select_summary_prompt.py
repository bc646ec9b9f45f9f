"""Choose the instruction `mmfm summarize` gives the language model, on validation reports only.

Each candidate wording asks SmolLM2 (greedy, 48 new tokens) for the impression of the first N validation reports of
IU X-ray (mini) that have findings and an impression; each is scored by the report-generation metrics against the
reports' own impressions. The library's instruction (``mmfm.tasks.summarization.INSTRUCTION``) is the candidate with
the highest clinical-efficacy F1 here; the test split is never read. Writes docs/results/summarization_prompt.json
(table summarization-prompt in docs/assistant.md).

Usage: python scripts/select_summary_prompt.py [--reports 12]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES = {
    "conclusion": ("Here are the findings of a chest X-ray report. Write the impression: the conclusion a "
                   "radiologist would give, in one short sentence.\n\nFindings: {findings}"),
    "section": "Chest X-ray findings: {findings}\n\nWrite the impression section of this report in one short sentence.",
    "summarise": ("Summarise these chest X-ray findings as the report's impression, in one short sentence.\n\n"
                  "Findings: {findings}\n\nImpression:"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reports", type=int, default=12, help="validation reports scored per wording (default 12)")
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from mmfm.data.sources.mini_reader import report_rows
    from mmfm.evaluation.metrics.text import generation_metrics
    from mmfm.evaluation.results import ResultRecord, write_results
    from mmfm.tasks import summarization as summ
    from mmfm.tasks.assistant import GenerationOptions
    from mmfm.workflows.chat import load_assistant
    from mmfm.workflows.provenance import provenance

    rows = report_rows(None, "val", require=("findings", "impression"))[:a.reports]
    bot = load_assistant("smollm2")
    records = []
    for name, text in CANDIDATES.items():
        hyps = summ.prompted_impressions(bot, [r["findings"] for r in rows], GenerationOptions(max_new_tokens=48),
                                         instruction=text)
        m = generation_metrics(hyps, [r["impression"] for r in rows])
        chosen = " (the library's)" if text == summ.INSTRUCTION else ""
        records += [ResultRecord("summarization_prompt", "mini/reports", "val", f"{name}{chosen}", k, float(v), 0)
                    for k, v in {**m, "reports": float(len(rows))}.items()]
        print(name, {k: round(v, 3) for k, v in m.items()}, flush=True)
    write_results(ROOT / "docs" / "results" / "summarization_prompt.json", records, provenance(ROOT))


if __name__ == "__main__":
    main()
