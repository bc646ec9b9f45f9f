"""Where a model looked: saliency maps on the model's input grid, in 2D and 3D.

* :func:`attention_rollout` for ViT encoders (timm blocks): attention of every layer, averaged over heads, plus
  the identity (residual), rows renormalised, multiplied through the layers; a token's relevance is its column
  mean (the pooled feature is the mean of all tokens). Reference: Abnar & Zuidema, Quantifying Attention Flow in
  Transformers, ACL 2020.
* :func:`grad_cam` for CNN encoders through MONAI's ``GradCAM`` (Selvaraju et al., ICCV 2017) on the encoder's
  last stage whose feature map is at least 4 on a side (:func:`cam_layer`).
* :func:`occlusion` for any model through MONAI's ``OcclusionSensitivity`` (Zeiler & Fergus, ECCV 2014): how much
  the class probability drops when a patch is hidden.
* :func:`word_regions` for image-text models: each word's attention over image regions, the softmax of the
  scaled cosine similarities of its projected token with the projected image tokens (GLoRIA's word-region
  attention; Huang et al., ICCV 2021).
* :func:`pointing_game`: the saliency maximum falls inside the reference mask (Zhang et al., ECCV 2016).

Every map comes back as (B, *spatial) on the input's grid, scaled to [0, 1] per image.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmfm.errors import ConfigError


def normalise(maps: torch.Tensor) -> torch.Tensor:
    """Per-image min-max scaling to [0, 1] of (B, *spatial)."""
    flat = maps.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(1e-12)).view_as(maps)


def to_input_grid(maps: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """(B, *grid) token maps -> (B, *size) by (tri/bi)linear interpolation."""
    mode = "trilinear" if len(size) == 3 else "bilinear"
    return F.interpolate(maps[:, None].float(), size=size, mode=mode, align_corners=False)[:, 0]


def _timm_blocks(encoder: nn.Module) -> list[nn.Module]:
    blocks = [m for m in encoder.modules() if hasattr(m, "attn") and hasattr(m.attn, "attn_drop")]
    if not blocks:
        raise ConfigError("attention rollout needs a ViT encoder (timm attention blocks)",
                          "use --method gradcam (CNN encoders) or occlusion (any model)")
    return blocks


@torch.no_grad()
def attention_rollout(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, *spatial) relevance of each input position for the encoder's pooled feature. x: (B, C, *spatial)."""
    blocks = _timm_blocks(encoder)
    maps: list[torch.Tensor] = []
    hooks, fused = [], []
    for blk in blocks:
        fused.append(getattr(blk.attn, "fused_attn", False))
        blk.attn.fused_attn = False       # the fused kernel never materialises the attention matrix
        hooks.append(blk.attn.attn_drop.register_forward_hook(lambda m, i, o: maps.append(o.detach())))
    try:
        encoder.eval()
        encoder(x)
    finally:
        for h in hooks:
            h.remove()
        for blk, f in zip(blocks, fused):
            blk.attn.fused_attn = f
    n = maps[0].shape[-1]
    eye = torch.eye(n, device=x.device)
    rollout = eye.expand(x.shape[0], n, n)
    for a in maps:                                                  # (B, H, N, N)
        a = a.mean(1) + eye                                         # heads averaged, residual added
        a = a / a.sum(-1, keepdim=True)
        rollout = a @ rollout                                       # (B, N, N)
    relevance = rollout.mean(1)                                     # (B, N): pooled = mean of tokens
    p = int(getattr(encoder, "patch_size", 0))
    if not p:
        raise ConfigError("attention rollout needs the encoder's patch size", "use --method occlusion")
    grid = tuple(s // p for s in x.shape[2:])
    return normalise(to_input_grid(relevance.view(x.shape[0], *grid), tuple(x.shape[2:])))


class _Logits(nn.Module):
    """image -> class logits of a classification task (MONAI's visualisers call a module on a tensor)."""

    def __init__(self, task: nn.Module) -> None:
        super().__init__()
        self.task = task

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.task.logits(image)


def cam_layer(encoder: nn.Module, x: torch.Tensor, min_side: int = 4) -> str:
    """The layer Grad-CAM reads: the last block (a module with children, in the order blocks finish) whose feature
    map is at least ``min_side`` on every side -- the last stage of a CNN on a usual input (7x7 for 224 pixels),
    an earlier one when the input is so small that the last stage is 1x1 (no place left to point at)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    finished: list[tuple[str, tuple[int, ...]]] = []
    hooks = []
    for name, m in encoder.named_modules():
        # a layer with an adapter (peft) is one layer, not a block: merged, it is a plain layer again, and the
        # adapted and the merged model must read the same block
        if name and any(True for _ in m.children()) and not isinstance(m, BaseTunerLayer):
            hooks.append(m.register_forward_hook(
                lambda mod, i, o, name=name: finished.append((name, tuple(o.shape[2:])))
                if torch.is_tensor(o) and o.ndim == x.ndim else None))
    was_training = encoder.training
    try:
        with torch.no_grad():
            encoder.eval()
            encoder(x)
    finally:
        encoder.train(was_training)
        for h in hooks:
            h.remove()
    if not any(isinstance(m, (nn.Conv2d, nn.Conv3d)) for m in encoder.modules()) or not finished:
        raise ConfigError("Grad-CAM needs a convolutional encoder", "use --method rollout (ViT) or occlusion")
    big = [n for n, shape in finished if min(shape) >= min_side]
    return big[-1] if big else max(finished, key=lambda f: int(np.prod(f[1])))[0]


def grad_cam(task: nn.Module, x: torch.Tensor, class_idx: int | None = None) -> torch.Tensor:
    """(B, *spatial) Grad-CAM of a classification task for ``class_idx`` (default: the predicted class)."""
    from monai.visualize import GradCAM

    model = _Logits(task).eval()
    # MONAI's default post-processing maps (min, max) to (1, 0) (for its display convention): keep the raw map
    cam = GradCAM(nn_module=model, target_layers="task.encoder." + cam_layer(task.encoder, x[:1]),
                  postprocessing=lambda m: m)
    # the gradient must reach the layer whatever trains: a frozen encoder, or one whose LoRA adapters were merged
    # into plain frozen layers, has no parameter that requires it, so MONAI's backward hook would never fire;
    # an input that requires grad puts every activation in the graph (the weights are left as they are)
    x = x.detach().float().requires_grad_(True)
    with torch.enable_grad():
        maps = cam(x, class_idx=class_idx)                          # (B, 1, *spatial), already upsampled
    return normalise(maps[:, 0].detach())


def occlusion(task: nn.Module, x: torch.Tensor, class_idx: int | None = None, mask_size: int | None = None,
              overlap: float = 0.5) -> torch.Tensor:
    """(B, *spatial): the drop of the class probability when a ``mask_size`` patch around each position is hidden
    (grey = the image mean). ``mask_size`` default: 1/8 of the smallest side in 2D, 1/4 in 3D (at least 2;
    the number of occluded copies grows as (side / mask)^dims)."""
    from monai.visualize import OcclusionSensitivity

    model = nn.Sequential(_Logits(task), nn.Softmax(dim=1)).eval()
    size = mask_size or max(2, min(x.shape[2:]) // (8 if x.ndim == 4 else 4))
    occ = OcclusionSensitivity(nn_module=model, mask_size=size, n_batch=64, overlap=overlap, mode="mean_img",
                               verbose=False)
    out = []
    with torch.no_grad():
        for i in range(x.shape[0]):
            xi = x[i:i + 1]
            c = int(model(xi).argmax(1)) if class_idx is None else class_idx
            maps, _ = occ(xi)                                      # (1, K, *spatial): probability when occluded
            out.append(-maps[0, c])                                # low probability when hidden = important
    return normalise(torch.stack(out))


@torch.no_grad()
def word_regions(dual: nn.Module, x: torch.Tensor, text: str) -> tuple[list[str], torch.Tensor]:
    """(words, maps (W, *spatial)) for one image x (1, C, *spatial): each word's attention over the image regions
    (the encoder's token grid), upsampled; subword tokens are merged into words (their maps averaged), special
    tokens left out."""
    dual.eval()
    img = dual.image_features(x, local=True)["local"]               # (1, N, E)
    txt = dual.text_features([text], local=True)
    words, mask = txt["local"][0], txt["mask"][0].bool()             # (L, E), (L,)
    sim = F.normalize(words, dim=-1) @ F.normalize(img[0], dim=-1).T  # (L, N)
    attn = torch.softmax(dual.logit_scale.exp().clamp(max=100) * sim, dim=-1)
    tok = dual.text.tokenize([text], dual.max_length)
    ids = tok["input_ids"][0].tolist() if "input_ids" in tok else list(range(len(mask)))
    tokenizer = getattr(dual.text, "tokenizer", None)
    names = tokenizer.convert_ids_to_tokens(ids) if tokenizer is not None else [str(i) for i in ids]
    special = set(getattr(tokenizer, "all_special_tokens", []) or [])
    keep = [i for i in range(len(names)) if i < len(mask) and mask[i] and names[i] not in special]
    if not keep:
        raise ConfigError("the text has no word tokens", "give a sentence, e.g. --text 'liver lesion'")
    grid = encoder_token_grid(dual.image, x, img.shape[1])
    words, groups = merge_subwords([names[i] for i in keep])
    maps = torch.stack([attn[[keep[i] for i in g]].mean(0) for g in groups]).view(len(groups), *grid)
    return words, normalise(to_input_grid(maps, tuple(x.shape[2:])))


def merge_subwords(tokens: list[str]) -> tuple[list[str], list[list[int]]]:
    """Whole words from subword tokens (WordPiece "##" continuations; SentencePiece/BPE word-start marks), with the
    token indices of each word (its map is their mean)."""
    starts = ("\u2581", "\u0120")          # SentencePiece "▁", byte-level BPE "Ġ"
    marked = any(t.startswith(starts) for t in tokens)
    words: list[str] = []
    groups: list[list[int]] = []
    for i, t in enumerate(tokens):
        cont = t.startswith("##") if not marked else not t.startswith(starts)
        if cont and words:
            words[-1] += t[2:] if t.startswith("##") else t
            groups[-1].append(i)
        else:
            words.append(t.lstrip("".join(starts)))
            groups.append([i])
    return words, groups


def encoder_token_grid(encoder: nn.Module, x: torch.Tensor, n_tokens: int) -> tuple[int, ...]:
    """The spatial grid of an encoder's tokens for input x, found from the encoder itself: patch grid (ViT) or
    last feature map (CNN). (:func:`mmfm.tasks.segmentation.token_grid` infers a grid from a token count.)"""
    p = int(getattr(encoder, "patch_size", 0) or 0)
    grid: tuple[int, ...] = ()
    if p:
        grid = tuple(s // p for s in x.shape[2:])
    elif hasattr(encoder, "pyramid"):
        try:
            grid = tuple(encoder.pyramid(x)[-1].shape[2:])
        except (NotImplementedError, ConfigError):
            grid = ()
    if int(np.prod(grid or (0,))) != n_tokens:
        raise ConfigError(f"cannot place the encoder's {n_tokens} tokens on the input grid",
                          "word-region maps need a ViT or CNN image tower")
    return grid


def pointing_game(saliency: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor, tolerance: int = 0) -> bool:
    """Whether the saliency maximum lies in ``mask`` (same spatial shape), or within ``tolerance`` voxels of it."""
    s = np.asarray(saliency, dtype=np.float64)
    m = np.asarray(mask).astype(bool)
    if s.shape != m.shape:
        raise ConfigError(f"saliency {s.shape} and mask {m.shape} differ in shape", "give the mask on the image grid")
    if not m.any():
        raise ConfigError("the mask is empty: the pointing game needs a structure", "give a non-empty mask")
    peak = np.unravel_index(int(np.argmax(s)), s.shape)
    if tolerance <= 0:
        return bool(m[peak])
    from scipy.ndimage import distance_transform_edt

    return bool(distance_transform_edt(~m)[peak] <= tolerance)


def explain_methods(task: Any) -> list[str]:
    """The default methods for a classification task's encoder: rollout (ViT) or Grad-CAM (CNN), and occlusion."""
    enc = task.encoder
    try:
        _timm_blocks(enc)
        return ["rollout", "occlusion"]
    except ConfigError:
        pass
    if any(isinstance(m, (nn.Conv2d, nn.Conv3d)) for m in enc.modules()):
        return ["gradcam", "occlusion"]
    return ["occlusion"]


def saliency(task: nn.Module, x: torch.Tensor, method: str, class_idx: int | None = None) -> torch.Tensor:
    """One method's (B, *spatial) map of a classification task on x (B, C, *spatial)."""
    if method == "rollout":
        return attention_rollout(task.encoder, x)
    if method == "gradcam":
        return grad_cam(task, x, class_idx)
    if method == "occlusion":
        return occlusion(task, x, class_idx)
    raise ConfigError(f"unknown explanation method '{method}'", "use rollout, gradcam or occlusion")


def plot_saliency_examples(task: nn.Module, dataset: Any, out_png: Any, n: int = 4,
                           class_names: list[str] | None = None) -> Any:
    """The first ``n`` images of ``dataset`` with each default method's map over them (predicted class)."""
    import matplotlib

    matplotlib.use("Agg")
    from itertools import islice

    import matplotlib.pyplot as plt

    from mmfm.data.batches import iter_items

    items = list(islice(iter_items(dataset), n))
    k = len(items)
    if k == 0:
        return None
    x = torch.stack([torch.as_tensor(it["image"]) for it in items])
    # occlusion of a volume runs the model hundreds of times: volumes get the one-pass method only
    methods = [m for m in explain_methods(task) if not (m == "occlusion" and x.ndim == 5)] or ["occlusion"]
    task.eval()
    with torch.no_grad():
        pred = task.predict(x).argmax(1).tolist()
    maps = {m: saliency(task, x, m) for m in methods}

    def plane(a: np.ndarray) -> np.ndarray:
        return (a[..., a.shape[-1] // 2] if a.ndim == 3 else a).T

    fig, axes = plt.subplots(k, len(methods) + 1, figsize=(2.4 * (len(methods) + 1), 2.4 * k), squeeze=False)
    for i in range(k):
        img = x[i].float().mean(0).numpy()
        axes[i, 0].imshow(plane(img), cmap="gray")
        name = class_names[pred[i]] if class_names and pred[i] < len(class_names) else str(pred[i])
        axes[i, 0].set_title(f"predicted: {name}", fontsize=8)
        for j, m in enumerate(methods):
            axes[i, j + 1].imshow(plane(img), cmap="gray")
            axes[i, j + 1].imshow(plane(maps[m][i].numpy()), cmap="jet", alpha=0.45, vmin=0, vmax=1)
            axes[i, j + 1].set_title(m, fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=80)
    plt.close(fig)
    return out_png
