"""3D propagation of a promptable 2D segmenter through a volume, slice by slice (SAM2 / MedSAM-2 ideas for a 2D
model such as LiteMedSAM, which has no memory of its own).

* Each next slice is prompted by the previous slice's mask: its box, enlarged by a pixel and a fraction of its
  size so that the structure can grow, and (``mask_prompt``) its logits as SAM's dense mask prompt (the prompt
  encoder's mask-downscaling path). The mask prompt is off by default: LiteMedSAM's decoder was trained with box
  prompts only (MedSAM), and on the LiTS liver the mask prompt lowered the 3D Dice (docs/downstream.md,
  scripts/real_promptable_lits.py); a model fine-tuned with mask prompts can turn it on.
* Propagation runs both ways from every prompted slice. Between two prompted slices both sweeps are kept and
  their logits fused, each weighted by its nearness to its own prompt; outside them the nearest prompt's sweep
  rules.
* A sweep stops where the structure ends, judged by the model and by shape continuity: the mask vanishes, the
  decoder's own IoU estimate drops, the area jumps (grows more than ``max_growth`` times: the box took in a
  neighbour), or the new mask hardly overlaps the previous one; an intensity jump inside the mask
  (``max_change``) is a further, optional rule.
* :meth:`VolumePropagation.correct`: positive/negative clicks on any slice re-decode that slice (its clicks, its
  box and its current logits as the mask prompt) and re-propagate outwards only while the result differs from the
  one it replaces, so a correction changes the slices near it and leaves the rest as they were.
* :class:`EmbeddingCache` keeps each slice's image embedding (keyed by slice index), so a correction costs only
  the mask decoder.

The logic talks to the model through :class:`SlicePredictor` (``mmfm.tasks.promptable.ModelSlices`` for a
SAM-style model), so it is tested with a small deterministic predictor.

Box coordinates are (x0, y0, x1, y1) in pixels of a slice shown as rows x columns (x = column).

Reference: Ravi et al., SAM 2, 2024; Zhu et al., MedSAM-2, 2024; Kirillov et al., Segment Anything, ICCV 2023.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import scipy.ndimage as ndi
import torch


def box_of(mask: np.ndarray, margin: float = 0.0) -> list[float] | None:
    """(x0, y0, x1, y1) around the True pixels of a (H, W) mask, widened by ``margin`` pixels (None if empty)."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return None
    h, w = mask.shape
    return [max(0.0, cols.min() - margin), max(0.0, rows.min() - margin),
            min(w - 1.0, cols.max() + margin), min(h - 1.0, rows.max() + margin)]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two bool masks (1.0 when both are empty)."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


@dataclass
class SliceOutput:
    """One slice's prediction: mask (rows, cols) bool, the predictor's logits (any shape it can turn back into a
    mask with ``to_mask``; the next slice's mask prompt) and the decoder's IoU estimate."""

    mask: np.ndarray
    logits: torch.Tensor
    score: float


class SlicePredictor(Protocol):
    """A 2D promptable model applied to the slices of one volume."""

    n_slices: int

    def predict(self, k: int, box: Sequence[float] | None, points: Sequence[Sequence[float]] = (),
                labels: Sequence[int] = (), mask_prompt: torch.Tensor | None = None) -> SliceOutput: ...

    def to_mask(self, k: int, logits: torch.Tensor) -> np.ndarray: ...

    def image(self, k: int) -> np.ndarray: ...


class EmbeddingCache:
    """Image embeddings of a volume's slices, keyed by slice index; ``embed(indices)`` computes missing ones, the
    next ``batch`` slices in the direction of the last request in one forward (look-ahead along a sweep)."""

    def __init__(self, embed: Callable[[list[int]], list[Any]], n_slices: int, batch: int = 1) -> None:
        self._embed, self.n_slices, self.batch = embed, n_slices, max(1, batch)
        self._store: dict[int, Any] = {}
        self.computed = 0                       # embeddings computed so far (a correction adds none)
        self._last: int | None = None

    def __contains__(self, k: int) -> bool:
        return k in self._store

    def __len__(self) -> int:
        return len(self._store)

    def get(self, k: int) -> Any:
        step = -1 if self._last is not None and k < self._last else 1
        self._last = k
        if k not in self._store:
            ks = [j for j in range(k, k + step * self.batch, step) if 0 <= j < self.n_slices and j not in self._store]
            for j, e in zip(ks, self._embed(ks)):
                self._store[j] = e
            self.computed += len(ks)
        return self._store[k]


@dataclass
class Rules:
    """How a sweep prompts the next slice and when it stops (see the module docstring).

    ``margin``: pixels the previous mask's box is widened by, plus ``margin_fraction`` of its longer side;
    ``mask_prompt``: give the previous logits as the
    dense prompt; ``min_score``: lowest decoder IoU estimate; ``max_growth``: the largest factor by which the
    area may grow from one slice to the next (None: no limit; shrinking is how a structure ends);
    ``min_overlap``: the least fraction of the new mask inside the previous one, dilated by ``margin`` (None: no
    limit); ``max_change``: the largest change of mean intensity inside the mask (None: not checked); ``settle``:
    a correction's re-propagation stops at the first slice whose new mask has at least this Dice with the old
    one."""

    margin: float = 1.0
    margin_fraction: float = 0.04
    mask_prompt: bool = False
    min_score: float = 0.5
    min_pixels: int = 1
    max_growth: float | None = 2.0
    min_overlap: float | None = 0.5
    max_change: float | None = None
    settle: float = 0.97


@dataclass
class SlicePrompt:
    box: list[float] | None
    points: list[list[float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)


class VolumePropagation:
    """Prompts on one or more slices -> a 3D mask ``(n_slices, rows, cols)``; clicks correct it locally.

    ``add_prompt(k, box, points, labels)`` for each prompted slice, then ``run()``; ``correct(k, points,
    labels)`` afterwards. ``scores`` (slice -> IoU estimate), ``stopped`` (sweep -> why it ended) and ``sources``
    (slice -> the prompted slices its mask came from) say what happened."""

    def __init__(self, predictor: SlicePredictor, rules: Rules | None = None, progress: Any = None) -> None:
        self.predictor, self.rules, self.progress = predictor, rules or Rules(), progress
        self.prompts: dict[int, SlicePrompt] = {}
        self.clicks: dict[int, SlicePrompt] = {}
        self.slices: dict[int, SliceOutput] = {}
        self.sources: dict[int, list[int]] = {}
        self.stopped: dict[str, str] = {}

    def add_prompt(self, k: int, box: Sequence[float] | None, points: Sequence[Sequence[float]] = (),
                   labels: Sequence[int] = ()) -> None:
        self.prompts[k] = SlicePrompt(None if box is None else [float(v) for v in box],
                                      [[float(c) for c in p] for p in points],
                                      list(labels) or [1] * len(points))

    @property
    def scores(self) -> dict[int, float]:
        return {k: s.score for k, s in sorted(self.slices.items())}

    def volume(self, shape: tuple[int, int]) -> np.ndarray:
        """(n_slices, rows, cols) bool."""
        out = np.zeros((self.predictor.n_slices, *shape), dtype=bool)
        for k, s in self.slices.items():
            out[k] = s.mask
        return out

    # ---- one slice and one sweep ------------------------------------------------------------------------------

    def _tick(self) -> None:
        if self.progress is not None:
            self.progress.update(1)

    def _next(self, k: int, prev: SliceOutput, clicks: SlicePrompt | None = None) -> SliceOutput:
        """Slice ``k`` prompted by the previous slice's mask: its widened box and its logits."""
        pts = clicks.points if clicks else []
        labels = clicks.labels if clicks else []
        return self.predictor.predict(k, self.box_after(prev.mask), pts, labels,
                                      prev.logits if self.rules.mask_prompt else None)

    def box_after(self, mask: np.ndarray) -> list[float] | None:
        """The box that prompts the next slice: around ``mask``, widened by ``margin`` pixels plus
        ``margin_fraction`` of its longer side (room for the structure to grow)."""
        box = box_of(mask)
        if box is None:
            return None
        grow = self.rules.margin + self.rules.margin_fraction * max(box[2] - box[0], box[3] - box[1])
        return box_of(mask, grow)

    def why_stop(self, k: int, out: SliceOutput, prev: SliceOutput, prev_k: int) -> str:
        """Why the structure has ended at slice ``k`` ('' if it goes on)."""
        r, area, before = self.rules, int(out.mask.sum()), int(prev.mask.sum())
        if area < r.min_pixels:
            return "the mask vanished"
        if out.score < r.min_score:
            return f"IoU estimate {out.score:.2f} < {r.min_score}"
        if r.max_growth is not None and area > before * r.max_growth:
            return f"the area grew from {before} to {area} pixels (more than x{r.max_growth:g})"
        if r.min_overlap is not None:
            grown = ndi.binary_dilation(prev.mask, iterations=max(1, round(r.margin)))
            inside = int((out.mask & grown).sum()) / area
            if inside < r.min_overlap:
                return f"only {inside:.2f} of the mask overlaps the previous slice's (< {r.min_overlap})"
        if r.max_change is not None:
            change = abs(_mean_in(self.predictor.image(k), out.mask) - _mean_in(self.predictor.image(prev_k),
                                                                                                prev.mask))
            if change > r.max_change:
                return f"mean intensity changed by {change:.2f} > {r.max_change}"
        return ""

    def _sweep(self, start: int, first: SliceOutput, step: int, end: int) -> tuple[dict[int, SliceOutput], str]:
        """Slices start+step, start+2*step, ... up to (not including) ``end``: their outputs and why it ended."""
        out: dict[int, SliceOutput] = {}
        prev, k = first, start + step
        while k != end:
            cur = self._next(k, prev)
            self._tick()
            why = self.why_stop(k, cur, prev, k - step)
            if why:
                return out, f"slice {k}: {why}"
            out[k], prev, k = cur, cur, k + step
        return out, ("reached the end of the volume" if end in (-1, self.predictor.n_slices)
                     else f"reached the prompted slice {end}")

    # ---- the whole volume ---------------------------------------------------------------------------------------

    def run(self) -> VolumePropagation:
        """Segment every prompted slice, sweep both ways from each and merge (see the module docstring)."""
        n = self.predictor.n_slices
        anchors = sorted(self.prompts)
        firsts: dict[int, SliceOutput] = {}
        self.slices, self.sources, self.stopped = {}, {}, {}
        for k in anchors:
            p = self.prompts[k]
            firsts[k] = self.predictor.predict(k, p.box, p.points, p.labels, None)
            self._tick()
            self.slices[k], self.sources[k] = firsts[k], [k]
        live = [k for k in anchors if firsts[k].mask.sum() >= self.rules.min_pixels]
        for k in anchors:
            if k not in live:
                self.stopped[f"{k}"] = f"the prompted slice {k} gave an empty mask (IoU {firsts[k].score:.2f})"
        # sweeps end at the next prompted slice; an empty prompted slice does not block them
        for i, a in enumerate(live):
            for step, name in ((1, "up"), (-1, "down")):
                nxt = live[i + 1] if step == 1 and i + 1 < len(live) else (live[i - 1] if step == -1 and i else None)
                end = nxt if nxt is not None else (n if step == 1 else -1)
                sweep, why = self._sweep(a, firsts[a], step, end)
                self.stopped[f"{a} {name}"] = why
                for k, out in sweep.items():
                    self._merge(k, out, a, nxt)
        return self

    def _merge(self, k: int, out: SliceOutput, origin: int, other: int | None) -> None:
        """Put a sweep's output for slice ``k`` in; a slice between two prompted slices fuses both sweeps' logits,
        each weighted by its nearness to its own prompt."""
        if k not in self.slices:
            self.slices[k], self.sources[k] = out, [origin]
            return
        prior, prior_origin = self.slices[k], self.sources[k][0]
        if other is None or prior_origin != other:        # cannot happen between two anchors' sweeps
            return
        w = abs(other - k) / abs(other - origin)           # this sweep's weight: 1 at its own prompt
        logits = w * out.logits + (1 - w) * prior.logits
        self.slices[k] = SliceOutput(self.predictor.to_mask(k, logits), logits, w * out.score + (1 - w) * prior.score)
        self.sources[k] = [prior_origin, origin]

    # ---- corrections --------------------------------------------------------------------------------------------

    def correct(self, k: int, points: Sequence[Sequence[float]], labels: Sequence[int]) -> list[int]:
        """Add clicks (x, y) with labels (1 structure, 0 not) on slice ``k``: re-decode it (its clicks so far, its
        box, its current logits as the mask prompt), then re-propagate outwards while the new masks differ from the
        old (Dice < ``settle``), no further than a prompted slice. Returns the slices whose mask changed."""
        c = self.clicks.setdefault(k, SlicePrompt(None))
        c.points += [[float(v) for v in p] for p in points]
        c.labels += [int(v) for v in labels]
        old = self.slices.get(k)
        prompt = self.prompts.get(k)
        box = prompt.box if prompt is not None else (self.box_after(old.mask) if old else None)
        pts = (prompt.points if prompt else []) + c.points
        labs = (prompt.labels if prompt else []) + c.labels
        cur = self.predictor.predict(k, box, pts, labs, old.logits if old is not None and self.rules.mask_prompt
                                     else None)
        self._tick()
        changed = [k]
        self.slices[k] = cur
        self.sources[k] = sorted({*self.sources.get(k, []), k})
        for step in (1, -1):
            prev, j = cur, k + step
            while 0 <= j < self.predictor.n_slices and j not in self.prompts:
                new = self._next(j, prev, self.clicks.get(j))
                self._tick()
                before = self.slices.get(j)
                stop = self.why_stop(j, new, prev, j - step)
                if stop:
                    new = SliceOutput(np.zeros_like(new.mask), new.logits, new.score)
                if before is not None and dice(new.mask, before.mask) >= self.rules.settle:
                    break
                if before is None and stop:
                    break
                if stop:
                    del self.slices[j]
                    self.sources.pop(j, None)
                else:
                    self.slices[j] = new
                    self.sources[j] = sorted({*self.sources.get(j, []), k})
                changed.append(j)
                if stop:
                    break
                prev, j = new, j + step
        return sorted(changed)


def _mean_in(image: np.ndarray, mask: np.ndarray) -> float:
    return float(image[mask].mean()) if image.ndim == 2 else float(image[mask].mean(axis=0).mean())
