"""Attacks on the federation server (issue 24, item 6): poisoned, malformed, oversized and impersonating updates,
clients without the secret, plain clients against a TLS server, and a non-finite global model at the end.

Honest sites here are :class:`~mmfm.engine.federated.SiteClient` whose local round is replaced by a fixed step (so
the expected global model is known exactly); attackers are plain Flower clients that send what they like.
"""

from __future__ import annotations

import datetime
import ipaddress
import threading
import time
from pathlib import Path

import flwr
import numpy as np
import pytest
import torch
from torch import nn

from mmfm.engine.federated import Recorder, SiteClient, get_arrays, make_strategy, simulate
from tests.network import free_port

SECRET = b"0123456789abcdef0123456789abcdef"


class Toy(SiteClient):
    """An honest site over gRPC: its local round adds ``step`` to every weight (n training, 3 evaluation samples)."""

    def __init__(self, name: str, step: float, n: int = 5, secret: bytes | None = None) -> None:
        torch.manual_seed(0)
        super().__init__(name, nn.Linear(4, 2), list(range(n)), None, None, 1,
                         lambda m: {"test/accuracy": 0.5}, 3, secret=secret)
        self.step = step

    def train_round(self, rnd: int, config: dict) -> float:
        with torch.no_grad():
            for p in self.model.parameters():
                p.add_(self.step)
        return 0.1


class Honest(flwr.client.NumPyClient):
    """An honest site in the simulations: its update is the global model + 0.01."""

    def __init__(self, site: str) -> None:
        self.site = site

    def fit(self, parameters: list, config: dict) -> tuple:
        return [p + 0.01 for p in parameters], 5, {"site": self.site, "loss": 0.1}

    def evaluate(self, parameters: list, config: dict) -> tuple:
        return 0.0, 3, {"site": self.site, "test/accuracy": 0.5}


class Attacker(flwr.client.NumPyClient):
    """Sends ``make(global arrays)`` as its update, under the site name and sample count it chooses."""

    def __init__(self, make, site: str = "B", n: int = 5) -> None:  # noqa: ANN001
        self.make, self.site, self.n, self.fitted = make, site, n, 0

    def get_properties(self, config: dict) -> dict:
        return {"site": self.site, "proof": "0" * 64}

    def fit(self, parameters: list, config: dict) -> tuple:
        self.fitted += 1
        return self.make(parameters), self.n, {"site": self.site, "loss": 0.0}

    def evaluate(self, parameters: list, config: dict) -> tuple:
        return 0.0, 1, {"site": self.site, "test/accuracy": 1.0}


def _initial() -> list[np.ndarray]:
    torch.manual_seed(0)
    return get_arrays(nn.Linear(4, 2))


def _run(attacker: Attacker, rounds: int = 2, **kw) -> list[np.ndarray]:  # noqa: ANN003
    strategy = make_strategy("fedavg", Recorder(), 1, 0.0, _initial(), **kw)
    simulate({"A": Honest("A"), "B": attacker}, strategy, rounds)
    return strategy.global_arrays()


def _only_honest(got: list[np.ndarray], rounds: int = 2) -> bool:
    want = [a + 0.01 * rounds for a in _initial()]
    return len(got) == len(want) and all(g.shape == w.shape and np.allclose(g, w, atol=1e-6)
                                         for g, w in zip(got, want))


def test_a_nan_update_is_rejected_and_the_global_model_stays_finite(caplog):
    got = _run(Attacker(lambda ps: [np.full_like(p, np.nan) for p in ps]))
    assert all(np.isfinite(a).all() for a in got)
    assert _only_honest(got)
    assert "rejected the fit reply of site 'B'" in caplog.text      # a warning of mmfm.engine.federated_guard


@pytest.mark.parametrize("make", [lambda ps: [p.reshape(-1)[:3] for p in ps],          # wrong shapes
                                  lambda ps: ps[:-1],                                    # a tensor missing
                                  lambda ps: [*ps, np.zeros(3, np.float32)],             # one too many
                                  lambda ps: [p.astype(np.int64) for p in ps]],          # not floating point
                         ids=["shape", "fewer", "more", "dtype"])
def test_a_malformed_update_is_rejected_without_crashing_the_server(make):
    assert _only_honest(_run(Attacker(make)))


def test_non_numeric_or_nan_metrics_are_rejected():
    class Odd(Attacker):
        def fit(self, parameters: list, config: dict) -> tuple:
            return [p + 0.5 for p in parameters], 5, {"site": "B", "loss": "<img src=x onerror=alert(1)>"}

    class NaNLoss(Attacker):
        def fit(self, parameters: list, config: dict) -> tuple:
            return [p + 0.5 for p in parameters], 5, {"site": "B", "loss": float("nan")}

    assert _only_honest(_run(Odd(None)))
    assert _only_honest(_run(NaNLoss(None)))


def test_an_update_beyond_the_norm_bound_is_rejected():
    assert _only_honest(_run(Attacker(lambda ps: [p * 1e4 + 3.0 for p in ps])))


def test_a_site_cannot_send_under_another_sites_name():
    """The in-process proxy 'B' claims to be site 'A' with a plausible update: refused, A's alone is aggregated."""
    assert _only_honest(_run(Attacker(lambda ps: [p + 0.5 for p in ps], site="A")))


def test_a_site_cannot_inflate_its_weight_or_name_an_unknown_site():
    from mmfm.engine.federated_guard import Guard

    guard = lambda: Guard(["A", "B"], {"A": 5, "B": 5}, {"A": 3, "B": 3})  # noqa: E731
    assert _only_honest(_run(Attacker(lambda ps: [p + 0.5 for p in ps], n=10**9), guard=guard()))
    assert _only_honest(_run(Attacker(lambda ps: [p + 0.5 for p in ps], site="Z"), guard=guard()))


def test_the_final_checkpoint_is_never_written_from_a_non_finite_model(tmp_path, monkeypatch):
    import mmfm.engine.federated as federated
    from mmfm.errors import MMFMError
    from mmfm.workflows.config import load_config
    from mmfm.workflows.federate import run_simulation
    from tests.userdata import write_labelled_folder

    write_labelled_folder(tmp_path / "data", n_per_class=6, size=16)
    cfg = load_config("configs/federated_classification.yaml", [
        "data.dataset=folder", f"data.root={tmp_path / 'data'}", "federate.sites=iid", "encoder.name=resnet_tiny",
        "data.size=[16,16]", "train.batch_size=4", "data.eval_splits=[test]", "federate.rounds=1",
        "federate.local_steps=1", f"out={tmp_path / 'fed'}"])

    def diverged(clients, strategy, rounds, drop=None):  # noqa: ANN001, ANN202  (a NaN model, however it came)
        strategy.last = [np.full_like(a, np.nan) for a in parameters(strategy)]

    parameters = lambda s: flwr.common.parameters_to_ndarrays(s.initial_parameters)  # noqa: E731
    monkeypatch.setattr(federated, "simulate", diverged)
    with pytest.raises(MMFMError, match="NaN or infinite"):
        run_simulation(cfg)
    assert not (tmp_path / "fed" / "checkpoints").exists()


# -- over loopback (Flower's gRPC) -------------------------------------------------------------------------------
def _serve(address: str, guard, expected: int, certificates=None) -> list[np.ndarray]:  # noqa: ANN001
    """The server in this (main) thread, as Flower requires; the sites run in threads started before."""
    from mmfm.engine.federated import serve_federation

    strategy = make_strategy("fedavg", Recorder(), 1, 0.0, _initial(), guard=guard)
    serve_federation(address, strategy, 1, expected, round_timeout=30, wait_s=6, certificates=certificates)
    return strategy.global_arrays()


def _site(address: str, client, delay: float = 0.0, **kw) -> tuple[threading.Thread, dict]:  # noqa: ANN001, ANN003
    from mmfm.engine.federated import connect

    out: dict = {}

    def run() -> None:
        time.sleep(delay)
        try:
            connect(address, client, **kw)
        except Exception as e:  # noqa: BLE001  (what the site saw, for the test to check)
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def test_with_a_secret_a_client_without_it_never_joins_nor_receives_the_model(caplog):
    from mmfm.engine.federated_guard import Guard

    address = f"127.0.0.1:{free_port()}"
    honest = Toy("A", 0.01, secret=SECRET)
    intruder = Toy("B", 0.5, secret=b"not-the-secret-but-long-enough!!")
    _site(address, honest)
    _site(address, intruder)
    got = _serve(address, Guard(["A", "B"], {"A": 5, "B": 5}, {"A": 3, "B": 3}, secret=SECRET), expected=2)
    assert _only_honest(got, rounds=1)
    assert honest.rounds == 1 and intruder.rounds == 0            # the intruder was never sent a model
    assert "does not hold the secret" in caplog.text              # a warning of mmfm.engine.federated_guard


def _certificates(folder: Path) -> tuple[bytes, bytes, bytes]:
    """A throwaway CA and a server certificate for 127.0.0.1 (what `openssl` would make for a real deployment)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(subject: str, key, issuer: str, signer, ca: bool) -> x509.Certificate:  # noqa: ANN001
        b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
             .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)])).public_key(key.public_key())
             .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                             x509.DNSName("localhost")]), critical=False)
        return b.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    pem = lambda c: c.public_bytes(serialization.Encoding.PEM)  # noqa: E731
    ca = pem(cert("mmfm test CA", ca_key, "mmfm test CA", ca_key, True))
    server = pem(cert("127.0.0.1", key, "mmfm test CA", ca_key, False))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in (("ca.crt", ca), ("server.crt", server), ("server.key", key_pem)):
        (folder / name).write_bytes(data)
    return ca, server, key_pem


def test_tls_server_takes_sites_that_trust_its_ca_and_no_plain_client(tmp_path):
    from mmfm.engine.federated_guard import Guard, read_certificates
    from mmfm.errors import ConfigError

    _certificates(tmp_path / "tls")
    address = f"127.0.0.1:{free_port()}"
    plain = Toy("A", 0.5)
    plain_thread, plain_out = _site(address, plain, delay=1.0, retries=3)     # no TLS
    site = Toy("A", 0.01)
    _site(address, site, delay=2.0, root_certificate=read_certificates(str(tmp_path / "tls"), server=False)[0])
    got = _serve(address, Guard(["A"], {"A": 5}, {"A": 3}), expected=1,
                 certificates=read_certificates(str(tmp_path / "tls"), server=True))
    assert site.rounds == 1 and _only_honest(got, rounds=1)
    plain_thread.join(timeout=30)
    assert plain.rounds == 0 and isinstance(plain_out.get("error"), ConfigError)


def test_a_short_or_missing_secret_file_is_a_clear_error(tmp_path):
    from mmfm.engine.federated_guard import read_secret
    from mmfm.errors import ConfigError

    (tmp_path / "short").write_text("abc\n")
    with pytest.raises(ConfigError, match="fewer than 16 bytes"):
        read_secret(str(tmp_path / "short"))
    with pytest.raises(ConfigError, match="cannot read it"):
        read_secret(str(tmp_path / "absent"))
    assert read_secret("") is None


@pytest.mark.realdata
def test_the_commands_run_a_federation_with_a_secret_over_tls_and_refuse_an_intruder(mini_root, tmp_path, caplog):
    """`mmfm federate server` / `client` wiring (run_server in this thread, the sites in threads): both sites with
    the secret train over TLS, a client with another secret is refused, federation.json says how it ran."""
    import json

    from mmfm.workflows.config import load_config
    from mmfm.workflows.federate import run_client, run_server

    _certificates(tmp_path / "tls")
    (tmp_path / "secret").write_bytes(SECRET)
    (tmp_path / "other").write_bytes(b"x" * 32)
    base = ["configs/federated_classification.yaml", [
        f"data.root={mini_root}", "encoder.name=resnet_tiny", "train.batch_size=8", "data.eval_splits=[test]",
        "federate.rounds=1", "federate.local_steps=1", f"federate.address=127.0.0.1:{free_port()}",
        # wait_s: the first round starts once both sites are in; a loaded machine can take over a minute to start
        # the second site (it builds its data and model in a thread of this process), and costs nothing otherwise
        "federate.wait_s=300", f"federate.tls_dir={tmp_path / 'tls'}", f"out={tmp_path / 'fed'}"]]
    cfg = lambda secret: load_config(base[0], [*base[1], f"federate.secret_file={tmp_path / secret}"])  # noqa: E731
    errors: dict = {}

    def site(name: str, secret: str, delay: float) -> threading.Thread:
        def run() -> None:
            time.sleep(delay)
            try:
                run_client(cfg(secret), name)
            except Exception as e:  # noqa: BLE001
                errors[(name, secret)] = e
        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t

    sites = [site("CT", "secret", 1), site("MR", "other", 1), site("MR", "secret", 4)]
    run_server(cfg("secret"))
    for t in sites[::2]:
        t.join(timeout=300)
    fed = json.loads((tmp_path / "fed" / "federation.json").read_text())
    assert fed["authenticated"] and fed["tls"] and not fed["rejected"]
    assert [p["trained"] for p in fed["participation"]] == [["CT", "MR"]]
    assert ("CT", "secret") not in errors and ("MR", "secret") not in errors
    assert "does not hold the secret" in caplog.text              # a warning of mmfm.engine.federated_guard


def test_the_first_round_waits_for_admitted_sites_not_connections_still_unchecked():
    """A connection that registers while another site's handshake runs is not yet admitted: the first round must
    not start on its count. Here the intruder connects during the real site's handshake and fails its own, so the
    server keeps waiting for the second real site instead of sampling one site (the race CI once hit)."""
    from mmfm.engine.federated import _WaitForAll

    class Proxy:
        def __init__(self, cid: str) -> None:
            self.cid = cid

    class Guard:   # the handshake decisions of FederationGuard, with the registrations timed into them
        def __init__(self) -> None:
            self.admitted: set[str] = set()

        def handshake(self, proxy, timeout):  # noqa: ANN001, ANN201
            if proxy.cid == "CT" and "intruder" not in manager.clients:
                manager.register(Proxy("intruder"))          # connects while CT's handshake runs
                threading.Timer(0.3, manager.register, [Proxy("MR")]).start()
            ok = proxy.cid != "intruder"
            if ok:
                self.admitted.add(proxy.cid)
            return ok

        def release(self, cid):  # noqa: ANN001, ANN201
            self.admitted.discard(cid)

    manager = _WaitForAll(expected=2, wait_s=30, guard=Guard())
    manager.register(Proxy("CT"))
    sampled = manager.sample(1)
    assert sorted(p.cid for p in sampled) == ["CT", "MR"]
