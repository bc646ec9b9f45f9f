"""Run under torchrun with 2 processes: each gathered loss (NT-Xent, CLIP eq. 6 with hard, duplicate-group and
soft targets, GLoRIA's local loss) equals the single-process loss on the full batch, and each rank's gradient is
world x its slice of the full gradient (DDP's averaging then gives the full one)."""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from mmfm.objectives.losses import ClipLoss, GloriaLocalLoss, NTXentLoss


def check(rank: int, world: int, loss_fn, make_inputs, constants=()) -> bool:
    """loss_fn(gather: bool) -> module; make_inputs() -> list of (8, ...) float tensors that need gradients;
    constants: extra (8, ...) tensors without gradients (sliced the same way)."""
    full = [t.clone().requires_grad_(True) for t in make_inputs()]
    ref = loss_fn(False)(*full, *constants)
    ref.backward()
    sl = slice(rank * 4, rank * 4 + 4)
    local = [t.detach()[sl].clone().requires_grad_(True) for t in full]
    loss = loss_fn(True)(*local, *[c[sl] if c.ndim and len(c) == 8 else c for c in constants])
    loss.backward()
    ok = torch.allclose(loss, ref, atol=1e-5)
    return ok and all(torch.allclose(lo.grad, world * fu.grad[sl], atol=1e-5) for lo, fu in zip(local, full))


def main() -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    g = torch.Generator().manual_seed(0)

    def randn(*shape):
        return lambda: torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))

    scale = torch.tensor(2.0)
    groups = torch.tensor([0, 1, 0, 2, 3, 1, 4, 5])
    semantic = torch.randint(0, 2, (8, 3), generator=g).float() + 0.01
    mask = torch.rand(8, 6, generator=g) > 0.3
    results = {
        "ntxent": check(rank, world, lambda gat: NTXentLoss(0.2, gather=gat),
                        lambda: [randn(8, 5)(), randn(8, 5)() + 1]),
        "clip": check(rank, world, lambda gat: ClipLoss(gather=gat), lambda: [randn(8, 5)(), randn(8, 5)() + 1],
                      (scale,)),
        "clip_groups": check(rank, world, lambda gat: _with_kw(ClipLoss(gather=gat), "groups"),
                             lambda: [randn(8, 5)(), randn(8, 5)() + 1], (scale, groups)),
        "clip_soft": check(rank, world, lambda gat: _with_kw(ClipLoss(gather=gat), "semantic"),
                           lambda: [randn(8, 5)(), randn(8, 5)() + 1], (scale, semantic)),
        "gloria_local": check(rank, world, lambda gat: GloriaLocalLoss(gather=gat),
                              lambda: [randn(8, 4, 5)(), randn(8, 6, 5)() + 1], (mask,)),
    }
    flag = torch.tensor([int(all(results.values()))])
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    if rank == 0 and flag.item() != 1:
        print("failed:", [k for k, v in results.items() if not v], file=sys.stderr)
    dist.destroy_process_group()
    sys.exit(0 if flag.item() == 1 else 1)


def _with_kw(loss, key):
    """Pass the last positional constant as a keyword (groups= / semantic=)."""
    return lambda image, text, scale, extra: loss(image, text, scale, **{key: extra})


if __name__ == "__main__":
    main()
