"""BatchNorm statistics for frozen-feature baselines.

A randomly initialised network's BatchNorm layers hold running mean 0 and variance 1, which do not describe its
activations; a pretrained encoder carries statistics fitted on images. Evaluating the random baseline with
untouched statistics handicaps it for a reason that has nothing to do with pretraining. Before its features are
extracted, its statistics are recomputed on the training images (weights unchanged), as ``timm``'s and
``torch.optim.swa_utils.update_bn`` do; the latter is what runs here.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import update_bn


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def refit_batchnorm(encoder: nn.Module, images: torch.Tensor | torch.utils.data.Dataset, batch_size: int = 64) -> bool:
    """Recompute every BatchNorm layer's running statistics over ``images`` (N, C, *s): the average of the
    per-batch statistics over the whole set; weights are untouched. False (nothing done) without BatchNorm."""
    if not has_batchnorm(encoder):
        return False
    was = encoder.training
    device = next(encoder.parameters()).device
    from mmfm.data.batches import image_batches

    # resets; momentum=None: the average over batches; train mode
    update_bn(image_batches(images, batch_size), encoder, device=device)
    encoder.train(was)
    return True
