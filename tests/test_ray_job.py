"""README.md's `ray job submit` block, read from the file and run as written against a local
head node it starts and stops: the cluster path end to end on a CPU, with `python search/run.py`
literally as the job's entrypoint (the head node's PATH decides which python that is).

Substituted, and only this: free ports for the head node and its dashboard (another Ray may hold
the defaults), and ``TAMPER_SEARCH_CONFIG`` in the head node's environment naming a tiny config
whose storage and cache are temporary."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from search import tables
from tests.readme_blocks import ROOT, of_kind, tiny_config

pytestmark = [pytest.mark.slow, pytest.mark.cluster]  # not in the default run: pytest -m cluster


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_readme_ray_job_block_runs_the_search_on_a_head_node(tmp_path):
    block = of_kind("ray-job")[0].text
    port, dash = _free_port(), _free_port()
    script = (block
              .replace("ray start --head", f"ray start --head --port={port} --dashboard-port={dash}")
              .replace("http://127.0.0.1:8265", f"http://127.0.0.1:{dash}"))
    assert script.count(str(dash)) == 2, "the README block no longer has the ports this test substitutes"
    # a PATH without the venv, as a user's shell has: the block's own `source` must fix it
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if not p.startswith(str(ROOT / ".venv")))
    env = {**os.environ, "PATH": path, "RAY_USAGE_STATS_ENABLED": "0",
           "TAMPER_SEARCH_CONFIG": str(tiny_config(tmp_path))}
    env.pop("VIRTUAL_ENV", None)
    try:
        job = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=900)
    finally:
        subprocess.run([str(ROOT / ".venv" / "bin" / "ray"), "stop", "--force"], capture_output=True, env=env, timeout=120)
    out = job.stdout + job.stderr
    assert job.returncode == 0 and "succeeded" in out, out[-4000:]
    assert "Pareto set" in job.stdout  # the job's own output, streamed back
    (exp,) = [p for p in Path(tmp_path / "results").iterdir() if p.name.startswith("quick-")]
    trials = pd.read_parquet(exp / tables.TRIALS)
    assert (trials["status"] == "ok").all() and (trials["kind"] == "defender").sum() == 2
    assert set(trials.loc[trials["kind"] == "baseline", "trial_id"]) == {"pure", "reference"}
    attacks = pd.read_parquet(exp / tables.ATTACKS)
    assert (attacks["attack.role"] == "search").sum() == 3 * len(trials)  # 2 searched + 1 re-run (TINY)
    # then the verification attacker's, against the verified front models only
    verified = set(trials.loc[trials["verified"].fillna(False).astype(bool), "trial_id"])
    assert verified and set(attacks.loc[attacks["attack.role"] == "verify", "trial_id"]) == verified
    assert len(pd.read_parquet(exp / tables.CURVES)) > 0
