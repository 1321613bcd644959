"""`ray job submit` against a local head node that this test starts and stops: the README's
cluster path, end to end on a CPU."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from search import tables
from tests.conftest import ROOT, TINY

pytestmark = pytest.mark.slow
RAY = str(Path(sys.executable).parent / "ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_job_submit_runs_a_search_on_a_head_node(tmp_path):
    # Ray 2.60 turns token authentication on for `ray start`; the job client then needs
    # RAY_AUTH_MODE=token to present the token the head wrote (~/.ray/auth_token).
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}
    port, dash = _free_port(), _free_port()
    start = subprocess.run(
        [RAY, "start", "--head", f"--port={port}", f"--dashboard-port={dash}", "--num-cpus=2",
         "--include-dashboard=true", "--disable-usage-stats", "--object-store-memory=200000000"],
        capture_output=True, text=True, env=env, timeout=120)
    assert start.returncode == 0, start.stdout[-2000:] + start.stderr[-2000:]
    try:
        sets = [a for o in TINY for a in ("--set", o)]
        job = subprocess.run(
            [RAY, "job", "submit", "--address", f"http://127.0.0.1:{dash}", "--working-dir", str(ROOT),
             "--runtime-env", str(ROOT / "cluster" / "runtime_env.yaml"), "--",
             sys.executable, "search/run.py", "--storage", str(tmp_path / "results"), "--name", "job",
             *sets, "--set", f"cache_dir={tmp_path / 'cache'}"],
            capture_output=True, text=True, env=env, timeout=600)
        assert job.returncode == 0 and "succeeded" in job.stdout + job.stderr, job.stdout[-3000:] + job.stderr[-3000:]
        assert "Pareto set" in job.stdout  # the job's own output, streamed back
        trials = pd.read_parquet(tmp_path / "results" / "job" / tables.TRIALS)
        assert (trials["status"] == "ok").all() and (trials["kind"] == "defender").sum() == 2
        assert set(trials.loc[trials["kind"] == "baseline", "trial_id"]) == {"pure", "reference"}
        assert len(pd.read_parquet(tmp_path / "results" / "job" / tables.ATTACKS)) == 2 * len(trials)
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, env=env, timeout=120)
