"""All-gather of features across DDP processes that keeps gradients (for contrastive losses)."""

from __future__ import annotations

import torch
import torch.distributed as dist


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """(B, D) per process -> (world * B, D), rank-major; the local slice keeps its autograd graph."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)
