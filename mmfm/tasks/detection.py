"""Detection of abnormal regions (lesions), 2D and 3D: MONAI's RetinaNet on any registry encoder.

Targets come from masks (every connected component of a target class is one box: lesions on CT slices and
volumes) or from box annotations (a COCO-style JSON, :func:`read_coco`). Boxes are in voxel index order of mmfm
arrays, MONAI's ``StandardMode``: (i0, j0, i1, j1) in 2D and (i0, j0, k0, i1, j1, k1) in 3D, corners inclusive of
the first voxel and exclusive of the last (i1 = last index + 1).

The encoder's tokens, on their grid, are the one feature map of RetinaNet's classification and box heads (the
encoder's stride is the anchor scale); MONAI's ``RetinaNetDetector`` does the anchor matching (ATSS), the hard
negative sampling, the focal and GIoU losses, and box selection with NMS at inference.

Reference: Lin et al., Focal loss for dense object detection (RetinaNet), ICCV 2017; Baumgartner et al.,
nnDetection, MICCAI 2021 (MONAI's detection follows it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from mmfm.data.io.coco import read_coco  # noqa: F401  (box annotations: the reader lives with the data)
from mmfm.encoders import Encoder, encoder_from
from mmfm.errors import ConfigError
from mmfm.tasks import TASKS


def boxes_from_mask(mask: np.ndarray, classes: Sequence[int], min_voxels: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """mask (*s) int -> (boxes (N, 2 nd) float32, labels (N,) int64 in 0..len(classes)-1): one box per connected
    component (face connectivity) of each class with at least ``min_voxels`` voxels."""
    nd = mask.ndim
    boxes, labels = [], []
    for label, c in enumerate(classes):
        comps, n = ndimage.label(mask == c)
        for sl, size in zip(ndimage.find_objects(comps), ndimage.sum_labels(np.ones_like(comps), comps,
                                                                             range(1, n + 1)) if n else []):
            if sl is None or size < min_voxels:
                continue
            boxes.append([s.start for s in sl] + [s.stop for s in sl])
            labels.append(label)
    return (np.asarray(boxes, np.float32).reshape(-1, 2 * nd), np.asarray(labels, np.int64))


class EncoderFeatures(nn.Module):
    """A registry encoder as RetinaNet's feature extractor: tokens -> one feature map (B, channels, *grid)."""

    def __init__(self, encoder: Encoder, spatial_dims: int, image_size: Sequence[int], channels: int = 64) -> None:
        super().__init__()
        from mmfm.tasks.segmentation import token_grid

        self.encoder, self.out_channels = encoder, channels
        with torch.no_grad():
            n = encoder(torch.zeros(1, encoder.in_channels, *image_size))["tokens"].shape[1]
        self.grid = token_grid(n, image_size)
        self.stride = int(round(image_size[0] / self.grid[0]))
        conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        self.proj = nn.Sequential(conv(encoder.out_dim, channels, 1), nn.GroupNorm(8, channels), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.encoder(x)["tokens"]
        b, _, d = tokens.shape
        grid = [int(np.ceil(s / self.stride)) for s in x.shape[2:]]
        return self.proj(tokens.transpose(1, 2).reshape(b, d, *grid))


class DetectionTask(nn.Module):
    """forward(batch{"image", "mask"} or {"image", "boxes", "box_labels"}) -> {"loss", ...};
    predict(image) -> [{"boxes", "labels", "scores"}] per image."""

    def __init__(self, encoder: Encoder, spatial_dims: int, image_size: Sequence[int], classes: Sequence[int],
                 anchor_sizes: Sequence[float], min_voxels: int = 4, score_threshold: float = 0.02) -> None:
        super().__init__()
        from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
        from monai.apps.detection.networks.retinanet_network import RetinaNet
        from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape

        self.spatial_dims, self.classes, self.min_voxels = spatial_dims, list(classes), min_voxels
        self.num_classes = len(self.classes)
        features = EncoderFeatures(encoder, spatial_dims, image_size)
        shapes = [[float(a)] * spatial_dims for a in anchor_sizes]
        anchors = AnchorGeneratorWithAnchorShape(feature_map_scales=[1], base_anchor_shapes=shapes)   # voxels
        net = RetinaNet(spatial_dims, self.num_classes, len(shapes), features, size_divisible=features.stride)
        self.detector = RetinaNetDetector(net, anchors, spatial_dims=spatial_dims, num_classes=self.num_classes,
                                          size_divisible=features.stride)
        self.detector.set_atss_matcher(num_candidates=4, center_in_gt=False)
        self.detector.set_hard_negative_sampler(batch_size_per_image=64, positive_fraction=0.3, pool_size=20,
                                                min_neg=16)
        self.detector.set_target_keys(box_key="boxes", label_key="labels")
        self.detector.set_box_selector_parameters(score_thresh=score_threshold, topk_candidates_per_level=300,
                                                  nms_thresh=0.22, detections_per_img=100)

    def targets(self, batch: dict[str, Any]) -> list[dict[str, torch.Tensor]]:
        device = batch["image"].device
        if "boxes" in batch:
            return [{"boxes": torch.as_tensor(b, dtype=torch.float32, device=device).reshape(-1, 2 * self.spatial_dims),
                     "labels": torch.as_tensor(lab, dtype=torch.long, device=device)}
                    for b, lab in zip(batch["boxes"], batch["box_labels"])]
        if "mask" not in batch:
            raise ConfigError("detection needs masks or boxes", "use a dataset with masks, or COCO box annotations")
        out = []
        for m in batch["mask"]:
            b, lab = boxes_from_mask(m[0].cpu().numpy(), self.classes, self.min_voxels)
            out.append({"boxes": torch.from_numpy(b).to(device), "labels": torch.from_numpy(lab).to(device)})
        return out

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        self.detector.train()
        losses = self.detector(batch["image"], self.targets(batch))
        return {"loss": losses["classification"] + losses["box_regression"], **losses}

    @torch.no_grad()
    def predict(self, image: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        self.detector.eval()
        out = self.detector(image)
        key_b, key_l = self.detector.target_box_key, self.detector.target_label_key
        return [{"boxes": o[key_b], "labels": o[key_l], "scores": o[f"{key_l}_scores"]} for o in out]


@TASKS.register("detection")
def detection(spatial_dims: int, in_channels: int, encoder: dict[str, Any] | Encoder | None = None,
              classes: Sequence[int] = (1,), anchor_sizes: Sequence[float] = (), image_size: Sequence[int] = (),
              min_voxels: int = 4, score_threshold: float = 0.02, freeze_encoder: bool = False) -> DetectionTask:
    """``classes``: the mask values that are objects (e.g. [2] for LiTS tumours); ``anchor_sizes``: box edge
    lengths in voxels (default: 1/16, 1/8, 1/4 and 1/2 of the image); ``image_size``: the training input size
    (set from data.size)."""
    if encoder is None or (isinstance(encoder, dict) and "name" not in encoder):
        raise ConfigError("detection needs an encoder", "set encoder.name (e.g. vit_mini) or encoder.weights")
    if not image_size:
        raise ConfigError("detection needs the input size", "set data.size (e.g. [128, 128])")
    enc = encoder_from(encoder, spatial_dims, in_channels)
    if freeze_encoder:
        enc.requires_grad_(False)
    sizes = list(anchor_sizes) or [max(2.0, min(image_size) / f) for f in (16, 8, 4, 2)]
    return DetectionTask(enc, spatial_dims, list(image_size), classes, sizes, min_voxels, score_threshold)
