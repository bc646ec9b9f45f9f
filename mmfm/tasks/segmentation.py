"""Semantic segmentation (2D or 3D) with Dice + cross-entropy loss (MONAI's ``DiceCELoss``).

Two networks, chosen by ``task.network``:

* ``encoder`` (default): the configured registry encoder (``encoder.name`` or ``encoder.weights``: ViT, Swin,
  ResNet, LiteMedSAM, ...), so that a pretrained encoder is what is being adapted, with one of two decoders
  (``task.decoder``):

  - ``unetr`` (default where the encoder has intermediate features): a U-Net decoder over the encoder's
    pyramid (:meth:`Encoder.pyramid`), built from MONAI's UNETR blocks. A ViT's hidden states (one grid) are
    brought to grids 2x apart by transposed convolutions (``UnetrPrUpBlock``, as UNETR); a hierarchical encoder's
    stages (Swin, ResNet) are used as they are (as Swin UNETR); each decoder step upsamples, concatenates the
    skip and applies a residual block (``UnetResBlock``); the last skip is a convolution of the input image.
  - ``token``: a light progressive-upsampling decoder over the last tokens (SETR-PUP style) with one
    full-resolution skip from the input (any encoder whose tokens lie on a grid).
* ``basicunet``: MONAI's BasicUNet trained from scratch, a whole network of its own; the ``encoder`` section is
  not used (said in the log).

Reference: Hatamizadeh et al., UNETR, WACV 2022 and Swin UNETR, 2022; Zheng et al., SETR, CVPR 2021; Falk et al.,
U-Net, 2019 (MONAI BasicUNet).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from monai.networks.blocks import Convolution
from monai.networks.nets import BasicUNet
from torch import nn

from mmfm.encoders import Encoder, encoder_from
from mmfm.errors import ConfigError
from mmfm.tasks import TASKS

NETWORKS = ("encoder", "basicunet")


def token_grid(n_tokens: int, spatial: Sequence[int]) -> tuple[int, ...]:
    """The grid (per axis) that ``n_tokens`` tokens of an input of ``spatial`` size lie on, for an encoder with
    one stride on every axis (ceil division, as strided convolutions with padding give)."""
    for stride in (1, 2, 4, 8, 16, 32, 64):
        grid = tuple(math.ceil(s / stride) for s in spatial)
        if math.prod(grid) == n_tokens:
            return grid
    raise ConfigError(f"cannot place {n_tokens} encoder tokens on a grid for an input of size {tuple(spatial)}",
                      "use an encoder whose tokens form a regular grid (ViT, Swin, ResNet), or task.network=basicunet")


class TokenDecoder(nn.Module):
    """tokens (B, N, D) on a grid -> logits (B, K, *s): 1x1 projection, then x2 upsampling + conv until the
    input size, concatenated with a conv of the input image (the one skip), then a 1x1 head."""

    def __init__(self, spatial_dims: int, in_channels: int, token_dim: int, num_classes: int,
                 channels: int = 64) -> None:
        super().__init__()
        norm = ("group", {"num_groups": 8})  # works on a 1-voxel grid too (instance norm does not)
        conv = lambda i, o: Convolution(spatial_dims, i, o, kernel_size=3, norm=norm, act="relu")  # noqa: E731
        self.proj = Convolution(spatial_dims, token_dim, channels, kernel_size=1, norm=norm, act="relu")
        self.up = conv(channels, channels)
        self.skip = conv(in_channels, channels // 2)
        self.fuse = conv(channels + channels // 2, channels)
        self.head = Convolution(spatial_dims, channels, num_classes, kernel_size=1, conv_only=True)

    def forward(self, tokens: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        spatial = tuple(image.shape[2:])
        grid = token_grid(tokens.shape[1], spatial)
        x = self.proj(tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid))  # (B, C, *g)
        while any(g < s for g, s in zip(x.shape[2:], spatial)):
            size = tuple(min(2 * g, s) for g, s in zip(x.shape[2:], spatial))
            x = self.up(F.interpolate(x, size=size, mode="nearest"))                         # (B, C, *2g)
        return self.head(self.fuse(torch.cat([x, self.skip(image)], dim=1)))                 # (B, K, *s)


class PyramidDecoder(nn.Module):
    """An encoder's pyramid [(B, C_l, *g_l)] (shallow to deep) + the image (B, C, *s) -> logits (B, K, *s)."""

    def __init__(self, spatial_dims: int, in_channels: int, level_channels: Sequence[int], hierarchical: bool,
                 num_classes: int, width: int = 16) -> None:
        super().__init__()
        from monai.networks.blocks import UnetOutBlock, UnetrBasicBlock, UnetResBlock, UnetrPrUpBlock

        def norm(c: int) -> tuple[str, dict[str, int]]:   # group norm works on a 1-voxel grid (instance does not)
            return ("group", {"num_groups": min(8, c)})

        n = len(level_channels)
        chans = [width * 2 ** min(lv, 3) for lv in range(n)]
        self.proj = nn.ModuleList()
        for lv, (c_in, c_out) in enumerate(zip(level_channels, chans)):
            ups = 0 if hierarchical else n - 1 - lv        # a ViT level is brought 2**ups up to its grid
            if ups == 0:
                self.proj.append(UnetrBasicBlock(spatial_dims, c_in, c_out, 3, 1, norm(c_out), res_block=True))
            else:
                self.proj.append(UnetrPrUpBlock(spatial_dims, c_in, c_out, num_layer=ups - 1, kernel_size=3, stride=1,
                                                upsample_kernel_size=2, norm_name=norm(c_out), res_block=True))
        self.up = nn.ModuleList([UnetResBlock(spatial_dims, chans[lv + 1] + chans[lv], chans[lv], 3, 1,
                                              norm(chans[lv])) for lv in range(n - 1)])
        self.image = UnetrBasicBlock(spatial_dims, in_channels, width // 2, 3, 1, norm(width // 2), res_block=True)
        self.final = UnetResBlock(spatial_dims, chans[0] + width // 2, width, 3, 1, norm(width))
        self.out = UnetOutBlock(spatial_dims, width, num_classes)

    @staticmethod
    def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=like.shape[2:], mode="nearest") if x.shape[2:] != like.shape[2:] else x

    def forward(self, levels: list[torch.Tensor], image: torch.Tensor) -> torch.Tensor:
        feats = [p(f) for p, f in zip(self.proj, levels)]
        x = feats[-1]
        for lv in range(len(feats) - 2, -1, -1):
            x = self.up[lv](torch.cat([self._up(x, feats[lv]), feats[lv]], dim=1))
        skip = self.image(image)
        return self.out(self.final(torch.cat([self._up(x, skip), skip], dim=1)))


class SegmentationTask(nn.Module):
    """forward(batch{"image": (B, C, *s), "mask": (B, 1, *s) int}) -> {"loss", "logits": (B, K, *s)}."""

    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int,
                 features: Sequence[int] = (16, 16, 32, 64, 128, 16), encoder: Encoder | None = None,
                 decoder_channels: int = 64, decoder: str = "token", image_size: Sequence[int] = ()) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.encoder = encoder
        self.decoder = decoder if encoder is not None else "basicunet"
        if encoder is None:
            self.net: nn.Module = BasicUNet(spatial_dims=spatial_dims, in_channels=in_channels,
                                            out_channels=num_classes, features=tuple(features))
        elif decoder == "unetr":
            probe = torch.zeros(1, in_channels, *(image_size or (64,) * spatial_dims))
            was = encoder.training
            encoder.eval()   # a batch of one: BatchNorm must not need batch statistics
            with torch.no_grad():
                levels = encoder.pyramid(probe)
            encoder.train(was)
            grids = [tuple(f.shape[2:]) for f in levels]
            hierarchical = len(set(grids)) == len(grids)
            self.net = PyramidDecoder(spatial_dims, in_channels, [f.shape[1] for f in levels], hierarchical,
                                      num_classes, width=max(8, decoder_channels // 4))
        else:
            self.net = TokenDecoder(spatial_dims, in_channels, encoder.out_dim, num_classes, decoder_channels)
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True)

    def logits(self, image: torch.Tensor) -> torch.Tensor:
        if self.encoder is None:
            return self.net(image)
        if self.decoder == "unetr":
            return self.net(self.encoder.pyramid(image), image)
        return self.net(self.encoder(image)["tokens"], image)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        logits = self.logits(batch["image"])
        return {"loss": self.loss(logits, batch["mask"]), "logits": logits}

    @torch.no_grad()
    def predict(self, image: torch.Tensor) -> torch.Tensor:
        """Label map (B, 1, *s)."""
        return self.logits(image).argmax(dim=1, keepdim=True)


@TASKS.register("segmentation")
def segmentation(num_classes: int, spatial_dims: int, in_channels: int,
                 encoder: dict[str, Any] | Encoder | None = None,
                 network: str = "encoder", features: Sequence[int] = (16, 16, 32, 64, 128, 16),
                 decoder_channels: int = 64, freeze_encoder: bool = False, decoder: str = "auto",
                 image_size: Sequence[int] = ()) -> SegmentationTask:
    """``decoder``: ``unetr`` (over the encoder's intermediate features), ``token`` (over its last tokens) or
    ``auto`` (unetr where the encoder has a pyramid)."""
    if decoder not in ("auto", "unetr", "token"):
        raise ConfigError(f"task.decoder='{decoder}' is not a segmentation decoder", "use auto, unetr or token")
    if network not in NETWORKS:
        raise ConfigError(f"task.network='{network}' is not a segmentation network", f"use one of {NETWORKS}")
    if network == "basicunet":
        return SegmentationTask(spatial_dims, in_channels, num_classes, features)
    if encoder is None or (isinstance(encoder, dict) and "name" not in encoder):
        raise ConfigError("segmentation with task.network=encoder needs an encoder", "set encoder.name, e.g. "
                          "vit_mini, encoder.weights=<pretrain run>, or task.network=basicunet")
    enc = encoder_from(encoder, spatial_dims, in_channels)
    if freeze_encoder:
        enc.requires_grad_(False)
    if decoder == "auto":
        decoder = "unetr" if type(enc).pyramid is not Encoder.pyramid else "token"
    return SegmentationTask(spatial_dims, in_channels, num_classes, encoder=enc, decoder_channels=decoder_channels,
                            decoder=decoder, image_size=image_size)
