"""Continual learning parts: a mixture of task experts with a gate (in the spirit of SAM-Med3D-MoE), and replay.

*Mixture of experts.* One encoder is shared by every task: the first task trains it in full, then it is frozen
(the base); each later task adds its own low-rank expert (a peft LoRA adapter) and its own head, so learning a
new task cannot change what earlier tasks use. The :class:`PrototypeGate` picks the expert for each input from the
frozen base's features (nearest task prototype, cosine), so inference does not need to be told the task; since
the base no longer changes, the gate never forgets either. :class:`RoutedEncoder` runs each sample through the
expert the gate picked.

*Replay.* :class:`ReplayMix` adds, to each step of the current task, the loss of a small batch drawn from a buffer
of earlier tasks' samples through their own heads (experience replay, the classic baseline).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmfm.data.datasets import collate_samples
from mmfm.encoders.adapters import use_adapter
from mmfm.encoders.base import Encoder


class PrototypeGate:
    """Routes an input to a task from the base encoder's pooled features: each task keeps up to ``per_task``
    prototypes (k-means centroids of its training features, cosine space); an input goes to the task of its
    nearest prototype."""

    def __init__(self, per_task: int = 8) -> None:
        self.per_task, self.prototypes, self.tasks = per_task, [], []

    @torch.no_grad()
    def add_task(self, name: str, features: torch.Tensor, seed: int = 0) -> None:
        f = F.normalize(features.float(), dim=1)
        k = min(self.per_task, len(f))
        g = torch.Generator().manual_seed(seed)
        centres = f[torch.randperm(len(f), generator=g)[:k]].clone()
        for _ in range(20):   # spherical k-means (a few iterations are plenty for routing)
            assign = (f @ centres.T).argmax(1)
            for j in range(k):
                members = f[assign == j]
                if len(members):
                    centres[j] = F.normalize(members.mean(0), dim=0)
        self.prototypes.append(centres)
        self.tasks.append(name)

    @torch.no_grad()
    def route(self, features: torch.Tensor) -> torch.Tensor:
        """(B,) index of the task each input is routed to."""
        f = F.normalize(features.float(), dim=1)
        best = torch.stack([(f @ p.T.to(f.device)).max(1).values for p in self.prototypes], 1)
        return best.argmax(1)


class RoutedEncoder(Encoder):
    """``base`` (an encoder holding the experts as named adapters) with each sample sent through the expert of
    the task the gate picks; ``experts[k]`` is task k's adapter name (None: the base alone)."""

    def __init__(self, base: Encoder, gate: PrototypeGate, experts: Sequence[str | None]) -> None:
        super().__init__()
        self.base, self.gate, self.experts = base, gate, list(experts)
        self.out_dim, self.spatial_dims, self.in_channels = base.out_dim, base.spatial_dims, base.in_channels
        self.history: list[torch.Tensor] = []   # the routes of every input seen (routing accuracy)

    def _routes(self, x: torch.Tensor) -> torch.Tensor:
        use_adapter(self.base, None)
        routes = self.gate.route(self.base(x)["pooled"])
        self.history.append(routes.cpu())
        return routes

    def _each(self, x: torch.Tensor, fn: Any) -> Any:
        routes = self._routes(x)
        parts: dict[int, Any] = {}
        for k in routes.unique().tolist():
            use_adapter(self.base, self.experts[k])
            parts[k] = fn(x[routes == k])
        use_adapter(self.base, None)
        return routes, parts

    @staticmethod
    def _merge(routes: torch.Tensor, parts: dict[int, torch.Tensor]) -> torch.Tensor:
        first = next(iter(parts.values()))
        out = first.new_zeros((len(routes), *first.shape[1:]))
        for k, v in parts.items():
            out[routes == k] = v
        return out

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        routes, parts = self._each(x, self.base)
        return {key: self._merge(routes, {k: p[key] for k, p in parts.items()}) for key in ("tokens", "pooled")}

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        routes, parts = self._each(x, self.base.pyramid)
        levels = len(next(iter(parts.values())))
        return [self._merge(routes, {k: p[i] for k, p in parts.items()}) for i in range(levels)]


class ReplayMix(nn.Module):
    """The current task's loss plus, per earlier task, the loss of ``batch_size`` samples drawn (seeded by the
    step) from its buffer through its own task model (which shares the encoder). ``replay_loss`` is logged."""

    def __init__(self, current: nn.Module, earlier: Sequence[nn.Module], buffers: Sequence[Sequence[dict]],
                 batch_size: int, seed: int = 0) -> None:
        super().__init__()
        self.current, self.earlier = current, nn.ModuleList(earlier)
        self.buffers, self.batch_size, self.seed, self.calls = [list(b) for b in buffers], batch_size, seed, 0

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = dict(self.current(batch))
        self.calls += 1
        device = batch["image"].device
        replay = []
        for t, (model, buf) in enumerate(zip(self.earlier, self.buffers)):
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.calls * 101 + t)
            idx = torch.randint(len(buf), (min(self.batch_size, len(buf)),), generator=g).tolist()
            items = collate_samples([buf[i] for i in idx])
            items = {k: v.to(device) if torch.is_tensor(v) else v for k, v in items.items()}
            replay.append(model(items)["loss"])
        if replay:
            r = torch.stack(replay).mean()
            out["replay_loss"] = r.detach()
            out["loss"] = out["loss"] + r
        return out
