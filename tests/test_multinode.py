"""A real multi-node Ray cluster on one host: a head and two worker nodes, each its own raylet
with its own logical resources and its own stage-cache mirror (``TAMPER_SEARCH_MIRROR``), the
stage cache a shared ``file://`` URI standing in for a bucket. What a cloud cluster does that one
Ray node cannot show: stage inputs fetched by the node that needs them, DDP across nodes, and a
node dying under a running trial.

The head declares no ``stage`` resource and the workers one each; the searches ask for it
(``scaling.resources``), so every stage runs on a worker node and the head only schedules.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import psutil
import pytest
import torch

from search import cache, tables
from search.runner import Runner, run_stage
from search.trial import pretrain_spec, method_spec
from tests.conftest import ROOT, forget_cluster, tiny_search
from trainables import models

pytestmark = [pytest.mark.slow, pytest.mark.cluster]  # not in the default run: pytest -m cluster
ray = pytest.importorskip("ray")
MB = 2**20


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Head (1 CPU, no stage resource) + two workers (3 CPUs, ``stage: 1``, ``nodeN: 2``), each
    with its own mirror; stopped by killing exactly the processes it started."""
    from ray.cluster_utils import Cluster

    root = tmp_path_factory.mktemp("nodes")
    env = {"PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    c = Cluster(initialize_head=True, shutdown_at_exit=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False, "object_store_memory": 80 * MB,
        "env_vars": {**env, "TAMPER_SEARCH_MIRROR": str(root / "head")},
        # a dead node is declared dead within ~2 s, not the default ~15 s
        "_system_config": {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                           "health_check_failure_threshold": 3},
    })
    workers = {}
    for i in (1, 2):
        node = c.add_node(num_cpus=3, resources={"stage": 1, f"node{i}": 2}, object_store_memory=80 * MB,
                          env_vars={**env, "TAMPER_SEARCH_MIRROR": str(root / f"node{i}")})
        workers[node.node_id] = {"name": f"node{i}", "node": node, "mirror": root / f"node{i}"}
    c.wait_for_nodes()
    try:
        yield c, workers, root
    finally:
        if ray.is_initialized():
            ray.shutdown()
        address = c.address
        c.shutdown()
        forget_cluster(address)


def _search(tmp_path, address: str, name: str, *extra: str) -> subprocess.Popen:
    """``python search/run.py`` as a driver connected to the cluster (``RAY_ADDRESS``)."""
    cmd = tiny_search(tmp_path, name, "--set", "scaling.resources={stage: 1}", "--set", "verify.enabled=false",  # not tested here
                      *extra, cache=f"file://{tmp_path / 'cache'}")
    return subprocess.Popen(cmd, cwd=tmp_path, env={**os.environ, "RAY_ADDRESS": address},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _entries(cache_root: Path) -> dict[str, dict]:
    """Every committed entry of the shared cache: key -> result.json."""
    return {d.name: json.loads((d / cache.RESULT_FILE).read_text())
            for d in cache_root.iterdir() if (d / cache.RESULT_FILE).exists()}


def _mirror(node_root: Path, uri: str) -> Path:
    """A node's mirror of the cache at ``uri`` (``cache.mirror_root`` as that node computes it)."""
    return node_root / cache.mirror_root(uri).name


def test_stages_spread_over_nodes_fetch_each_input_once_where_needed(cluster, tmp_path):
    c, workers, root = cluster
    uri = f"file://{tmp_path / 'cache'}"
    proc = _search(tmp_path, c.address, "nodes")
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-4000:]
    entries = _entries(tmp_path / "cache")
    assert entries and all(r["node"] in workers for r in entries.values())  # nothing ran on the head
    per_node = {workers[n]["name"]: sum(r["node"] == n for r in entries.values()) for n in workers}
    assert all(per_node.values()), per_node  # both worker nodes ran stages
    assert not _mirror(root / "head", uri).exists()
    for node_id, w in workers.items():
        mirror = _mirror(w["mirror"], uri)
        ran = [r for r in entries.values() if r["node"] == node_id]
        produced = {k for k, r in entries.items() if r["node"] == node_id}
        needed = {k for r in ran for k in r["inputs"].values()} - produced
        fetched = [f["key"] for f in cache.fetches(mirror)]
        assert len(fetched) == len(set(fetched)), fetched  # each input downloaded once per node
        assert set(fetched) == needed  # by the node that needs it, and by no other
        held = {d.name for d in mirror.iterdir() if d.is_dir() and not d.name.startswith(".")}
        assert held == produced | needed
        w["stages"], w["fetched_bytes"] = len(ran), sum(f["bytes"] for f in cache.fetches(mirror))
    print({w["name"]: (w["stages"], w["fetched_bytes"]) for w in workers.values()})
    trials = pd.read_parquet(tmp_path / "results" / "nodes" / tables.TRIALS)
    assert (trials["status"] == "ok").all() and (trials["kind"] == "defender").sum() == 2


def test_two_ddp_workers_on_two_nodes_match_two_on_one_node(cluster, tiny_cfg, tmp_path, monkeypatch):
    """Gloo DDP across nodes: the same weights as the same two ranks on one node; TAR's inner
    adversaries, L_TR gradient and outer step through DDP; the checkpoint handed back."""
    c, workers, _ = cluster
    monkeypatch.setenv("TAMPER_SEARCH_MIRROR", str(tmp_path / "driver"))  # this process's own mirror
    ray.init(address=c.address)
    try:
        uri = f"file://{tmp_path / 'cache'}"
        across = Runner(uri, executor="ray", scaling={"num_workers": 2, "resources_per_worker": {"CPU": 1, "stage": 1}})
        within = Runner(f"{uri}-1", executor="ray", scaling={"num_workers": 2, "resources_per_worker": {"CPU": 1, "node1": 1}})
        with ThreadPoolExecutor(2) as pool:  # both at once: the nodes have the CPUs for it
            ref, one = pool.map(lambda r: run_stage(r, "pretrain", pretrain_spec(tiny_cfg, "pure")), (across, within))
        spec = method_spec(tiny_cfg, "tar", {"steps": 2, "inner_steps": 4, "subsample": 2, "adversary_batch_size": 8})
        tarred = run_stage(across, "tar", spec, {"model": ref, "reference": ref})
    finally:
        ray.shutdown()
    a = models.load_model(cache.materialize(ref.path)).state_dict()
    b = models.load_model(cache.materialize(one.path)).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    local = run_stage(Runner(tmp_path / "local", executor="local"), "pretrain", pretrain_spec(tiny_cfg, "pure"))
    p = models.load_model(local.path).state_dict()
    # DDP averages two ranks' different batches: same shapes, different weights than one process
    assert any(not torch.equal(a[k], p[k]) for k in a)
    t = models.load_model(cache.materialize(tarred.path)).state_dict()
    assert all(torch.isfinite(v).all() for v in t.values()) and any(not torch.equal(t[k], a[k]) for k in t)
    assert [s for s, k, _ in tarred.result["curve"] if k == "tr_loss"] == [1, 2]
    # both TAR ranks needed the pretrained model (committed from this process): each node
    # fetched it into its own mirror, once; so the two ranks did run on two nodes
    for w in workers.values():
        assert [f["key"] for f in cache.fetches(_mirror(w["mirror"], uri))].count(ref.key) == 1


def test_a_node_killed_under_a_trial_is_retried_elsewhere_and_every_trial_lands_once(cluster, tmp_path):
    """Runs last in this module: it kills one of the cluster's worker nodes (its raylet and the
    workers under it, by PID, while a defender trial's unlearning stage is staged on it)."""
    c, workers, _ = cluster
    uri = f"file://{tmp_path / 'cache'}"
    proc = _search(tmp_path, c.address, "loss", "--set", "search.max_failures=1")
    killed: list[str] = []

    def kill_the_node_of_a_running_trial() -> None:
        deadline = time.time() + 500
        while time.time() < deadline and proc.poll() is None:
            for node_id, w in workers.items():
                mirror = _mirror(w["mirror"], uri)
                staged = [d.name.rsplit("-", 1)[0] for d in (mirror / ".staging").glob("unlearn-*")]
                if any(not (mirror / key).exists() for key in staged):  # staged, not yet committed
                    raylet = w["node"].all_processes[ray._private.ray_constants.PROCESS_TYPE_RAYLET][0].process
                    # the machine goes: its raylet and the worker processes under it, at once
                    for proc_ in [*psutil.Process(raylet.pid).children(recursive=True), raylet]:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(proc_.pid, signal.SIGKILL)
                    killed.append(node_id)
                    return
            time.sleep(0.1)

    watcher = threading.Thread(target=kill_the_node_of_a_running_trial, daemon=True)
    watcher.start()
    out, _ = proc.communicate(timeout=600)
    watcher.join(timeout=5)
    assert proc.returncode == 0, out[-4000:]
    assert killed, "no trial's stage was seen running on a worker node"
    (dead,) = killed
    exp = tmp_path / "results" / "loss"
    trials = pd.read_parquet(exp / tables.TRIALS)
    defenders = trials[trials["kind"] == "defender"]
    # every trial exactly once, all finished; the interrupted one re-ran on the surviving node
    assert len(defenders) == 2 and defenders["trial_id"].is_unique and (defenders["status"] == "ok").all()
    entries = _entries(tmp_path / "cache")
    unlearned = [r for k, r in entries.items() if k.startswith("unlearn-")]
    assert len(unlearned) == 2 and all(r["node"] != dead for r in unlearned)  # killed before its commit
    # nothing half-written: every folder of the shared cache carries its commit marker
    folders = [d for d in (tmp_path / "cache").iterdir() if not d.name.startswith(".")]
    assert all((d / cache.RESULT_FILE).exists() for d in folders)
    failures = _tune_failures(exp)
    assert sorted(failures.values()) == [0, 1], failures  # one trial lost its node and ran again
    print(f"killed {workers[dead]['name']}; Tune failures per trial {failures}")


def _tune_failures(exp: Path) -> dict[str, int]:
    """Tune's own count of failures per trial, from its experiment state."""
    (state,) = sorted((exp / "tune").glob("experiment_state-*.json"))[-1:]
    trials = json.loads(state.read_text())["trial_data"]
    return {json.loads(t)["trial_id"]: json.loads(run)["num_failures"] for t, run in trials}
