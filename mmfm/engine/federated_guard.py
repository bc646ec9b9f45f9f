"""What the federation server accepts from a site: who may join, and which updates enter the global model.

Flower's ``start_server`` (the gRPC transport mmfm uses) encrypts with TLS when given certificates but has no way
to authenticate a client (node authentication exists only for Flower's SuperLink deployment). So mmfm adds a
shared-secret handshake of its own, written here because Flower has none for this API:

* **join**: before a client is sent any model, the server asks it (Flower ``get_properties``) to answer a random
  challenge with ``HMAC-SHA256(secret, challenge | site)``; a client that cannot is dropped, and the connection
  stays bound to the site it named (one connection per site);
* **every reply** (fit and evaluate) carries an HMAC over the round's fresh nonce, the site, the number of
  examples and the content (the arrays' SHA-256, or the metrics), so an update cannot be replayed from another
  round, moved to another site, or altered in transit.

Whatever the authentication, every update is checked before aggregation: the right number of tensors, each of the
global model's shape, floating point, finite, the site's known number of training samples (the server derives
every site's data from the same configuration), and ``||w_site - w_global|| <= max_update_ratio *
||w_global||``. A rejected reply is left out of the round with one log line, never aggregated.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import secrets
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmfm.errors import ConfigError

_log = logging.getLogger(__name__)

DEFAULT_MAX_UPDATE_RATIO = 10.0


def read_secret(path: str) -> bytes | None:
    """The federation's shared secret from ``federate.secret_file`` (None when not set); never logged."""
    if not path:
        return None
    p = Path(path)
    try:
        value = p.read_bytes().strip()
    except OSError as e:
        raise ConfigError(f"federate.secret_file: cannot read it ({type(e).__name__})",
                          "point it at a file holding the federation's secret (the same at the server and every "
                          "site), e.g. made with `openssl rand -hex 32 > secret`") from None
    if len(value) < 16:
        raise ConfigError("federate.secret_file holds fewer than 16 bytes", "use a long random secret, e.g. "
                          "`openssl rand -hex 32 > secret`")
    return value


def read_certificates(folder: str, server: bool) -> tuple[bytes, ...] | None:
    """``federate.tls_dir``: ``ca.crt`` (every site), plus ``server.crt`` and ``server.key`` (the server)."""
    if not folder:
        return None
    names = ("ca.crt", "server.crt", "server.key") if server else ("ca.crt",)
    out = []
    for name in names:
        try:
            out.append((Path(folder) / name).read_bytes())
        except OSError:
            raise ConfigError(f"federate.tls_dir has no readable {name}",
                              "the server needs ca.crt, server.crt and server.key; each site needs ca.crt "
                              "(the certificate authority that signed server.crt)") from None
    return tuple(out)


def arrays_digest(arrays: Sequence[np.ndarray]) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def tag(secret: bytes, *parts: Any) -> str:
    """HMAC-SHA256 of the parts (joined unambiguously as JSON)."""
    return hmac.new(secret, json.dumps([str(p) for p in parts]).encode(), hashlib.sha256).hexdigest()


def metrics_text(metrics: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in sorted(metrics.items()) if k != "tag"}, sort_keys=True, default=str)


def _shown(site: Any) -> str:
    """A peer's site name as it may appear in a log line (ASCII, bounded)."""
    return ascii(site)[:48]


class Guard:
    """The server's checks. ``sites``: the configuration's site names (None: any); ``sizes``: each site's number of
    training samples (None: not checked); ``secret``: the shared secret (None: no authentication)."""

    def __init__(self, sites: Sequence[str] | None = None, sizes: dict[str, int] | None = None,
                 eval_sizes: dict[str, int] | None = None, secret: bytes | None = None,
                 max_update_ratio: float = DEFAULT_MAX_UPDATE_RATIO) -> None:
        if not max_update_ratio > 0:
            raise ConfigError("federate.max_update_ratio must be positive", "e.g. 10 (the default)")
        self.sites = None if sites is None else set(sites)
        self.sizes, self.eval_sizes, self.secret = sizes, eval_sizes, secret
        self.max_update_ratio = float(max_update_ratio)
        self.bound: dict[str, str] = {}       # connection (Flower cid) -> the site it is, for the whole run
        self.refused: set[str] = set()        # connections that failed the handshake
        self.nonces: dict[tuple[str, int], str] = {}
        self.rejected: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    # -- joining -----------------------------------------------------------------------------------------------
    def bind(self, cid: str, site: str) -> str | None:
        """Bind a connection to a site; the reason it cannot be, or None."""
        if not isinstance(site, str) or not site:
            return "it names no site"
        if self.sites is not None and site not in self.sites:
            return f"site {_shown(site)} is not a site of this configuration"
        with self.lock:
            if self.bound.get(cid, site) != site:
                return f"this connection joined as {_shown(self.bound[cid])}, not {_shown(site)}"
            other = next((c for c, s in self.bound.items() if s == site and c != cid), None)
            if other is not None:
                return f"site {_shown(site)} is already connected"
            self.bound[cid] = site
        return None

    def release(self, cid: str) -> None:
        with self.lock:
            self.bound.pop(cid, None)

    def handshake(self, proxy: Any, timeout: float) -> bool:
        """Challenge a newly connected client (server mode, with a secret); binds it to its site when it answers."""
        from flwr.common import GetPropertiesIns

        if self.secret is None or proxy.cid in self.bound:
            return True
        if proxy.cid in self.refused:
            return False
        challenge = secrets.token_hex(16)
        try:
            res = proxy.get_properties(GetPropertiesIns({"mmfm_challenge": challenge}), timeout, None)
            props = dict(res.properties)
            site, proof = props.get("site"), str(props.get("proof", ""))
        except Exception as e:   # a client that does not speak mmfm's handshake, or a broken connection
            return self._refuse(proxy.cid, f"no answer to the handshake ({type(e).__name__})")
        if not hmac.compare_digest(proof, tag(self.secret, "join", challenge, site)):
            return self._refuse(proxy.cid, f"a client calling itself {_shown(site)} does not hold the secret")
        why = self.bind(proxy.cid, site)
        return self._refuse(proxy.cid, why) if why else True

    def _refuse(self, cid: str, why: str) -> bool:
        with self.lock:
            self.refused.add(cid)
        self.log(f"refused a client: {why}")
        return False

    # -- rounds ------------------------------------------------------------------------------------------------
    def nonce(self, kind: str, server_round: int) -> str:
        with self.lock:
            return self.nonces.setdefault((kind, server_round), secrets.token_hex(16))

    def check_fit(self, cid: str, server_round: int, num_examples: Any, metrics: dict[str, Any],
                  arrays: list[np.ndarray], reference: list[np.ndarray] | None) -> str | None:
        """The reason a fit reply is rejected, or None."""
        site = metrics.get("site") if isinstance(metrics, dict) else None
        why = self._who(cid, site)
        if why:
            return why
        if self.sizes is not None and num_examples != self.sizes.get(site):
            return f"it claims {num_examples!r} training samples, the configuration gives the site {self.sizes[site]}"
        if not isinstance(num_examples, int) or num_examples < 1:
            return f"it claims {num_examples!r} training samples"
        why = _metrics_problem(metrics)
        if why:
            return why
        if self.secret is not None:
            want = tag(self.secret, "fit", self.nonce("fit", server_round), site, num_examples, arrays_digest(arrays),
                       metrics_text(metrics))
            if not hmac.compare_digest(str(metrics.get("tag", "")), want):
                return "its signature does not match (wrong secret, another round's update, or altered in transit)"
        return check_update(arrays, reference, self.max_update_ratio)

    def check_evaluate(self, cid: str, server_round: int, num_examples: Any, metrics: dict[str, Any]) -> str | None:
        site = metrics.get("site") if isinstance(metrics, dict) else None
        why = self._who(cid, site)
        if why:
            return why
        if self.eval_sizes is not None and num_examples != self.eval_sizes.get(site):
            return f"it claims {num_examples!r} evaluation samples, the configuration gives {self.eval_sizes[site]}"
        why = _metrics_problem(metrics)
        if why:
            return why
        if self.secret is not None:
            want = tag(self.secret, "evaluate", self.nonce("evaluate", server_round), site, num_examples,
                       metrics_text(metrics))
            if not hmac.compare_digest(str(metrics.get("tag", "")), want):
                return "its signature does not match (wrong secret, another round's metrics, or altered in transit)"
        return None

    def _who(self, cid: str, site: Any) -> str | None:
        if self.secret is not None and cid not in self.bound:
            return "it did not join through the handshake"
        return self.bind(cid, site)

    def reject(self, kind: str, server_round: int, cid: str, metrics: Any, why: str) -> None:
        site = metrics.get("site") if isinstance(metrics, dict) else None
        with self.lock:
            self.rejected.append({"round": server_round, "kind": kind, "site": _shown(site), "reason": why})
        self.log(f"round {server_round}: rejected the {kind} reply of site {_shown(site)}: {why}")

    @staticmethod
    def log(message: str) -> None:
        _log.warning(f"federation: {message}")


def _metrics_problem(metrics: dict[str, Any], most: int = 64) -> str | None:
    """Metrics are what results.json and federation.json record: at most ``most``, each a finite number."""
    if len(metrics) > most:
        return f"it sends {len(metrics)} metrics (at most {most})"
    for k, v in metrics.items():
        if k in ("site", "tag"):
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return f"metric {_shown(k)} is not a finite number"
    return None


def check_update(arrays: list[np.ndarray], reference: list[np.ndarray] | None, max_ratio: float) -> str | None:
    """The reason a site's model cannot enter the global model (count, shapes, dtype, finite, norm), or None."""
    if reference is None:
        return None
    if len(arrays) != len(reference):
        return f"it holds {len(arrays)} tensors, the global model {len(reference)}"
    for i, (a, r) in enumerate(zip(arrays, reference)):
        if tuple(a.shape) != tuple(r.shape):
            return f"tensor {i} has shape {tuple(a.shape)}, the global model's is {tuple(r.shape)}"
        if a.dtype.kind != "f":
            return f"tensor {i} is {a.dtype}, not floating point"
        if not np.isfinite(a).all():
            return f"tensor {i} holds NaN or infinite values"
    diff = math.sqrt(sum(float(np.sum((a.astype(np.float64) - r.astype(np.float64)) ** 2))
                         for a, r in zip(arrays, reference)))
    ref = math.sqrt(sum(float(np.sum(r.astype(np.float64) ** 2)) for r in reference))
    if not math.isfinite(diff) or diff > max_ratio * max(ref, 1e-6):
        return (f"it moved the model by {diff:.3g}, more than federate.max_update_ratio={max_ratio:g} times the global "
                f"model's norm {ref:.3g}")
    return None


def all_finite(arrays: Sequence[np.ndarray]) -> bool:
    return all(np.isfinite(np.asarray(a)).all() for a in arrays)
