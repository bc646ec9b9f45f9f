"""The image tower of a user's open_clip checkpoint folder as an mmfm encoder (BiomedCLIP, PubMedCLIP, a CLIP
fine-tuned elsewhere, ...), added with ``mmfm zoo add FOLDER``.

Only the image tower is built, from ``open_clip_config.json``'s ``model_cfg["vision_cfg"]`` with open_clip's own
builder (a ViT, or a timm trunk as BiomedCLIP's, never fetching timm weights), and only the ``visual.*`` tensors of
the folder's weight file are loaded (safetensors or ``torch.load(weights_only=True)``, strict): the text tower of
such folders often names a Hugging Face model that would be fetched from the hub, which mmfm never does.

Preprocessing contract: the tower's own input size and normalisation (``preprocess_cfg`` mean/std, CLIP's by
default) applied inside ``forward``; a 1-channel input is repeated to RGB. Outputs follow mmfm's encoder
interface: ``tokens`` = the last hidden states of the patch tokens after the final norm (B, N, width),
``pooled`` = their mean (the projection into the joint image-text space is not kept); ``pyramid`` = hidden
states after evenly spaced blocks on the patch grid (as mmfm's ViT),
so UNETR-style decoders work on it. 2D only: open_clip towers are 2D. ResNet (RN50-style) towers are refused.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from mmfm.encoders.base import ENCODERS, Encoder
from mmfm.errors import CheckpointError, ConfigError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)   # open_clip's defaults (OPENAI_DATASET_MEAN / STD)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class OpenCLIPImageTower(Encoder):
    """x (B, C, H, W) in [0, 1] -> tokens (B, N, width), pooled (B, width), pyramid [(B, width, h, w)]."""

    def __init__(self, config: dict[str, Any], in_channels: int = 1) -> None:
        super().__init__()
        from open_clip.model import _build_vision_tower

        model_cfg = config.get("model_cfg") or {}
        vision = dict(model_cfg.get("vision_cfg") or {})
        if not vision or "embed_dim" not in model_cfg:
            raise ConfigError("open_clip_config.json has no model_cfg.vision_cfg / embed_dim",
                              "use the open_clip_config.json that came with the weights")
        if isinstance(vision.get("layers"), (list, tuple)):
            raise ConfigError("open_clip ResNet image towers (RN50-style) are not supported as mmfm encoders",
                              "use a ViT open_clip model (e.g. ViT-B-16, BiomedCLIP)")
        if vision.get("timm_model_name"):
            vision["timm_model_pretrained"] = False          # never fetch timm weights; ours come from the folder
        self.tower = _build_vision_tower(model_cfg["embed_dim"], vision, model_cfg.get("quick_gelu", False))
        # the projection into the joint image-text space is not part of mmfm's encoder outputs (tokens, pooled):
        # dropped, so no parameter is left without a gradient (its weights are skipped at load, PROJECTION_KEYS)
        if hasattr(self.tower, "trunk"):
            self.tower.head = torch.nn.Identity()
        else:
            self.tower.proj = None
        size = vision.get("image_size", 224)
        self.image_size = (size, size) if isinstance(size, int) else tuple(size)
        pre = config.get("preprocess_cfg") or {}
        self.register_buffer("mean", torch.tensor(pre.get("mean", CLIP_MEAN)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(pre.get("std", CLIP_STD)).view(1, 3, 1, 1), persistent=False)
        self.spatial_dims, self.in_channels = 2, in_channels
        self.depth = len(self._blocks())
        self.patch = self._patch_size()
        probe = self._intermediates(torch.zeros(1, 3, *self.image_size), [self.depth - 1])[0]
        self.out_dim = int(probe.shape[1])
        self.contract = {"input_size": list(self.image_size), "channels": 3, "mean": self.mean.flatten().tolist(),
                         "std": self.std.flatten().tolist(), "source": "open_clip folder (image tower)"}

    def _blocks(self) -> Any:
        t = self.tower
        return t.trunk.blocks if hasattr(t, "trunk") else t.transformer.resblocks

    def _patch_size(self) -> int:
        t = self.tower
        p = t.trunk.patch_embed.patch_size if hasattr(t, "trunk") else t.patch_size
        return int(p[0] if isinstance(p, (tuple, list)) else p)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ConfigError(f"an open_clip image tower takes 2D images (B, C, H, W), got {tuple(x.shape)}",
                              "use it with 2D data (volumes: slice them with a 2D data.size)")
        if x.shape[1] != 3:   # grey (or any other channel count, averaged to grey) repeated to RGB
            x = x.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
        if x.shape[-2:] != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std

    def _intermediates(self, x: torch.Tensor, indices: list[int]) -> list[torch.Tensor]:
        # open_clip's own forward_intermediates (ViT and timm trunk alike): patch tokens as (B, C, h, w), every
        # level normalised by the final norm (as the tokens the tower was trained to project)
        out = self.tower.forward_intermediates(x, indices=indices, normalize_intermediates=True,
                                               intermediates_only=True, output_fmt="NCHW")
        return out["image_intermediates"]

    def set_grad_checkpointing(self, enable: bool = True) -> bool:
        self.tower.set_grad_checkpointing(enable)   # open_clip's own (both its ViT and its timm trunks have it)
        return True

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        last = self._intermediates(self._prepare(x), [self.depth - 1])[0]      # (B, D, h, w)
        tokens = last.flatten(2).transpose(1, 2)                                # (B, N, D)
        return {"tokens": tokens, "pooled": tokens.mean(dim=1)}

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Hidden states after log2(patch) evenly spaced blocks, as mmfm's ViT (blocks 3, 6, 9, 12 of a ViT-B/16)."""
        levels = max(1, int(math.log2(self.patch)))
        take = sorted({round(self.depth * (n + 1) / levels) - 1 for n in range(levels)})
        return self._intermediates(self._prepare(x), take)


def read_config(folder: Path) -> dict[str, Any]:
    import json

    try:
        return json.loads((folder / "open_clip_config.json").read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{folder / 'open_clip_config.json'}: cannot read ({e})",
                              "use the open_clip_config.json that came with the weights") from None


def load_tower(folder: Path, state: dict[str, torch.Tensor], in_channels: int = 1) -> OpenCLIPImageTower:
    """The image tower of an open_clip folder with the ``visual.*`` tensors of ``state`` loaded strictly."""
    enc = OpenCLIPImageTower(read_config(folder), in_channels)
    visual = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
    visual = {k: v for k, v in visual.items() if k != "proj" and not k.startswith("head.")}   # see __init__
    if not visual:
        raise CheckpointError(f"{folder.name}: the weights hold no 'visual.*' tensors (no open_clip image tower)",
                              "add the folder's full open_clip checkpoint (open_clip_model.safetensors or "
                              "open_clip_pytorch_model.bin)")
    try:
        enc.tower.load_state_dict(visual, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{folder.name}: the weights do not match open_clip_config.json's image tower "
                              f"({str(e).splitlines()[0]})", "use the config that came with these weights") from None
    return enc


@ENCODERS.register("open_clip_tower")
def open_clip_tower(spatial_dims: int = 2, in_channels: int = 1, folder: str = "") -> OpenCLIPImageTower:
    """The architecture of an open_clip folder's image tower (random weights: a trained run's checkpoint, or
    :func:`load_tower`, supplies them). Used to rebuild runs fine-tuned from a user's open_clip checkpoint."""
    if spatial_dims != 2:
        raise ConfigError("an open_clip image tower is 2D", "use 2D data, or a 3D encoder (vit_*, swin_*, merlin)")
    if not folder:
        raise ConfigError("encoder open_clip_tower needs encoder.folder (an open_clip checkpoint folder)",
                          "add the folder with `mmfm zoo add FOLDER` and use encoder.weights=NAME")
    return OpenCLIPImageTower(read_config(Path(folder)), in_channels)
