"""Findings -> impression summarisation of radiology reports (text only; issue 27 item 3), and the baselines a
language model has to beat there.

The radiologist's impression is a short summary of the findings: IU X-ray's most common impression is "No acute
cardiopulmonary abnormality.", so a method that writes it for every report already scores well on the word
metrics, and copying a sentence of the findings scores well on the clinical labels. A generated impression means
something only next to these:

- :func:`most_frequent_impression`: the training split's most frequent impression for every report (no model);
- :func:`last_sentence`: the findings' last sentence, copied (no model; it often states the conclusion);
- :func:`nearest_neighbour_impressions`: the impression of the training report whose findings are nearest in a
  text encoder's space (MiniLM by default; the classic retrieval baseline of report summarisation);
- :func:`prompted_impressions`: a language model (SmolLM2) asked for the impression, without training.

Each function returns one impression per query, so all are scored by the same metrics
(:func:`mmfm.evaluation.metrics.text.generation_metrics`: BLEU, ROUGE-L, CIDEr-D and the labeller's clinical
efficacy against the reference impressions).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import torch

from mmfm.errors import ConfigError

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# chosen among three wordings on validation reports of IU X-ray with SmolLM2, by clinical-efficacy F1
# (scripts/select_summary_prompt.py, table summarization-prompt in docs/assistant.md): never on the test split
INSTRUCTION = ("Summarise these chest X-ray findings as the report's impression, in one short sentence.\n\n"
               "Findings: {findings}\n\nImpression:")


def _norm(text: str) -> str:
    return " ".join(text.split())


def most_frequent_impression(train_impressions: Sequence[str], n: int) -> list[str]:
    """The training split's most frequent impression (whitespace-normalised; ties: the first seen), ``n`` times."""
    texts = [_norm(t) for t in train_impressions if t.strip()]
    if not texts:
        raise ConfigError("the training split holds no impression", "check that the reports have IMPRESSION sections")
    return [Counter(texts).most_common(1)[0][0]] * n


def last_sentence(findings: Sequence[str]) -> list[str]:
    """The last sentence of each report's findings (split after ``.``, ``!`` or ``?``)."""
    out = []
    for text in findings:
        parts = [p for p in SENTENCE_END.split(_norm(text)) if p]
        out.append(parts[-1] if parts else "")
    return out


def nearest_neighbour_impressions(embed: Callable[[Sequence[str]], torch.Tensor], train_findings: Sequence[str],
                                  train_impressions: Sequence[str], findings: Sequence[str]) -> list[str]:
    """For each query's findings, the impression of the training report with the most similar findings (cosine of
    ``embed``'s vectors; ties: the first training report). ``embed``: texts -> (N, D) tensor."""
    if len(train_findings) != len(train_impressions):
        raise ConfigError(f"{len(train_findings)} training findings and {len(train_impressions)} impressions",
                          "give one impression per training report")
    if not train_findings:
        raise ConfigError("no training report to retrieve from", "check the training split")
    bank = torch.nn.functional.normalize(embed(list(train_findings)).float(), dim=-1)      # (N, D)
    query = torch.nn.functional.normalize(embed(list(findings)).float(), dim=-1)          # (Q, D)
    best = (query @ bank.T).argmax(dim=1)                                                 # (Q,)
    return [_norm(train_impressions[int(i)]) for i in best]


def prompt(findings: str, instruction: str = INSTRUCTION) -> list[dict[str, str]]:
    """The chat a language model is asked: the instruction (with ``{findings}``) filled in, as one user turn."""
    if "{findings}" not in instruction:
        raise ConfigError("the summarisation instruction has no {findings} field", "put {findings} where they go")
    return [{"role": "user", "content": instruction.replace("{findings}", _norm(findings))}]


def prompted_impressions(assistant: Any, findings: Sequence[str], options: Any,
                         progress: Callable[[int], None] | None = None, instruction: str = INSTRUCTION) -> list[str]:
    """A language model's impression of each report's findings (an :class:`~mmfm.tasks.assistant.Assistant`,
    decoded with ``options``; greedy by default), its first line kept: a summary is one sentence and a small model
    goes on writing."""
    out = []
    for i, text in enumerate(findings):
        reply = assistant.reply(prompt(text, instruction), options)
        first = next((line for line in reply.text.splitlines() if line.strip()), "")
        out.append(_norm(re.sub(r"^\s*(\*\*)?impression(\*\*)?\s*:\s*(\*\*)?", "", first, flags=re.I)))
        if progress is not None:
            progress(i + 1)
    return out
