"""A rule-based, negation-aware report labeller: radiology report text -> finding labels.

For each finding it returns 1 (positive), 0 (mentioned as absent) or -1 (uncertain); findings that are not
mentioned are left out (CheXpert's convention). Mentions are regular expressions; negation and uncertainty
follow NegEx (Chapman et al., 2001): a trigger opens a scope that runs to the end of the sentence or to a
termination word ("but", "however", ...); post-triggers ("... is not seen") look back over the sentence.
``normal`` is positive when no abnormal finding is positive or uncertain and the report says something.

Why by hand: medspacy/negspacy implement ConText on top of spaCy pipelines and models that are not installable
offline here; the rule set below is small, readable and tested sentence by sentence. ``MESH`` maps each label to
the IU X-ray MeSH headings it corresponds to, which gives the labeller a real check (docs/vision_language.md).

The check is split (:func:`report_part`): rules are developed reading the disagreements of the ``dev`` half of
the IU reports only, and scored on the ``held_out`` half, which nobody reads while writing rules.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

import numpy as np

# label -> mention patterns (regular expressions, matched case-insensitively on word boundaries)
FINDINGS: dict[str, list[str]] = {
    "cardiomegaly": [r"cardiomegaly", r"enlarged (heart|cardiac silhouette|cardiac shadow)",
                     r"(heart|cardiac silhouette|cardiac shadow|heart size)( size)? (is |are )?(mildly |moderately |"
                     r"severely |markedly |slightly )?(enlarged|increased)", r"cardiac enlargement"],
    "effusion": [r"(pleural )?effusions?", r"blunting of the (\w+ )?costophrenic", r"costophrenic (\w+ )?blunting"],
    "opacity": [r"opacit(y|ies)", r"opacification", r"densit(y|ies)"],
    "atelectasis": [r"atelecta(sis|tic|ses)", r"collapse"],
    "consolidation": [r"consolidat(ion|ions|ive)"],
    "airspace_disease": [r"air ?space (disease|opacit(y|ies)|process)"],
    "pneumonia": [r"pneumonia", r"infectious process"],
    "infiltrate": [r"infiltrat(e|es|ion)"],
    "edema": [r"(pulmonary |interstitial )?edema", r"vascular congestion", r"(pulmonary )?congestion"],
    "pneumothorax": [r"pneumothora(x|ces)"],
    "nodule": [r"nodul(e|es|ar)", r"mass(es)?"],
    "tumour": [r"tumou?rs?", r"neoplasms?", r"metasta(sis|ses|tic)", r"malignan(cy|t)", r"carcinoma"],
    "granuloma": [r"granulom(a|as|ata|atous)"],
    "calcification": [r"calcifi(ed|cation|cations)(?! (granuloma|hilar|lymph|nodes?))", r"calcinosis"],
    "scarring": [r"scar(ring|s)?", r"fibrosis", r"fibrotic"],
    "emphysema": [r"emphysema(tous)?", r"copd", r"chronic obstructive"],
    "hyperinflation": [r"hyperinflat(ed|ion)", r"hyperexpan(ded|sion)", r"overinflat(ed|ion)"],
    "hypoinflation": [r"low lung volumes?", r"hypoinflat(ed|ion)", r"(lungs are )?(poorly|under) ?inflated"],
    "fracture": [r"fractur(e|es|ed)"],
    "scoliosis": [r"(dextro|levo)?scolio(sis|tic)", r"(dextro|levo)curvature", r"(spinal |thoracic )?curvature"],
    "degenerative_spine": [r"degenerative (changes?|disease)", r"spondylosis", r"osteophyt(e|es|osis)"],
    "hernia": [r"hernia"],
    "device": [r"catheter", r"pacemaker", r"(port|picc|central venous line|chest tube|icd)\b", r"sternotomy",
               r"(surgical |vascular )?clips?", r"wires?", r"stent", r"prosthe(sis|tic)", r"hardware"],
    "tortuous_aorta": [r"tortuous[\w ,]{0,30}aorta", r"aort(a|ic)[\w ,]{0,40}tortu(ous|osity)", r"ectatic aorta",
                       r"unfolded[\w ,]{0,20}aorta", r"aorta[\w ,]{0,20}(unfolded|ectatic)"],
    "atherosclerosis": [r"atherosclero(sis|tic)", r"aortic (arch )?calcification"],
}

# the IU X-ray MeSH headings that each label stands for: "heading" (first component, lower case) or
# "heading/word" (the heading with that word among its qualifiers, e.g. "Lung/hypoinflation/mild")
MESH: dict[str, set[str]] = {
    "normal": {"normal"},
    "cardiomegaly": {"cardiomegaly"},
    "effusion": {"pleural effusion"},
    "opacity": {"opacity", "density"},
    "atelectasis": {"pulmonary atelectasis"},
    "consolidation": {"consolidation"},
    "airspace_disease": {"airspace disease"},
    "pneumonia": {"pneumonia"},
    "infiltrate": {"infiltrate"},
    "edema": {"pulmonary edema", "pulmonary congestion", "edema"},
    "pneumothorax": {"pneumothorax"},
    "nodule": {"nodule", "mass"},
    "tumour": {"neoplasms", "lung neoplasms", "neoplasm metastasis"},
    "granuloma": {"calcified granuloma", "granulomatous disease", "granuloma"},
    "calcification": {"calcinosis"},
    "scarring": {"cicatrix", "fibrosis"},
    "emphysema": {"emphysema", "pulmonary emphysema", "pulmonary disease, chronic obstructive"},
    "hypoinflation": {"lung/hypoinflation"},
    "hyperinflation": {"lung/hyperdistention", "lung/hyperinflation"},
    "fracture": {"fractures, bone"},
    "scoliosis": {"scoliosis"},
    "degenerative_spine": {"spondylosis", "osteophyte", "spine/degenerative", "thoracic vertebrae/degenerative"},
    "hernia": {"hernia, hiatal", "hernia"},
    "device": {"catheters, indwelling", "implanted medical device", "surgical instruments", "medical device",
               "pacemaker, artificial", "sutures", "stents"},
    "tortuous_aorta": {"aorta/tortuous", "aorta, thoracic/tortuous"},
    "atherosclerosis": {"atherosclerosis"},
}

LABELS: list[str] = ["normal", *FINDINGS]

PRE_NEGATION = [r"no", r"not", r"without", r"negative for", r"free of", r"clear of", r"absence of", r"nor",
                r"no (evidence|sign|signs|findings|suspicious|definite|focal|acute|large|visible) of", r"rule out",
                r"resolution of", r"resolved", r"removal of", r"interval removal"]
POST_NEGATION = [r"(is|are|was|were) not (seen|identified|present|appreciated|visualized|demonstrated)",
                 r"(has|have) resolved", r"(is|are) absent", r"not (seen|identified|present)", r"resolved"]
UNCERTAIN = [r"may", r"might", r"possible", r"possibly", r"probable", r"probably", r"likely", r"suspicious for",
             r"suspected", r"suggest(s|ive of|ing)?", r"concerning for", r"could (be|represent)", r"questionable",
             r"question of", r"versus", r"vs", r"cannot be (excluded|ruled out)", r"not excluded", r"borderline",
             r"equivocal", r"differential", r"consider", r"if clinically", r"represent(s|ing)?"]
TERMINATION = [r"but", r"however", r"although", r"though", r"except", r"which", r"with the exception",
               r"otherwise", r"whereas", r"aside from", r"there is", r"there are", r"again"]

# statements that name a finding only to call it normal ("heart size is normal") are negations of it
NORMAL_STATEMENTS = {
    "cardiomegaly": [r"(heart|cardiac|cardiomediastinal)( size| silhouette| shadow| contours?)*( and [\w ]+?)? "
                     r"(is |are |appears? |remains? )*(within normal limits|normal|stable|unremarkable|upper limits "
                     r"of normal|top normal|accentuated)", r"normal (heart|cardiac) size"],
}
NORMAL_CUES = [r"normal chest", r"no acute (cardiopulmonary|pulmonary|disease|abnormalit|findings|process)",
               r"lungs are clear", r"clear lungs", r"no active disease", r"within normal limits",
               r"no (acute )?abnormalit", r"unremarkable", r"negative (chest|exam)"]


def _alt(patterns: Iterable[str]) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + "|".join(patterns) + r")\b", re.IGNORECASE)


_FIND = {k: _alt(v) for k, v in FINDINGS.items()}
_NORMAL_STMT = {k: _alt(v) for k, v in NORMAL_STATEMENTS.items()}
_PRE, _POST, _UNC, _TERM = _alt(PRE_NEGATION), _alt(POST_NEGATION), _alt(UNCERTAIN), _alt(TERMINATION)
_CUES = _alt(NORMAL_CUES)
_SENTENCES = re.compile(r"(?<=[.;?!])\s+|\n+")


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCES.split(text or "") if s.strip()]


def _status(sentence: str, start: int, end: int) -> int:
    """1 / 0 / -1 for a mention at sentence[start:end], from the NegEx scopes around it."""
    before = sentence[:start]
    cut = max((m.end() for m in _TERM.finditer(before)), default=0)   # scopes stop at termination words
    scope = before[cut:]
    after = sentence[end:]
    after = after[:next((m.start() for m in _TERM.finditer(after)), len(after))]
    if _PRE.search(scope) or _POST.search(after):
        return 0
    if _UNC.search(scope) or _UNC.search(after):
        return -1
    return 1


def label_report(text: str) -> dict[str, int]:
    """Finding labels of one report. Positive wins over uncertain, which wins over negative, across mentions."""
    out: dict[str, int] = {}
    rank = {1: 2, -1: 1, 0: 0}
    for s in sentences(text):
        for label, pat in _FIND.items():
            for m in pat.finditer(s):
                if label in _NORMAL_STMT and _NORMAL_STMT[label].search(s):
                    v = 0
                else:
                    v = _status(s, m.start(), m.end())
                if label not in out or rank[v] > rank[out[label]]:
                    out[label] = v
        for label, pat in _NORMAL_STMT.items():
            if pat.search(s) and label not in out:
                out[label] = 0
    if text and text.strip():
        abnormal = any(v != 0 for v in out.values())
        if not abnormal and (out or _CUES.search(text)):
            out["normal"] = 1
        elif abnormal:
            out["normal"] = 0
    return out


def label_matrix(texts: Iterable[str], labels: list[str] | None = None, uncertain: int = 1) -> np.ndarray:
    """(N, K) 0/1 matrix; ``uncertain`` says how -1 counts (1: positive, as CheXpert's U-Ones; 0: negative)."""
    labels = labels or LABELS
    rows = []
    for t in texts:
        lab = label_report(t)
        rows.append([1 if lab.get(k) == 1 or (lab.get(k) == -1 and uncertain == 1) else 0 for k in labels])
    return np.asarray(rows, dtype=np.int64).reshape(-1, len(labels))


def mesh_matrix(mesh_terms: Iterable[list[str]], labels: list[str] | None = None) -> np.ndarray:
    """(N, K) 0/1 matrix of the labels that IU X-ray MeSH headings assign."""
    labels = labels or LABELS
    rows = []
    for terms in mesh_terms:
        row = []
        for k in labels:
            hit = 0
            for t in terms:
                parts = [p.strip().lower() for p in t.split("/")]
                for want in MESH.get(k, set()):
                    head, _, word = want.partition("/")
                    if parts[0] == head and (not word or any(word in p for p in parts[1:])):
                        hit = 1
            row.append(hit)
        rows.append(row)
    return np.asarray(rows, dtype=np.int64).reshape(-1, len(labels))


PARTS = ("dev", "held_out")
HELD_OUT_FRACTION = 0.5


def report_part(report_id: str, held_out: float = HELD_OUT_FRACTION) -> str:
    """``dev`` (rules are developed on these reports) or ``held_out`` (only scored) for an IU report id
    (``CXR123``): fixed by the SHA-256 of the id, so it depends on neither the order of the reports, nor the
    corpus version, nor any split seed, and a report never changes part."""
    h = int.from_bytes(hashlib.sha256(f"mmfm-labeller:{report_id}".encode()).digest()[:8], "big") / 2.0 ** 64
    return "held_out" if h < held_out else "dev"
