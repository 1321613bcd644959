"""Retention of the stage cache (``search/retention.py``): what ``cache.keep`` deletes as a
search goes and at its end, entries remade from their recipes, ``gc`` against registered
experiments and a process using an entry, ``du``."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from search import cache, retention
from search.retention import Retention
from search.runner import Runner, rebuild, run_stage
from search.trial import pretrain_spec, method_spec
from search.verify import front
from tests.conftest import ROOT
from trainables import models


def _entry(cache_dir: Path, key: str, size: int = 1000) -> None:
    """A committed entry with a weights file, as a stage leaves it."""
    staged = cache.staging_dir(cache_dir, key)
    (staged / "model.safetensors").write_bytes(b"\0" * size)
    cache.commit(cache_dir, key, staged, {"metrics": {}})


def _row(i: int, retain: float, attacked: float, **extra) -> dict:
    return {"trial_id": f"t{i}", "kind": "defender", "status": "ok", "feasible": True, "retain_acc": retain,
            "forget_acc_attacked": attacked, "model_key": f"unlearn-{i:04d}", **extra}


def _present(cache_dir: Path) -> set[str]:
    return {e.key for e in retention.entries(cache_dir) if e.has_files}


@pytest.mark.parametrize("seed", range(6))
def test_keep_front_deletes_models_off_the_front_as_trials_finish(tmp_path, seed):
    """Fed trials in any order, the driver's retention never deletes a model on the front of
    what has finished, and at the end leaves exactly the final front's models and the baselines
    (brute force: ``verify.front`` over every row)."""
    rng = random.Random(seed)
    rows = [_row(i, rng.choice([0.5, 0.6, 0.7, 0.8, 0.9]), rng.choice([0.1, 0.2, 0.3, 0.4])) for i in range(25)]
    rows[3]["feasible"] = False  # below the retain floor: never on the front
    # two trials, one model (the same parameters, so the same scores)
    rows[5].update({k: rows[4][k] for k in ("model_key", "retain_acc", "forget_acc_attacked")})
    teacher = "unlearn-teacher"
    for r in rows[10:15]:
        r["suppressed_key"] = teacher  # the shared teacher of robustified trials: a baseline
    for k in {r["model_key"] for r in rows} | {teacher, "pretrain-ref"}:
        _entry(tmp_path, k)
    keep = Retention(tmp_path, str(tmp_path / "exp"), "front", pinned={"pretrain-ref", teacher})
    for n, row in enumerate(rows, 1):
        keep.finished(row)
        on_front = {r["model_key"] for r in front(rows[:n])}
        assert on_front <= _present(tmp_path), n
    keep.close(rows)
    want = {r["model_key"] for r in front(rows)} | {"pretrain-ref", teacher}
    assert _present(tmp_path) == want
    record = retention.records(tmp_path)[0]
    assert record["state"] == "finished" and set(record["keep"]) == want
    # every deleted model can be made again: its recipe stays (none here: written by run_stage)
    assert not retention.collectable(tmp_path)  # gc after it frees nothing more


def test_keep_all_deletes_nothing_and_gc_then_frees_what_no_front_needs(tmp_path):
    rows = [_row(0, 0.9, 0.3), _row(1, 0.8, 0.1), _row(2, 0.7, 0.2), _row(3, 0.5, 0.5)]
    for r in rows:
        _entry(tmp_path, r["model_key"])
    _entry(tmp_path, "pretrain-ref")
    keep = Retention(tmp_path, str(tmp_path / "exp"), "all", pinned={"pretrain-ref"})
    keep.start()
    for r in rows:
        keep.finished(r)
    keep.close(rows)
    assert len(_present(tmp_path)) == 5
    doomed = retention.collectable(tmp_path)
    assert {e.key for e in doomed} == {"unlearn-0002", "unlearn-0003"}
    assert retention.gc(tmp_path, say=lambda s: None) == sum(e.bytes for e in doomed) > 2000
    assert _present(tmp_path) == {"unlearn-0000", "unlearn-0001", "pretrain-ref"}


def test_gc_leaves_what_a_running_experiment_may_have_made(tmp_path):
    _entry(tmp_path, "unlearn-old")
    time.sleep(0.05)
    running = Retention(tmp_path, str(tmp_path / "other"), "front", pinned={"pretrain-pinned"})
    running.start()
    _entry(tmp_path, "unlearn-new")  # made since that experiment started
    _entry(tmp_path, "pretrain-pinned")
    try:
        assert {e.key for e in retention.collectable(tmp_path)} == {"unlearn-old"}
        # an experiment whose heartbeat stopped long ago no longer protects what it made
        later = time.time() + retention.LEASE_S + 1
        assert {e.key for e in retention.collectable(tmp_path, now=later)} == {"unlearn-old", "unlearn-new"}
    finally:
        running.stop()


def test_keep_baselines_keeps_only_the_baselines(tmp_path):
    rows = [_row(0, 0.9, 0.3), _row(1, 0.8, 0.1)]
    for r in rows:
        _entry(tmp_path, r["model_key"])
    _entry(tmp_path, "pretrain-ref")
    keep = Retention(tmp_path, str(tmp_path / "exp"), "baselines", pinned={"pretrain-ref"})
    for r in rows:
        keep.finished(r)
    assert _present(tmp_path) == {"unlearn-0000", "unlearn-0001", "pretrain-ref"}  # the front, while it runs
    keep.close(rows)
    assert _present(tmp_path) == {"pretrain-ref"}


def test_a_deleted_entry_is_made_again_from_its_recipe(tiny_cfg, tmp_path, capfd):
    """A stage whose input (and that input's input) retention deleted: both are recomputed from
    their recipes, bit for bit, and the stage runs."""
    runner = Runner(tmp_path / "cache", executor="local")
    ref = run_stage(runner, "pretrain", pretrain_spec(tiny_cfg, "reference"))
    spec = method_spec(tiny_cfg, "graddiff", {"lr": 1e-3, "steps": 3})
    released = run_stage(runner, "unlearn", spec, {"model": ref})
    weights = models.load_model(released.path).state_dict()
    assert cache.recipe(runner.cache_dir, released.key)["inputs"]["model"]["key"] == ref.key
    assert cache.release(runner.cache_dir, released.key) and cache.release(runner.cache_dir, ref.key)
    assert not cache.exists(runner.cache_dir, released.key)
    # a later stage on the ref taken before the deletion
    from search.adversary import attack_spec

    atk = run_stage(runner, "attack", attack_spec(tiny_cfg, {"lr": 1e-3, "steps": 2}, 0), {"model": released})
    assert atk.result["metrics"]
    again = models.load_model(released.path).state_dict()
    assert all(torch.equal(weights[k], again[k]) for k in weights)
    assert capfd.readouterr().err.count("deleted by retention and needed again; recomputing it") == 2
    assert rebuild(runner, released.key).cached
    with pytest.raises(LookupError, match="no recipe"):
        rebuild(runner, "unlearn-0123456789abcdef")


_USER = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from search import cache, config
from search.adversary import attack_spec
from search.runner import Runner, run_stage
from search.trial import pretrain_spec, method_spec
from tests.conftest import TINY
cfg = config.load(None, TINY)
runner = Runner({cache!r}, executor="local")
ref = run_stage(runner, "pretrain", pretrain_spec(cfg, "reference"))  # found in the cache
tmp = Path({tmp!r})
if sys.argv[1] == "hold":  # inside a stage that reads it: gc must leave it alone
    with cache.using(runner.cache_dir, [ref.key]):
        (tmp / "ready").touch()
        while not (tmp / "go").exists():
            time.sleep(0.02)
else:  # about to use it: gc deletes it under this process
    (tmp / "ready").touch()
    while not (tmp / "go").exists():
        time.sleep(0.02)
out = run_stage(runner, "unlearn", method_spec(cfg, "graddiff", {{"lr": 1e-3, "steps": 3}}), {{"model": ref}})
print(json.dumps({{"key": out.key, "metrics": out.result["metrics"], "ref_cached": ref.cached}}))
"""


@pytest.mark.parametrize("when", ["about_to_use", "hold"])
def test_gc_in_another_process_and_a_process_using_the_entry_both_finish(tiny_cfg, tmp_path, when):
    """``python -m search.cache gc`` runs while another process has taken an entry from the
    cache and is about to run a stage on it (gc deletes it; the stage makes it again) or is
    running one (gc leaves it). Both finish, and the stage's result is the one computed with
    no gc at all."""
    cache_dir = tmp_path / "cache"
    ref = run_stage(Runner(cache_dir, executor="local"), "pretrain", pretrain_spec(tiny_cfg, "reference"))
    expect = run_stage(Runner(tmp_path / "clean", executor="local"), "unlearn",
                       method_spec(tiny_cfg, "graddiff", {"lr": 1e-3, "steps": 3}),
                       {"model": run_stage(Runner(tmp_path / "clean", executor="local"), "pretrain",
                                           pretrain_spec(tiny_cfg, "reference"))})
    code = _USER.format(root=str(ROOT), cache=str(cache_dir), tmp=str(tmp_path))
    user = subprocess.Popen([sys.executable, "-c", code, "hold" if when == "hold" else "use"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (tmp_path / "ready").exists():
        assert user.poll() is None and time.time() < deadline, user.communicate()
        time.sleep(0.05)
    gc = subprocess.run([sys.executable, "-m", "search.cache", "gc", "--cache", str(cache_dir)], cwd=ROOT,
                        capture_output=True, text=True, timeout=120)
    (tmp_path / "go").touch()
    out, err = user.communicate(timeout=300)
    assert gc.returncode == 0 and user.returncode == 0, gc.stderr[-2000:] + err[-2000:]
    got = json.loads(out.strip().splitlines()[-1])
    assert got["ref_cached"] and got["key"] == expect.key and got["metrics"] == expect.result["metrics"]
    if when == "hold":
        assert f"kept {ref.key}: in use" in gc.stdout and "recomputing" not in err
    else:
        assert f"deleted {ref.key}" in gc.stdout and "deleted by retention and needed again" in err
    assert cache.exists(cache_dir, ref.key)  # there again (remade, or never gone)


def test_du_and_gc_on_the_command_line(tmp_path):
    _entry(tmp_path, "pretrain-aaaa", 3000)
    _entry(tmp_path, "unlearn-bbbb", 2000)
    staged = cache.staging_dir(tmp_path, "unlearn-dead")  # a process died while writing it
    (staged / "model.safetensors").write_bytes(b"\0" * 500)
    import os

    old = time.time() - retention.STAGING_MAX_AGE_S - 10
    os.utime(staged, (old, old))
    Retention(tmp_path, "results/exp", "front", pinned={"pretrain-aaaa"}).close([])
    du = subprocess.run([sys.executable, "-m", "search.cache", "du", "--cache", str(tmp_path)], cwd=ROOT,
                        capture_output=True, text=True, timeout=120)
    assert du.returncode == 0, du.stderr
    assert "2 entries" in du.stdout and "pretrain" in du.stdout and "results/exp (finished)" in du.stdout
    dry = subprocess.run([sys.executable, "-m", "search.cache", "gc", "--cache", str(tmp_path), "--dry-run"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "would delete unlearn-bbbb" in dry.stdout and "staging leftover" in dry.stdout
    assert _present(tmp_path) == {"pretrain-aaaa", "unlearn-bbbb"} and staged.exists()
    assert retention.gc(tmp_path, say=lambda s: None) > 2500
    assert _present(tmp_path) == {"pretrain-aaaa"} and not staged.exists()
    bad = subprocess.run([sys.executable, "-m", "search.cache", "du", "--cache", str(tmp_path / "nope")], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--cache: no such folder" in bad.stderr


def test_retention_and_gc_on_a_storage_uri(tmp_path):
    """The same on a cache at a URI (``file://`` through ``pyarrow.fs``, as ``s3://``): entries
    listed and sized, the experiment's record written and read, deletion by commit marker first."""
    uri = f"file://{tmp_path / 'bucket'}"
    for key in ("pretrain-ref", "unlearn-0000", "unlearn-0001"):
        staged = cache.staging_dir(uri, key)
        (staged / "model.safetensors").write_bytes(b"\0" * 100)
        cache.commit(uri, key, staged, {"metrics": {}}, {"stage": key.split("-")[0], "spec": {}, "inputs": {}})
    assert {e.key for e in retention.entries(uri) if e.has_files} == {"pretrain-ref", "unlearn-0000", "unlearn-0001"}
    rows = [_row(0, 0.9, 0.1), _row(1, 0.8, 0.3)]
    keep = Retention(uri, "s3://results/exp", "front", pinned={"pretrain-ref"})
    keep.start()
    for r in rows:
        keep.finished(r)
    keep.close(rows)
    assert {e.key for e in retention.entries(uri)} == {"pretrain-ref", "unlearn-0000"}
    assert not cache.exists(uri, "unlearn-0001") and cache.recipe(uri, "unlearn-0001")["stage"] == "unlearn"
    (record,) = retention.records(uri)
    assert record["exp_dir"] == "s3://results/exp" and set(record["keep"]) == {"pretrain-ref", "unlearn-0000"}
    assert retention.du(uri)["experiment"]["s3://results/exp (finished)"][0] == 2
    assert not retention.collectable(uri)
