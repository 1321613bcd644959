"""The autoscaler, rehearsed on one host: Ray's fake multi-node provider launches and removes
real raylets as a cloud provider would launch and terminate instances. Its worker types come
from ``cluster/aws.yaml`` (names, ``min_workers``, ``max_workers``), each GPU replaced by a
``fake_gpu`` resource (and one logical CPU); a search that asks for ``fake_gpu`` must grow the
cluster from no workers to its trial concurrency, finish, and shrink back after the idle timeout.

Departures from the real file, and only these: the provider (fake, through Ray's ``external``
provider hook: this Ray wheel lacks the fake provider's defaults file), no setup or start
commands, and an idle timeout of 6 s instead of 10 minutes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time

import pandas as pd
import psutil
import pytest
import yaml

from search import tables
from tests.conftest import ROOT, forget_cluster, tiny_search

pytestmark = [pytest.mark.slow, pytest.mark.cluster]  # not in the default run: pytest -m cluster
ray = pytest.importorskip("ray")
MB = 2**20
GPUS = {"g6e.2xlarge": 1, "p5.48xlarge": 8, "g2-standard-8": 1, "a3-highgpu-8g": 8}  # per instance type
IDLE_MINUTES = 0.1


def fake_config(launcher: dict, gcs_address: str) -> dict:
    """The launcher file's worker types on the fake provider: each GPU a ``fake_gpu``."""
    types = {"ray.head.default": {"resources": {"CPU": 1}, "node_config": {}, "max_workers": 0}}
    for name, t in launcher["available_node_types"].items():
        if name == launcher["head_node_type"]:
            continue
        gpus = GPUS[t["node_config"]["InstanceType"]]
        types[name] = {"resources": {"CPU": gpus, "fake_gpu": gpus, "object_store_memory": 80 * MB},
                       "node_config": {}, "min_workers": t["min_workers"], "max_workers": t["max_workers"]}
    empty = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
             "head_start_ray_commands", "worker_start_ray_commands", "cluster_synced_files", "rsync_exclude",
             "rsync_filter")
    return {
        "cluster_name": launcher["cluster_name"], "max_workers": launcher["max_workers"],
        "upscaling_speed": launcher["upscaling_speed"], "idle_timeout_minutes": IDLE_MINUTES,
        "provider": {"type": "external", "module": "ray.autoscaler._private.fake_multi_node.node_provider.FakeMultiNodeProvider",
                     "use_node_id_as_ip": True, "disable_node_updaters": True, "disable_launch_config_check": True,
                     "gcs_address": gcs_address},
        "available_node_types": types, "head_node_type": "ray.head.default",
        "auth": {}, "docker": {}, "file_mounts": {}, "file_mounts_sync_continuously": False,
        **{k: [] for k in empty},
    }


@pytest.fixture
def autoscaling_cluster(tmp_path, monkeypatch):
    """A head node whose autoscaler launches fake workers; yields (cluster, node types)."""
    from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID
    from ray.cluster_utils import Cluster

    # the autoscaler process and the raylets it starts inherit this environment
    monkeypatch.setenv("RAY_FAKE_CLUSTER", "1")
    monkeypatch.setenv("AUTOSCALER_UPDATE_INTERVAL_S", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    with socket.socket() as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    launcher = yaml.safe_load((ROOT / "cluster" / "aws.yaml").read_text())
    cfg = fake_config(launcher, f"{ray._private.services.get_node_ip_address()}:{port}")
    path = tmp_path / "autoscaling.json"
    path.write_text(json.dumps(cfg))
    c = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False, "object_store_memory": 80 * MB, "gcs_server_port": port,
        "autoscaling_config": str(path), "env_vars": {"RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_NODE_ID},
    })
    monitor = c.head_node.all_processes[ray._private.ray_constants.PROCESS_TYPE_MONITOR][0].process
    try:
        yield c, cfg["available_node_types"]
    finally:
        launched = psutil.Process(monitor.pid).children(recursive=True)  # the fake nodes' processes
        if ray.is_initialized():
            ray.shutdown()
        address = c.address
        c.shutdown()
        for p in launched:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        forget_cluster(address)


def test_a_search_grows_the_cluster_to_its_trial_concurrency_and_it_shrinks_when_idle(autoscaling_cluster, tmp_path):
    c, types = autoscaling_cluster
    assert all(t.get("min_workers", 0) == 0 for n, t in types.items() if n != "ray.head.default")
    ray.init(address=c.address)
    workers = lambda: [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("fake_gpu")]  # noqa: E731
    assert workers() == []
    start = time.time()
    timeline: list[tuple[float, int]] = []
    seen: dict[str, float] = {}  # node id -> its fake GPUs
    proc = subprocess.Popen(
        tiny_search(tmp_path, "scale", "--set", "scaling.resources={fake_gpu: 1}", "--set", "search.max_concurrent=2",
                    "--set", "verify.enabled=false"),  # verification is not what this tests
        cwd=tmp_path, env={**os.environ, "RAY_ADDRESS": c.address}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def watch() -> None:
        while proc.poll() is None:
            alive = workers()
            seen.update({w["NodeID"]: w["Resources"]["fake_gpu"] for w in alive})
            n = len(alive)
            if not timeline or timeline[-1][1] != n:
                timeline.append((round(time.time() - start, 1), n))
            time.sleep(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, _ = proc.communicate(timeout=600)
    watcher.join(timeout=5)
    finished = round(time.time() - start, 1)
    assert proc.returncode == 0, out[-4000:]
    trials = pd.read_parquet(tmp_path / "results" / "scale" / tables.TRIALS)
    assert (trials["status"] == "ok").all() and (trials["kind"] == "defender").sum() == 2
    deadline = time.time() + 120
    while workers() and time.time() < deadline:  # idle nodes go after IDLE_MINUTES
        time.sleep(0.5)
    timeline.append((round(time.time() - start, 1), len(workers())))
    print(f"fake workers over time (s, count): {timeline}; search done at {finished} s")
    assert timeline[0][1] == 0 and max(n for _, n in timeline) == 2  # up to the trial concurrency
    assert timeline[-1][1] == 0  # and back to none
    assert set(seen.values()) == {1.0}, seen  # the one-GPU type serves one-GPU stages
    entries = [json.loads(r.read_text()) for r in (tmp_path / "cache").glob(f"*/{'result.json'}")]
    assert entries and {e["node"] for e in entries} <= set(seen)  # every stage on a launched node
