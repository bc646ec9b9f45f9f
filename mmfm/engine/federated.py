"""Federated training through Flower: each site trains the shared model on its own data, the server aggregates.

Flower does the protocol, the strategies (FedAvg, FedProx) and the fault handling (a client that fails or
disconnects mid-round is a failure the strategy accepts; the round aggregates the others). mmfm supplies the
client (a local round is an ordinary :class:`~mmfm.engine.trainer.Trainer` run of any mmfm model, so precision,
gradient clipping and the divergence check hold there too) and two ways to run:

* :func:`simulate`: Flower's ``Server`` round loop in this process, clients called in turn through an in-process
  proxy (no Ray: on a 2-core machine one process is fastest; Flower's Ray simulation adds nothing here);
* :func:`serve` / :func:`connect`: the server and each site as separate processes over gRPC (``mmfm federate
  server`` / ``mmfm federate client --site S``), e.g. over loopback or a hospital network.

What is exchanged is the model's floating-point state (parameters and BatchNorm statistics) in a fixed key order;
integer counters stay local. With FedProx, the local loss gets ``mu/2 * ||w - w_global||^2`` (Li et al. 2020).

Every reply is checked before it enters the global model (:mod:`mmfm.engine.federated_guard`: shapes, finite values,
a norm bound, the site's sample count; with ``federate.secret_file`` a handshake and signed replies), and the
transport is TLS when ``federate.tls_dir`` holds certificates.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import flwr
import numpy as np
import torch
from flwr.common import DisconnectRes, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import Server, SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg, FedProx
from torch import nn

from mmfm.engine.federated_guard import Guard, arrays_digest, metrics_text, tag
from mmfm.errors import ConfigError

FEDERATED_STRATEGIES = ("fedavg", "fedprox")
NOT_METRICS = {"site", "tag"}   # what a site's reply carries besides its metrics


def shared_keys(model: nn.Module) -> list[str]:
    return [k for k, v in model.state_dict().items() if torch.is_floating_point(v)]


def get_arrays(model: nn.Module) -> list[np.ndarray]:
    sd = model.state_dict()
    return [sd[k].detach().cpu().float().numpy().copy() for k in shared_keys(model)]


def set_arrays(model: nn.Module, arrays: list[np.ndarray]) -> None:
    keys = shared_keys(model)
    if len(keys) != len(arrays):
        raise ConfigError(f"the server sent {len(arrays)} tensors, this site's model has {len(keys)}",
                          "every site and the server must use the same configuration (task, encoder, data.size)")
    sd = model.state_dict()
    new = {}
    for k, a in zip(keys, arrays):
        if tuple(a.shape) != tuple(sd[k].shape):
            raise ConfigError(f"tensor {k}: the server's shape {tuple(a.shape)} differs from this site's "
                              f"{tuple(sd[k].shape)}", "use the same configuration at every site and the server")
        new[k] = torch.from_numpy(np.asarray(a)).to(sd[k].dtype)
    model.load_state_dict(new, strict=False)


class Proximal(nn.Module):
    """FedProx's local objective: the wrapped model's loss + ``mu/2 * ||w - w_global||^2`` over trained
    parameters (``prox_loss`` logged)."""

    def __init__(self, model: nn.Module, mu: float) -> None:
        super().__init__()
        self.model, self.mu = model, mu
        # by name: parameters added later (train.peft's adapters, which start at zero update) have no anchor
        self.anchor = {n: p.detach().clone() for n, p in model.named_parameters()}

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = dict(self.model(batch))
        prox = 0.5 * self.mu * sum(((p - self.anchor[n].to(p.device)) ** 2).sum()
                                   for n, p in self.model.named_parameters() if p.requires_grad and n in self.anchor)
        out["prox_loss"] = prox.detach() if torch.is_tensor(prox) else torch.tensor(float(prox))
        out["loss"] = out["loss"] + prox
        return out


class SiteClient(flwr.client.NumPyClient):
    """One site: trains the global model ``local_steps`` steps on ``train_ds`` per round and evaluates it with
    ``evaluate_fn(model) -> {metric: value}`` on the site's own held-out data."""

    def __init__(self, name: str, model: nn.Module, train_ds: Any, train_cfg: Any, optim_cfg: Any,
                 local_steps: int, evaluate_fn: Callable[[nn.Module], dict[str, float]], n_eval: int,
                 run_info: dict[str, Any] | None = None, secret: bytes | None = None) -> None:
        self.name, self.model, self.train_ds = name, model, train_ds
        self.train_cfg, self.optim_cfg, self.local_steps = train_cfg, optim_cfg, local_steps
        self.evaluate_fn, self.n_eval, self.run_info = evaluate_fn, n_eval, run_info or {}
        self.secret = secret    # federate.secret_file: answers the server's handshake and signs every reply
        self.rounds = 0

    def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
        return get_arrays(self.model)

    def get_properties(self, config: dict[str, Any]) -> dict[str, Any]:
        challenge = config.get("mmfm_challenge")
        if challenge is None or self.secret is None:
            return {"site": self.name}
        return {"site": self.name, "proof": tag(self.secret, "join", challenge, self.name)}

    def _signed(self, kind: str, config: dict[str, Any], n: int, metrics: dict[str, Any],
                arrays: list[np.ndarray] | None = None) -> dict[str, Any]:
        if self.secret is None:
            return metrics
        parts = [arrays_digest(arrays)] if arrays is not None else []
        return {**metrics, "tag": tag(self.secret, kind, config.get("mmfm_nonce", ""), self.name, n, *parts,
                                      metrics_text(metrics))}

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict]:
        set_arrays(self.model, parameters)
        rnd = int(config.get("server_round", self.rounds + 1))
        self.rounds = rnd
        loss = self.train_round(rnd, config)
        arrays, n = get_arrays(self.model), len(self.train_ds)
        return arrays, n, self._signed("fit", config, n, {"site": self.name, "loss": loss}, arrays)

    def train_round(self, rnd: int, config: dict[str, Any]) -> float:
        """``local_steps`` optimiser steps on this site's data from the current model; the last loss."""
        from dataclasses import replace

        from mmfm.engine.trainer import Trainer

        mu = float(config.get("proximal_mu", 0.0))
        local = Proximal(self.model, mu) if mu > 0 else self.model
        cfg = replace(self.train_cfg, max_steps=self.local_steps, ckpt_every=self.local_steps,
                      log_every=self.local_steps, progress=False, seed=self.train_cfg.seed * 1009 + rnd)
        with tempfile.TemporaryDirectory(prefix="mmfm-site-") as work:   # a round's checkpoint is not kept
            last = Trainer(local, self.train_ds, cfg, self.optim_cfg, work,
                           run_info={**self.run_info, "config": {"site": self.name, "round": rnd}}).fit()
        return float(last.get("loss", 0))

    def evaluate(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[float, int, dict]:
        set_arrays(self.model, parameters)
        self.model.eval()
        metrics = {k: float(v) for k, v in self.evaluate_fn(self.model).items()}
        self.model.train()
        n = max(self.n_eval, 1)
        return 0.0, n, self._signed("evaluate", config, n, {"site": self.name, **metrics})


class Recorder:
    """Per-round, per-site metrics the strategy reports (Flower's aggregation hooks), and the overall
    example-weighted mean."""

    def __init__(self) -> None:
        self.rounds: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def _entry(self) -> dict[str, Any]:
        return {"round": len(self.rounds), "fit": {}, "evaluate": {}, "overall": {}}

    def fit_metrics(self, results: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
        with self.lock:
            entry = self._entry()
            entry["round"] = len(self.rounds) + 1
            entry["fit"] = {m["site"]: {"examples": n, "loss": m.get("loss")} for n, m in results}
            self.rounds.append(entry)
        return {"sites_trained": len(results)}

    def evaluate_metrics(self, results: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
        with self.lock:
            if not self.rounds:
                self.rounds.append(self._entry())
            entry = self.rounds[-1]
            entry["evaluate"] = {m["site"]: {"examples": n, **{k: v for k, v in m.items() if k not in NOT_METRICS}}
                                 for n, m in results}
            total = sum(n for n, _ in results)
            keys = set.intersection(*[set(m) - NOT_METRICS for _, m in results]) if results else set()
            entry["overall"] = {k: sum(n * float(m[k]) for n, m in results) / max(total, 1) for k in sorted(keys)}
            return dict(entry["overall"])


def make_strategy(name: str, recorder: Recorder, min_sites: int, mu: float = 0.0,
                  initial: list[np.ndarray] | None = None, fraction_fit: float = 1.0,
                  guard: Guard | None = None) -> Any:
    """Flower's FedAvg/FedProx that checks every reply with ``guard`` (default: shapes, finite values and the
    norm bound only) before aggregating, and keeps the last global model."""
    if name not in FEDERATED_STRATEGIES:
        raise ConfigError(f"federate.strategy='{name}' is not a strategy mmfm knows",
                          f"use one of {', '.join(FEDERATED_STRATEGIES)}")
    guard = guard or Guard()
    kw = dict(fraction_fit=fraction_fit, fraction_evaluate=1.0, min_fit_clients=min_sites,
              min_evaluate_clients=min_sites, min_available_clients=min_sites, accept_failures=True,
              fit_metrics_aggregation_fn=recorder.fit_metrics,
              evaluate_metrics_aggregation_fn=recorder.evaluate_metrics,
              on_fit_config_fn=lambda rnd: {"server_round": rnd, "mmfm_nonce": guard.nonce("fit", rnd)},
              on_evaluate_config_fn=lambda rnd: {"server_round": rnd, "mmfm_nonce": guard.nonce("evaluate", rnd)},
              initial_parameters=ndarrays_to_parameters(initial) if initial is not None else None)
    strategy = (_Keeping(FedProx) if name == "fedprox" else _Keeping(FedAvg))(
        **kw, **({"proximal_mu": mu} if name == "fedprox" else {}))
    strategy.guard = guard
    return strategy


def _Keeping(base: type) -> type:  # noqa: N802  (a class factory)
    """``base`` strategy that aggregates only the replies its ``guard`` accepts and keeps the last aggregated model
    (Flower's server loop does not return it)."""

    class Keeping(base):  # type: ignore[misc, valid-type]
        last: list[np.ndarray] | None = None
        guard: Guard

        def initialize_parameters(self, client_manager):  # noqa: ANN001, ANN201
            params = super().initialize_parameters(client_manager)
            if params is not None:
                self.last = parameters_to_ndarrays(params)
            return params

        def aggregate_fit(self, server_round, results, failures):  # noqa: ANN001, ANN201
            kept = []
            for proxy, res in results:
                try:
                    arrays = parameters_to_ndarrays(res.parameters)
                except Exception as e:  # bytes that are not .npy tensors (np.load never unpickles here)
                    why: str | None = f"its tensors cannot be decoded ({type(e).__name__})"
                else:
                    why = self.guard.check_fit(proxy.cid, server_round, res.num_examples, res.metrics, arrays,
                                               self.last)
                if why:
                    self.guard.reject("fit", server_round, proxy.cid, res.metrics, why)
                else:
                    kept.append((proxy, res))
            if not kept:   # nothing acceptable: the global model stays; the round is still recorded
                if self.fit_metrics_aggregation_fn is not None:
                    self.fit_metrics_aggregation_fn([])
                return None, {}
            params, metrics = super().aggregate_fit(server_round, kept, failures)
            if params is not None:
                self.last = parameters_to_ndarrays(params)
            return params, metrics

        def aggregate_evaluate(self, server_round, results, failures):  # noqa: ANN001, ANN201
            kept = []
            for proxy, res in results:
                why = self.guard.check_evaluate(proxy.cid, server_round, res.num_examples, res.metrics)
                if why:
                    self.guard.reject("evaluate", server_round, proxy.cid, res.metrics, why)
                else:
                    kept.append((proxy, res))
            return super().aggregate_evaluate(server_round, kept, failures)

        def global_arrays(self) -> list[np.ndarray]:
            if self.last is None:
                raise ConfigError("the federation ended without a global model (no site ever trained)",
                                  "check that the sites reached the server (federate.address) and did not fail")
            return self.last

    Keeping.__name__ = base.__name__
    return Keeping


class _InProcessProxy(ClientProxy):
    """A Flower ``ClientProxy`` that calls a client in this process; ``fail_at`` makes it fail from that round on
    (a site that drops out mid-federation, for tests and the dropout evidence).

    Flower's server calls the sites' ``fit`` and ``evaluate`` from a thread pool. In one process the sites share
    torch's global random generator, which each site's training seeds and draws from (initial shuffles, dropout,
    augmentations): run at once, their draws interleave by thread timing and a round's result changes from run to
    run. So the sites of one process take turns (``_TURN``): a simulated round is the same every time, and equals
    the sites trained one after another."""

    _TURN = threading.Lock()

    def __init__(self, cid: str, client: Any, fail_at: int | None) -> None:
        super().__init__(cid)
        self.client, self.fail_at, self.round = client, fail_at, 0

    def _check(self) -> None:
        if self.fail_at is not None and self.round >= self.fail_at:
            raise ConnectionError(f"site {self.cid} dropped out (federate.drop)")

    def get_properties(self, ins, timeout, group_id):  # noqa: ANN001, ANN201
        return self.client.get_properties(ins)

    def get_parameters(self, ins, timeout, group_id):  # noqa: ANN001, ANN201
        return self.client.get_parameters(ins)

    def fit(self, ins, timeout, group_id):  # noqa: ANN001, ANN201
        self.round = int(group_id or 0)
        self._check()
        with self._TURN:
            return self.client.fit(ins)

    def evaluate(self, ins, timeout, group_id):  # noqa: ANN001, ANN201
        self._check()
        with self._TURN:
            return self.client.evaluate(ins)

    def reconnect(self, ins, timeout, group_id):  # noqa: ANN001, ANN201
        return DisconnectRes(reason="")


def simulate(clients: dict[str, SiteClient], strategy: Any, rounds: int,
             drop: dict[str, int] | None = None) -> Any:
    """Flower's server loop with every site in this process; ``drop``: site -> round from which it fails."""
    drop = drop or {}
    unknown = sorted(set(drop) - set(clients))
    if unknown:
        raise ConfigError(f"federate.drop names sites {unknown} that do not exist", f"sites: {sorted(clients)}")
    manager = SimpleClientManager()
    guard = getattr(strategy, "guard", None)
    for name, client in clients.items():
        manager.register(_InProcessProxy(name, client.to_client(), drop.get(name)))
        if guard is not None:   # in one process each proxy is its site: a reply naming another site is refused
            guard.bind(name, name)
    server = Server(client_manager=manager, strategy=strategy)
    history, _ = server.fit(num_rounds=rounds, timeout=None)
    return history


class _WaitForAll(SimpleClientManager):
    """Starts the first round only once ``expected`` sites are connected and admitted (or ``wait_s`` passed);
    later rounds go on with whoever is still connected (at least the strategy's minimum). With a secret, every new
    connection passes the guard's handshake before it is sampled (so before it is sent any model); one that fails
    is dropped."""

    def __init__(self, expected: int, wait_s: float, guard: Guard | None = None, handshake_s: float = 60) -> None:
        super().__init__()
        self.expected, self.wait_s, self.waited = expected, wait_s, False
        self.guard, self.handshake_s = guard, handshake_s

    def unregister(self, client: ClientProxy) -> None:
        super().unregister(client)
        if self.guard is not None:   # a site that disconnects may join again (as a new connection)
            self.guard.release(client.cid)

    def _admit(self) -> int:
        """Handshake every connection not yet admitted (dropping those that fail); the number admitted. Counted
        here, not as the connections present afterwards: one may register during a handshake, unchecked yet."""
        if self.guard is None:
            return self.num_available()
        admitted = 0
        for proxy in list(self.clients.values()):
            if self.guard.handshake(proxy, self.handshake_s):
                admitted += 1
            else:
                super().unregister(proxy)
        return admitted

    def sample(self, num_clients, min_num_clients=None, criterion=None):  # noqa: ANN001, ANN201
        if not self.waited:   # the strategy sized the first round before the sites had connected: every site
            self.waited = True
            deadline = time.monotonic() + self.wait_s
            while True:
                admitted = self._admit()
                left = deadline - time.monotonic()
                if admitted >= self.expected or left <= 0:
                    break
                self.wait_for(admitted + 1, timeout=max(1, int(left)))
            num_clients = max(num_clients, self.num_available())
        self._admit()
        return super().sample(min(num_clients, max(self.num_available(), 1)), min_num_clients, criterion)


def serve_federation(address: str, strategy: Any, rounds: int, expected_sites: int, round_timeout: float,
          wait_s: float = 600, certificates: tuple[bytes, ...] | None = None) -> Any:
    """The server as its own process (gRPC): waits for ``expected_sites``, runs ``rounds``, returns the history.
    ``certificates``: (CA, server certificate, server key) PEM bytes: TLS (Flower's own); the handshake with the
    shared secret, when the strategy's guard has one, runs on top. A message is bounded to twice the model's size
    (plus 16 MiB) before it is decoded."""
    guard = getattr(strategy, "guard", None)
    initial = getattr(strategy, "initial_parameters", None)
    size = sum(len(t) for t in initial.tensors) if initial is not None else 0
    limit = int(min(2 * size + (16 << 20), 2**31 - 1)) if size else 2**31 - 1
    return flwr.server.start_server(server_address=address, strategy=strategy,
                                    client_manager=_WaitForAll(expected_sites, wait_s, guard),
                                    config=flwr.server.ServerConfig(num_rounds=rounds, round_timeout=round_timeout),
                                    certificates=certificates, grpc_max_message_length=limit)


def connect(address: str, client: SiteClient, retries: int = 30, root_certificate: bytes | None = None) -> None:
    """Run one site until the server ends the federation (retries while the server is not up yet).
    ``root_certificate``: the CA that signed the server's certificate (TLS); None: plain gRPC."""
    for attempt in range(retries):
        try:
            flwr.client.start_client(server_address=address, client=client.to_client(), max_retries=1,
                                     max_wait_time=5, root_certificates=root_certificate,
                                     insecure=root_certificate is None)
            return
        except Exception as e:  # the server is not listening yet: gRPC raises its own error types
            if attempt == retries - 1 or "UNAVAILABLE" not in repr(e).upper():
                raise ConfigError(f"cannot reach the federation server at {address} ({type(e).__name__})",
                                  "start `mmfm federate server CONFIG` first and check federate.address") from None
            time.sleep(1.0)
