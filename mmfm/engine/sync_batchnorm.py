"""BatchNorm whose statistics span every data-parallel process, on CPUs too.

With DDP each process would otherwise normalise by the statistics of its own share of the batch, so 2 processes
x 8 samples would train another network than 1 process x 16. On GPUs torch's ``SyncBatchNorm`` does this; it
refuses CPU modules ("SyncBatchNorm layers only work with GPU modules"), and CPU (gloo) is where mmfm's users and
tests run data-parallel first. So this small module does the same on any device: per-channel sums and sums of
squares are all-reduced (with autograd, so gradients flow through the global statistics as in SyncBatchNorm),
then the batch is normalised with them and the running statistics updated as BatchNorm does.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.nn.functional import all_reduce


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Any-dimensional BatchNorm with statistics over all processes. Input: (B, C, *s)."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected (B, C, ...) input, got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        xd = x.double()
        local = torch.cat([xd.sum(dims), (xd * xd).sum(dims),
                           torch.tensor([x.numel() / c], dtype=torch.float64, device=x.device)])  # [2C + 1]
        total = all_reduce(local)                                                         # summed over processes
        n = total[-1]
        mean = total[:c] / n                                                              # [C]
        var = (total[c:2 * c] / n - mean * mean).clamp_min(0)                             # biased, as BN normalises
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                unbiased = var * n / (n - 1).clamp_min(1)
                self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (xd - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        y = y.to(x.dtype)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm layer by one whose statistics span all processes (weights and buffers kept):
    torch's ``SyncBatchNorm`` on GPUs, :class:`GlobalBatchNorm` on CPUs."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        if next(iter(module.buffers()), torch.empty(0)).is_cuda:
            return nn.SyncBatchNorm.convert_sync_batchnorm(module)
        new = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module.add_module(name, convert_batchnorm(child))
    return module
