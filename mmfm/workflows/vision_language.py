"""Workflows that use image-text alignment: zero-shot classification, retrieval (image<->text and report
section matching), report generation and VQA. Each writes ``results.json`` (records), ``report.md`` and, where
it generates text, the generated texts as JSONL, into ``cfg.out``; ``status.json`` is written last.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmfm.data import spec as dataspec
from mmfm.data.batches import first_item, image_batches
from mmfm.data.datasets import SampleDataset
from mmfm.data.generated_text import CLOSED
from mmfm.encoders import build_encoder
from mmfm.engine.distributed import is_main
from mmfm.engine.trainer import Trainer, seed_everything
from mmfm.errors import ConfigError, unknown_option
from mmfm.evaluation.figures import plot_retrieval_examples
from mmfm.evaluation.metrics.classification import classification_metrics
from mmfm.evaluation.metrics.text import generation_metrics, tokenize
from mmfm.evaluation.protocols.retrieval import (
    frequency_baseline,
    image_text_retrieval,
    label_only_retrieval,
    section_matching,
)
from mmfm.evaluation.report import plot_losses, write_report
from mmfm.evaluation.results import ResultRecord, write_json_atomic, write_results
from mmfm.tasks import TASKS
from mmfm.tasks.report_generation import label_majority_reports, majority_report, nearest_neighbour_reports
from mmfm.tasks.text_decoder import Vocabulary
from mmfm.tasks.vqa import majority_answers
from mmfm.tasks.zero_shot import DEFAULT_TEMPLATES, class_prompts, zero_shot_probs
from mmfm.workflows.config import RunConfig, dump_config, resume_key
from mmfm.workflows.pretrain import load_encoder
from mmfm.workflows.provenance import provenance
from mmfm.workflows.towers import load_dual, load_text_encoder

FREQUENCY_BASELINE = "most-frequent-impression (no model)"
MAJORITY_REPORT = "majority report (no image)"
NN_PIXELS = "nearest-neighbour report (pixels)"
MAJORITY_ANSWER = "majority answer per question (no image)"
LABEL_ONLY = "label-only retriever (expected, no model)"
LABEL_MAJORITY = "majority report of the true label (no image)"


def _finish(cfg: RunConfig, title: str, records: list[ResultRecord], notes: list[str],
            plots: dict[str, Path | None] | None = None) -> list[ResultRecord]:
    out = Path(cfg.out)
    write_results(out / "results.json", records, provenance(out))
    write_report(out / "report.md", title, records, plots or {}, notes)
    write_json_atomic(out / "status.json", {"status": "complete"})
    return records


def _start(cfg: RunConfig) -> Path:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "status.json").unlink(missing_ok=True)          # a rerun is not complete until it finishes
    dump_config(cfg, out / "config.yaml")
    return out


def _check_task_keys(cfg: RunConfig, valid: tuple[str, ...]) -> None:
    for key in cfg.task:
        if key not in valid:
            raise unknown_option(f"task.{key}", key, valid, str(cfg.task.get("name", "this command")))


# -- zero-shot -------------------------------------------------------------------------------------------------
def run_zeroshot(cfg: RunConfig) -> list[ResultRecord]:
    """task: {model: <vision-language run>, templates: [...], synonyms: {class: [...]}}; classes are the names of
    ``data.label`` in the data card; every split of ``data.eval_splits`` is classified without labels."""
    _check_task_keys(cfg, ("name", "model", "templates", "synonyms"))
    model, spec = load_dual(_required(cfg.task, "model", "a vision-language pretraining run (mmfm pretrain)"))
    out = _start(cfg)
    names = dataspec.class_names(cfg.data)
    prompts = class_prompts(names, cfg.task.get("templates") or DEFAULT_TEMPLATES, cfg.task.get("synonyms"))
    records, notes = [], [f"prompts per class: {len(prompts[0])} (templates x names, averaged = prompt ensemble)",
                          f"classes: {names}"]
    for split in cfg.data.eval_splits:
        ds, _ = dataspec.labelled(cfg.data, split, "classification")
        if ds.label is None:
            raise ConfigError(f"{dataspec.name(cfg.data)} has no label '{cfg.data.label}'", "set data.label")
        probs = zero_shot_probs(model, ds, prompts)
        m = classification_metrics(probs, ds.label)
        present = torch.unique(ds.label)
        m["chance_accuracy"] = float(max((ds.label == c).float().mean() for c in present))  # majority class
        m["chance_balanced_accuracy"] = 1.0 / len(present)
        for k, v in m.items():
            records.append(ResultRecord("zeroshot", f"{dataspec.name(cfg.data)}:{cfg.data.label}", split,
                                        spec["method"], k, float(v), _seed(spec, cfg)))
    write_json_atomic(out / "prompts.json", dict(zip(names, prompts)))
    return _finish(cfg, "Zero-shot classification", records, notes)


# -- retrieval -------------------------------------------------------------------------------------------------
def run_retrieve(cfg: RunConfig) -> list[ResultRecord]:
    """task: {model: <vision-language run>} retrieves between the images and captions of ``data.set``;
    task: {text_encoder: minilm | <report run> | hf:<folder>} with data.set=reports does section matching
    (impression given findings) on the IU reports."""
    _check_task_keys(cfg, ("name", "model", "text_encoder", "max_length"))
    _start(cfg)
    records = []
    src = dataspec.source(cfg.data)   # generated captions: retrieval needs a model; their reports are a set apart
    if src.text_only or (not src.synthetic_text and not cfg.task.get("model")):
        source = cfg.task.get("text_encoder") or cfg.text_encoder.get("name", "minilm")
        enc, spec = load_text_encoder(source)
        method = spec.get("method", source)
        for split in cfg.data.eval_splits:
            rows = dataspec.reports(cfg.data, split).rows
            m = section_matching(enc, [r["findings"] for r in rows], [r["impression"] for r in rows],
                                 max_length=int(cfg.task.get("max_length", 128)))
            m["queries"] = float(len(rows))
            records += [ResultRecord("section_matching", dataspec.name(cfg.data), split, method, k, float(v),
                                     _seed(spec, cfg)) for k, v in m.items()]
            base = frequency_baseline([r["findings"] for r in rows], [r["impression"] for r in rows])
            records += [ResultRecord("section_matching", dataspec.name(cfg.data), split, FREQUENCY_BASELINE, k,
                                     float(v), 0) for k, v in base.items() if not k.startswith("chance_")]
        notes = ["query: findings; gallery: impressions of the same split; identical impressions count as relevant",
                 f"{FREQUENCY_BASELINE}: no model, every query ranks the impressions by their frequency"]
        return _finish(cfg, "Radiology section matching", records, notes)
    model, spec = load_dual(_required(cfg.task, "model", "a vision-language pretraining run (mmfm pretrain)"))
    plots: dict[str, Path | None] = {}
    for split in cfg.data.eval_splits:
        ds = dataspec.pairs(cfg.data, split)
        m = image_text_retrieval(model, ds, ds.texts)
        records += [ResultRecord("retrieval", dataspec.name(cfg.data), split, spec["method"], k, float(v),
                                 _seed(spec, cfg)) for k, v in m.items()]
        labels = _caption_labels(cfg, split, list(ds.texts))
        if labels is not None:
            records += [ResultRecord("retrieval", dataspec.name(cfg.data), split, LABEL_ONLY, k, v, 0)
                        for k, v in label_only_retrieval(list(ds.texts), labels).items()]
        plots[f"retrieval examples ({split})"] = plot_retrieval_examples(
            model, ds, list(ds.texts), Path(cfg.out) / "plots" / f"retrieval_{split}.png")
    notes = ["an identical text counts as relevant"]
    if src.synthetic_text:
        notes.insert(0, "the mini captions are GENERATED from the labels, masks and slice positions (see the data "
                        "card), so many texts are identical")
        notes.append(f"{LABEL_ONLY}: the expected scores of a retriever that knows each pair's label caption "
                     "(caption_label) and nothing else; a model above it retrieves more than the label")
    return _finish(cfg, "Image-text retrieval", records, notes, plots)


def _caption_labels(cfg: RunConfig, split: str, texts: list[str]) -> list[str] | None:
    """The label-only captions of the pairs of ``split`` (:func:`mmfm.data.spec.label_captions`), or None."""
    return dataspec.label_captions(cfg.data, split, texts)


# -- report generation -----------------------------------------------------------------------------------------
def _image_encoder(cfg: RunConfig, x: torch.Tensor) -> Any:
    source = cfg.task.get("encoder_from")
    if source:
        enc, _ = load_encoder(source)
        return enc
    return build_encoder(cfg.encoder["name"], spatial_dims=x.ndim - 1, in_channels=x.shape[0],
                         **{k: v for k, v in cfg.encoder.items() if k != "name"})


def _train(cfg: RunConfig, model: torch.nn.Module, ds: Any, kind: str, info: dict[str, Any] | None = None) -> None:
    key = resume_key(cfg)
    Trainer(model, ds, cfg.train, cfg.optim, cfg.out, run_info={"config": key, "kind": kind, **(info or {})}).fit()
    model.eval()


def _bridge(cfg: RunConfig, x: torch.Tensor, kind: str, train: Any) -> tuple[Any, dict[str, Any], str]:
    """``task.decoder=<language model>``: the bridge model, what its run records, its method label
    (:mod:`mmfm.workflows.bridge`)."""
    from mmfm.workflows import bridge

    model = bridge.build_bridge(cfg, _image_encoder(cfg, x))
    info = {"assistant": bridge.run_info(cfg, model, bridge.encoder_spec(cfg, x), kind),
            "preprocessing": dataspec.contract(cfg.data, train)}
    a = info["assistant"]
    return model, info, cfg.method or f"{a['encoder']['name']}-{a['bridge']}-{a['decoder']}-stage{a['stage']}"


def run_report_generation(cfg: RunConfig) -> list[ResultRecord]:
    """Train an image encoder + text decoder on the image-text pairs of ``data.set`` (train split), then generate
    for every eval split. task: {dim, depth, heads, max_len, encoder_from, freeze_encoder}."""
    from mmfm.workflows.bridge import prepare, uses_language_model, write_info

    seed_everything(cfg.train.seed)
    bridged = uses_language_model(cfg.task)
    if bridged:
        prepare(cfg)
    train = dataspec.pairs(cfg.data, cfg.data.train_split)
    x = first_item(train)["image"]
    if bridged:   # task.decoder=smollm2: a bridge into the language model
        model, info, method = _bridge(cfg, x, "report_generation", train)
    else:
        opts = {k: v for k, v in cfg.task.items() if k not in ("name", "encoder_from", "decoder")}
        model = TASKS.build_with("report_generation", opts, {"encoder": _image_encoder(cfg, x),
                                                             "vocab": Vocabulary.build(train.texts)}, "task")
        info, method = {}, cfg.method or f"{cfg.encoder['name']}-decoder"
    out = _start(cfg)
    _train(cfg, model, train, "report_generation", info)
    if not is_main():
        return []
    if bridged:
        write_info(out, info["assistant"])
    else:
        write_json_atomic(out / "vocabulary.json", model.vocab.to_dict())
    records: list[ResultRecord] = []
    train_pixels, train_features = _pixels_and_features(model.encoder, train)
    train_labels = _caption_labels(cfg, cfg.data.train_split, list(train.texts))
    for split in cfg.data.eval_splits:
        ds = dataspec.pairs(cfg.data, split)
        gen = [t for x in image_batches(ds, 64) for t in model.generate(x)]
        with open(out / f"generated_{split}.jsonl", "w") as f:
            for g, r in zip(gen, ds.texts):
                f.write(json.dumps({"generated": g, "reference": r}) + "\n")
        pixels, features = _pixels_and_features(model.encoder, ds)
        outputs = {(method, cfg.train.seed): gen,   # the model, then the baselines it has to beat
                   (MAJORITY_REPORT, 0): majority_report(train.texts, len(ds.texts)),
                   (NN_PIXELS, 0): nearest_neighbour_reports(pixels, train_pixels, train.texts),
                   (f"nearest-neighbour report ({method} features)", cfg.train.seed):
                       nearest_neighbour_reports(features, train_features, train.texts)}
        labels = _caption_labels(cfg, split, list(ds.texts))
        if train_labels is not None and labels is not None:
            outputs[(LABEL_MAJORITY, 0)] = label_majority_reports(train.texts, train_labels, labels)
        records += [ResultRecord("report_generation", dataspec.name(cfg.data), split, name, k, float(v), seed)
                    for (name, seed), texts in outputs.items()
                    for k, v in generation_metrics(texts, ds.texts).items()]
    plots = {"training loss": plot_losses(out / "metrics.jsonl", out / "plots" / "loss.png", "report generation")}
    notes = ["CE_* = clinical efficacy: labeller findings of generated vs reference texts (micro)",
             f"baselines: {MAJORITY_REPORT} (the most frequent training text for every image); {NN_PIXELS} and "
             "nearest-neighbour report (<model> features): the training text of the nearest training image by "
             "cosine similarity of pixels / of the trained encoder's pooled features",
             f"{LABEL_MAJORITY} (mini): the most frequent training caption of the image's own label caption, a "
             "generator that knows the label and nothing else"]
    if dataspec.source(cfg.data).synthetic_text:
        notes.insert(0, "references are the mini captions, GENERATED from labels (see the data card), not "
                        "radiologists' reports")
    else:
        notes.insert(0, f"references: the reports/captions of {dataspec.name(cfg.data)} at data.root")
    return _finish(cfg, "Report generation", records, notes, plots)


def _pixels_and_features(encoder: torch.nn.Module, ds: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of ``ds`` flattened, and the encoder's pooled features. Shape: (N, C*prod(s)), (N, D)."""
    pixels, features = [], []
    with torch.no_grad():
        for x in image_batches(ds, 64):
            pixels.append(x.flatten(1).float())
            features.append(encoder(x)["pooled"].float())
    return torch.cat(pixels), torch.cat(features)


# -- VQA -------------------------------------------------------------------------------------------------------


def _generated_vqa(cfg: RunConfig, split: str) -> dict[str, Any]:
    return dataspec.generated_vqa(cfg.data, split)


def catalog_vqa(cfg: RunConfig, split: str) -> dict[str, Any]:
    """A SLAKE / VQA-RAD / PathVQA style dataset (catalog layout ``vqa_json``) at data.root, images resized to
    ``data.size``. Splits come from one JSON per split (``data.options.split_files``, default train.json /
    validate.json / test.json as SLAKE ships them) or, when ``data.options.file`` names a single JSON (VQA-RAD),
    from a 70/15/15 split by image (seed ``data.split_seed``), so no image is in two splits."""
    from mmfm.data.catalog import load_dataset
    from mmfm.data.catalog.loaders import SampleList
    from mmfm.data.splits import group_split

    if cfg.data.root is None:
        raise ConfigError(f"data.root is required for {cfg.data.dataset}", "point it at the dataset folder")
    opts = dict(cfg.data.options)
    files = {"train": "train.json", "val": "validate.json", "test": "test.json", **opts.pop("split_files", {})}
    if "file" in opts:
        every = load_dataset(cfg.data.dataset, cfg.data.root, cfg.data.allow_outside_root, **opts)
        assign = group_split([str(r["image"]) for r in every.records], {"train": 0.7, "val": 0.15, "test": 0.15},
                             seed=cfg.data.split_seed)
        samples = SampleList([r for r, a in zip(every.records, assign) if a == split], every._read)
    else:
        samples = load_dataset(cfg.data.dataset, cfg.data.root, cfg.data.allow_outside_root,
                               file=files.get(split, f"{split}.json"), **opts)
    if len(samples) == 0:
        raise ConfigError(f"{cfg.data.dataset}: no questions in split '{split}'", "check data.root and the JSON files")
    ds = SampleDataset(samples, cfg.data.modalities, dataspec.grid_size(cfg.data), label_key=None)
    ds.samples = [samples[i] for i in range(len(samples))]        # read each file once: images and texts
    texts = [s["texts"] for s in ds.samples]
    return {"image": np.stack([ds[i]["image"].numpy() for i in range(len(ds))]),
            "question": [t["question"] for t in texts], "answer": [t["answer"] for t in texts],
            "answer_type": [(t.get("answer_type") or ("CLOSED" if t["answer"].lower() in ("yes", "no") else "OPEN"))
                            .upper() for t in texts]}


class _QADataset(torch.utils.data.Dataset):
    def __init__(self, d: dict[str, Any]) -> None:
        self.d, self.image = d, torch.from_numpy(np.ascontiguousarray(d["image"], dtype=np.float32))

    def __len__(self) -> int:
        return len(self.image)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.image[i], "question": self.d["question"][i], "answer": self.d["answer"][i]}


def run_vqa(cfg: RunConfig) -> list[ResultRecord]:
    """Train a generative VQA model (image tokens + question tokens -> answer) and evaluate: closed questions by
    choosing among the candidate answers seen in training for that question type, open ones by greedy
    generation (exact match, token F1, BLEU-1)."""
    from mmfm.workflows.bridge import prepare, uses_language_model, write_info

    seed_everything(cfg.train.seed)
    bridged = uses_language_model(cfg.task)
    if bridged:
        prepare(cfg)
    generated = dataspec.source(cfg.data).synthetic_text   # mini: questions generated from its labels
    load = _generated_vqa if generated else catalog_vqa
    train = load(cfg, cfg.data.train_split)
    x = torch.as_tensor(train["image"][0])
    if bridged:   # task.decoder=smollm2: a bridge into the language model, which reads the question itself
        model, info, method = _bridge(cfg, x, "vqa", None)
    else:
        text_encoder, _ = load_text_encoder(cfg.text_encoder.get("name", "minilm"))
        opts = {k: v for k, v in cfg.task.items() if k not in ("name", "encoder_from", "decoder")}
        model = TASKS.build_with("vqa", opts, {"encoder": _image_encoder(cfg, x), "text_encoder": text_encoder,
                                               "vocab": Vocabulary.build(train["answer"])}, "task")
        info, method = {}, cfg.method or f"{cfg.encoder['name']}-vqa"
    out = _start(cfg)
    _train(cfg, model, _QADataset(train), "vqa", info)
    if not is_main():
        return []
    if bridged:
        write_info(out, info["assistant"])
    closed_candidates = sorted({a for a, t in zip(train["answer"], train["answer_type"]) if t == CLOSED})
    records: list[ResultRecord] = []
    for split in cfg.data.eval_splits:
        d = load(cfg, split)
        img = torch.from_numpy(np.ascontiguousarray(d["image"], dtype=np.float32))
        pred: list[str] = []
        for i in range(0, len(img), 64):
            qs, ts = d["question"][i:i + 64], d["answer_type"][i:i + 64]
            free = model.answer(img[i:i + 64], qs)
            chosen = model.choose(img[i:i + 64], qs, closed_candidates) if closed_candidates else free
            pred += [c if t == CLOSED else f for c, f, t in zip(chosen, free, ts)]
        with open(out / f"answers_{split}.jsonl", "w") as f:
            for q, p, a, t in zip(d["question"], pred, d["answer"], d["answer_type"]):
                f.write(json.dumps({"question": q, "predicted": p, "answer": a, "type": t}) + "\n")
        records += [ResultRecord("vqa", _vqa_name(cfg), split, method, k, v, cfg.train.seed)
                    for k, v in vqa_metrics(pred, d["answer"], d["answer_type"]).items()]
        prior = majority_answers(train["question"], train["answer"], d["question"])   # no image: the baseline
        records += [ResultRecord("vqa", _vqa_name(cfg), split, MAJORITY_ANSWER, k, v, 0)
                    for k, v in vqa_metrics(prior, d["answer"], d["answer_type"]).items()]
    plots = {"training loss": plot_losses(out / "metrics.jsonl", out / "plots" / "loss.png", "VQA")}
    notes = ["mini questions are generated from the slice labels (modality, region, lesion), not written by people"
             if generated else f"data: {cfg.data.dataset} at data.root",
             f"baseline: {MAJORITY_ANSWER}: each question's most frequent training answer, without the image"]
    return _finish(cfg, "Visual question answering", records, notes, plots)


def _vqa_name(cfg: RunConfig) -> str:
    src = dataspec.source(cfg.data)
    return f"{src.name}-vqa" if src.synthetic_text else cfg.data.dataset


def vqa_metrics(pred: list[str], answers: list[str], types: list[str]) -> dict[str, float]:
    """closed_accuracy, open_exact_match, open_token_f1, open_BLEU-1 and overall accuracy (exact match after
    lower-casing and whitespace folding)."""
    from mmfm.evaluation.metrics.text import bleu

    norm = [" ".join(t.lower().split()) for t in pred]
    gold = [" ".join(t.lower().split()) for t in answers]
    exact = np.array([p == g for p, g in zip(norm, gold)], dtype=float)
    closed = np.array([t == CLOSED for t in types])
    out = {"accuracy": float(exact.mean()) if len(exact) else 0.0, "questions": float(len(exact))}
    if closed.any():
        out["closed_accuracy"] = float(exact[closed].mean())
    if (~closed).any():
        idx = np.flatnonzero(~closed)
        out["open_exact_match"] = float(exact[idx].mean())
        f1 = []
        for i in idx:
            p, g = tokenize(norm[i]), tokenize(gold[i])
            common = sum(min(p.count(w), g.count(w)) for w in set(p))
            f1.append(0.0 if not common else 2 * common / (len(p) + len(g)))
        out["open_token_f1"] = float(np.mean(f1))
        out["open_BLEU-1"] = bleu([pred[i] for i in idx], [answers[i] for i in idx])["BLEU-1"]
    return out


def _seed(spec: dict[str, Any], cfg: RunConfig) -> int:
    """The seed of the pretraining run that made the model (results of seeds are then summarised)."""
    return int(spec.get("seed", spec.get("image", {}).get("seed", cfg.train.seed)))


def _required(opts: dict[str, Any], key: str, what: str) -> str:
    if not opts.get(key):
        raise ConfigError(f"task.{key} is required", f"give {what}")
    return str(opts[key])


# -- labeller --------------------------------------------------------------------------------------------------
def run_labeller_check(out: str | Path, root: str | Path | None = None, min_support: int = 20) -> list[ResultRecord]:
    """Precision, recall and F1 of the rule-based labeller (findings + impression; uncertain counted positive)
    against the IU X-ray MeSH headings, per label with at least ``min_support`` MeSH-positive reports in all, on
    each part of the reports (:func:`mmfm.data.labeller.report_part`): ``dev``, where rules are developed, and
    ``held_out``, only scored. ``disagreements_dev.jsonl`` lists the dev reports where the labeller and MeSH
    disagree (report id, label, false positive or negative), the only disagreements to read when writing rules."""
    from mmfm.data.labeller import LABELS, PARTS, label_matrix, mesh_matrix, report_part
    from mmfm.data.sources.mini_reader import iter_reports

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "status.json").unlink(missing_ok=True)
    rows = list(iter_reports(Path(root) if root else None))
    pred = label_matrix([" ".join(filter(None, (r["findings"], r["impression"]))) for r in rows])
    mesh = mesh_matrix([r["mesh"] for r in rows])
    part = np.array([report_part(r["uid"]) for r in rows])
    records = []
    for j, k in enumerate(LABELS):
        if int(mesh[:, j].sum()) < min_support:
            continue
        for name in PARTS:
            sel = part == name
            p_, m_ = pred[sel, j], mesh[sel, j]
            support = int(m_.sum())
            tp = int((p_ & m_).sum())
            prec = tp / max(int(p_.sum()), 1)
            rec = tp / max(support, 1)
            f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
            for metric, v in (("precision", prec), ("recall", rec), ("F1", f1), ("support", support),
                              ("reports", int(sel.sum()))):
                records.append(ResultRecord(f"labeller/{k}", "mini/reports", name, "rules-v1", metric, float(v), 0))
    write_results(out / "results.json", records, provenance())
    dev = [{"uid": r["uid"], "label": k, "kind": "false_positive" if pred[i, j] else "false_negative"}
           for i, r in enumerate(rows) if part[i] == "dev"
           for j, k in enumerate(LABELS) if pred[i, j] != mesh[i, j]]
    (out / "disagreements_dev.jsonl").write_text("".join(json.dumps(d) + "\n" for d in dev))
    lines = ["# Report labeller vs IU X-ray MeSH", "",
             f"Rules are developed on the dev part ({int((part == 'dev').sum())} reports; disagreements in "
             f"disagreements_dev.jsonl) and scored on the held-out part ({int((part == 'held_out').sum())} reports).",
             "", "| finding | part | MeSH support | precision | recall | F1 |", "|---|---|---|---|---|---|"]
    by: dict[tuple[str, str], dict[str, float]] = {}
    for r in records:
        by.setdefault((r.task.split("/")[1], r.split), {})[r.metric] = r.value
    for (k, name), m in by.items():
        lines.append(f"| {k} | {name} | {int(m['support'])} | {m['precision']:.3f} | {m['recall']:.3f} | "
                     f"{m['F1']:.3f} |")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    write_json_atomic(out / "status.json", {"status": "complete"})
    return records
