"""Run under torchrun with 2 processes: the gathered NT-Xent equals the single-process loss on the full batch,
and each rank's gradient is world x its slice of the full gradient (DDP's averaging then gives the full one)."""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from mmfm.objectives.losses import NTXentLoss


def main() -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    full1, full2 = z1.clone().requires_grad_(True), z2.clone().requires_grad_(True)
    ref = NTXentLoss(0.2, gather=False)(full1, full2)
    ref.backward()
    sl = slice(rank * 4, rank * 4 + 4)
    a, b = z1[sl].clone().requires_grad_(True), z2[sl].clone().requires_grad_(True)
    loss = NTXentLoss(0.2)(a, b)
    loss.backward()
    ok = torch.allclose(loss, ref, atol=1e-6) and torch.allclose(a.grad, world * full1.grad[sl], atol=1e-6) \
        and torch.allclose(b.grad, world * full2.grad[sl], atol=1e-6)
    flag = torch.tensor([int(ok)])
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    dist.destroy_process_group()
    sys.exit(0 if flag.item() == 1 else 1)


if __name__ == "__main__":
    main()
