"""Federated training: site assignment, FedProx's term, FedAvg's aggregate, dropout, and 2 client processes
talking to a server over loopback (Flower's gRPC)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mmfm.data.sites import assign_sites, site_indices
from mmfm.engine.federated import Proximal, get_arrays, set_arrays
from mmfm.errors import ConfigError
from tests.network import free_port

ROOT = str(Path(__file__).resolve().parents[2])


def test_sites_iid_balanced_patient_grouped_and_deterministic():
    iid = assign_sites(101, None, "iid", 3, seed=4)
    counts = sorted(len(v) for v in site_indices(iid).values())
    assert counts == [33, 34, 34] and iid == assign_sites(101, None, "iid", 3, seed=4)
    assert iid != assign_sites(101, None, "iid", 3, seed=5)
    patients = [f"p{i % 7}" for i in range(70)]
    sites = assign_sites(70, patients, "patient", 3, seed=0)
    by_patient = {}
    for p, s in zip(patients, sites):
        by_patient.setdefault(p, set()).add(s)
    assert all(len(v) == 1 for v in by_patient.values())   # a patient never spans two sites
    assert assign_sites(3, ["CT", "MR", "CT"], "modality", 0, seed=0) == ["CT", "MR", "CT"]
    with pytest.raises(ConfigError):
        assign_sites(5, None, "iid", 0, seed=0)


def test_fedprox_term_matches_the_naive_formula_and_its_gradient():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)

    class Task(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, batch):
            return {"loss": self.net(batch["x"]).pow(2).mean()}

    task = Task()
    prox = Proximal(task, mu=0.5)
    anchor = [p.detach().clone() for p in net.parameters()]
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1)
    x = torch.randn(4, 3)
    out = prox({"x": x})
    naive = 0.25 * sum(((p - a) ** 2).sum() for p, a in zip(net.parameters(), anchor))
    assert out["prox_loss"].item() == pytest.approx(naive.item(), rel=1e-6)
    assert out["loss"].item() == pytest.approx(task({"x": x})["loss"].item() + naive.item(), rel=1e-6)
    net.zero_grad()
    out["loss"].backward()
    g = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    task({"x": x})["loss"].backward()
    for gp, p, a in zip(g, net.parameters(), anchor):   # d/dw mu/2 |w - a|^2 = mu (w - a)
        assert torch.allclose(gp - p.grad, 0.5 * (p.detach() - a), atol=1e-6)


def test_parameters_round_trip_and_shape_mismatch_is_a_clear_error():
    a, b = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2)), torch.nn.Linear(3, 2)
    arrays = get_arrays(a)
    assert len(arrays) == 4 + 2   # weight, bias, BN weight/bias + running mean/var; num_batches_tracked stays local
    arrays[0][:] = 7
    set_arrays(a, arrays)
    assert torch.all(a[0].weight == 7)
    with pytest.raises(ConfigError, match="same configuration"):
        set_arrays(b, arrays)


@pytest.fixture
def fed_cfg(mini_root, tmp_path):
    from mmfm.workflows.config import load_config

    def make(*extra):
        return load_config("configs/federated_classification.yaml", [
            f"data.root={mini_root}", "encoder.name=resnet_tiny", "train.batch_size=8", "data.eval_splits=[test]",
            "federate.rounds=2", "federate.local_steps=2", f"out={tmp_path / 'fed'}", *extra])
    return make


@pytest.mark.realdata
def test_simulated_fedavg_is_the_example_weighted_mean_of_the_sites_local_models(fed_cfg):
    """One round by hand (each site trains from the same initial model, the global model is their mean weighted
    by training samples) equals the simulated round through Flower's server loop."""
    from mmfm.workflows.federate import _client, run_simulation, site_datasets
    from mmfm.workflows.supervised import load_trained, prepare

    cfg = fed_cfg("federate.rounds=1")
    sets, names = site_datasets(cfg)
    assert sorted(sets) == ["CT", "MR"]
    prep = prepare(cfg)
    start = get_arrays(prep.model)
    local, weights = [], []
    for site in sorted(sets):
        client = _client(cfg, site, sets[site], names, prep.num_classes)
        arrays, n, metrics = client.fit(start, {"server_round": 1})
        local.append(arrays)
        weights.append(n)
        assert metrics["site"] == site and n == len(sets[site]["train"])
    mean = [sum(w * a[i] for w, a in zip(weights, local)) / sum(weights) for i in range(len(start))]
    run_simulation(cfg)
    model, state = load_trained(cfg.out)
    got = get_arrays(model)
    assert all(np.allclose(g, m, atol=1e-5) for g, m in zip(got, mean))
    assert state["run_info"]["federation"]["sites"] == ["CT", "MR"]
    recs = json.loads((Path(cfg.out) / "results.json").read_text())
    assert {r["dataset"] for r in recs} == {"mini/patches2d", "mini/patches2d@CT", "mini/patches2d@MR"}
    acc = {r["dataset"]: r["value"] for r in recs if r["metric"] == "accuracy"}
    n_ct, n_mr = (len(sets[s]["test"]) for s in ("CT", "MR"))
    assert acc["mini/patches2d"] == pytest.approx((n_ct * acc["mini/patches2d@CT"] + n_mr * acc["mini/patches2d@MR"])
                                                  / (n_ct + n_mr))


@pytest.mark.realdata
def test_a_site_that_drops_out_does_not_stop_the_federation(fed_cfg):
    from mmfm.workflows.federate import run_simulation

    cfg = fed_cfg("federate.rounds=3", "federate.strategy=fedprox", "federate.drop={MR: 2}")
    run_simulation(cfg)
    fed = json.loads((Path(cfg.out) / "federation.json").read_text())
    assert [p["trained"] for p in fed["participation"]] == [["CT", "MR"], ["CT"], ["CT"]]
    assert fed["strategy"] == "fedprox" and (Path(cfg.out) / "checkpoints" / "last" / "model.safetensors").exists()
    with pytest.raises(ConfigError, match="do not exist"):
        run_simulation(fed_cfg("federate.drop={XR: 1}"))
    from mmfm.workflows.federate import run_client

    with pytest.raises(ConfigError, match="no site 'XR'"):
        run_client(fed_cfg(), "XR")
    with pytest.raises(ConfigError, match="strategy"):
        run_simulation(fed_cfg("federate.strategy=fedavgg"))


@pytest.mark.long
@pytest.mark.realdata
def test_server_and_two_client_processes_over_loopback_survive_a_client_killed_mid_round(mini_root, tmp_path):
    out = tmp_path / "fed"
    args = ["configs/federated_classification.yaml", f"data.root={mini_root}", "encoder.name=resnet_tiny",
            "train.batch_size=8", "data.eval_splits=[test]", "federate.rounds=3", "federate.local_steps=2",
            f"federate.address=127.0.0.1:{free_port()}", "federate.round_timeout=120", "federate.wait_s=120",
            f"out={out}"]
    env = {**os.environ, "PYTHONPATH": ROOT}
    cmd = [sys.executable, "-m", "mmfm.cli.main", "federate"]
    server = subprocess.Popen([*cmd, "server", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    time.sleep(1)
    ct = subprocess.Popen([*cmd, "client", "--site", "CT", *args], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    mr = subprocess.Popen([sys.executable, "-m", "tests.engine.faults", "site-exit-round", "2", "--", "federate",
                           "client", "--site", "MR", *args], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    try:
        assert mr.wait(timeout=240) == 137                 # died in the middle of round 2
        assert server.wait(timeout=240) == 0, server.stdout.read()[-3000:]
        assert ct.wait(timeout=60) == 0
    finally:
        for p in (server, ct, mr):
            p.kill()
    fed = json.loads((out / "federation.json").read_text())
    assert [p["trained"] for p in fed["participation"]] == [["CT", "MR"], ["CT"], ["CT"]]
    assert fed["mode"] == "server"
    assert fed["history"][0]["evaluate"].keys() == {"CT", "MR"}   # per-site metrics while both were there
    assert json.loads((out / "status.json").read_text())["status"] == "complete"


@pytest.mark.realdata
def test_federated_pretraining_exports_an_encoder_that_train_starts_from(mini_root, tmp_path):
    from mmfm.cli.main import main

    out = tmp_path / "fedmae"
    assert main(["federate", "simulate", "configs/pretrain/mae_2d.yaml", f"data.root={mini_root}",
                 "encoder.name=vit_micro", "federate.rounds=2", "federate.local_steps=2", "train.batch_size=16",
                 "train.progress=false", f"out={out}"]) == 0
    spec = json.loads((out / "encoder" / "encoder.json").read_text())
    assert spec["method"] == "vit_micro-mae-fedavg" and spec["objective"]["name"] == "mae"
    recs = json.loads((out / "results.json").read_text())
    assert {r["dataset"] for r in recs} == {"mini/patches2d", "mini/patches2d@CT", "mini/patches2d@MR"}
    assert all(r["metric"] == "loss" and r["split"] == "val" and r["value"] > 0 for r in recs)
    assert main(["train", "configs/quickstart_classification.yaml", f"data.root={mini_root}",
                 f"encoder.weights={out}", "train.max_steps=2", "train.batch_size=8", "train.progress=false",
                 "data.eval_splits=[test]", f"out={tmp_path / 'down'}"]) == 0
    with pytest.raises(ConfigError, match="needs text"):
        from mmfm.workflows.config import load_config
        from mmfm.workflows.federate import run_simulation

        run_simulation(load_config("configs/pretrain/clip_2d.yaml", [f"data.root={mini_root}",
                                                                      f"out={tmp_path / 'clip'}"]))


def test_sites_from_a_column_of_the_users_labels_csv(tmp_path):
    """A user's multi-modal folder with a `site` column: each row goes to its site, in every split."""
    from mmfm.data.synthetic import write_petct_phantoms
    from mmfm.workflows.config import load_config
    from mmfm.workflows.federate import site_datasets

    root = write_petct_phantoms(tmp_path / "petct", n=60, sites=3)
    cfg = load_config(None, ["data.dataset=multimodal_csv", f"data.root={root}",
                             "data.options={modality_columns: {CT: ct, PT: pet}}", "data.size=[32,32]",
                             "data.eval_splits=[test]", "federate.sites=site"])
    sets, names = site_datasets(cfg)
    assert sorted(sets) == ["site0", "site1", "site2"] and len(names) == 3
    rows = {ln.split(",")[0]: ln.split(",")[-1] for ln in (root / "labels.csv").read_text().splitlines()[1:]}
    for site, parts in sets.items():
        for ds in parts.values():
            assert {rows[str(r["paths"]["CT"].relative_to(root))] for r in ds.samples.records} == {site}
