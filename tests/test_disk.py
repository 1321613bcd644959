"""A full disk (``search/disk.py``): found behind Ray's and Tune's wrappers, raised by a stage
whose commit hits ENOSPC with nothing half-written, no failed row for the trial it stopped, and
that trial run again on ``--resume``."""

from __future__ import annotations

import errno
import json

import pytest

from search import cache, tables
from search.disk import StorageFull, storage_full
from search.runner import Runner, run_stage
from search.trial import Context, defender, pretrained, pretrain_spec


def test_storage_full_is_found_behind_the_wrappers():
    assert storage_full(ValueError("loss is inf")) is None and storage_full(None) is None
    enospc = OSError(errno.ENOSPC, "No space left on device", "/cache/x/model.safetensors")
    assert storage_full(enospc).filename == "/cache/x/model.safetensors"
    assert storage_full(enospc, "/cache/x").filename == "/cache/x"

    class TaskError(Exception):  # a Ray task error: the remote exception as .cause
        def __init__(self, cause):
            super().__init__("ray::train()")
            self.cause = cause

    assert storage_full(TaskError(StorageFull("/a/b"))).filename == "/a/b"
    try:  # a Tune error raised while handling a callback's StorageFull: found as its context
        try:
            raise StorageFull("/t/trials.parquet/L0-1-1.parquet")
        except StorageFull:
            raise RuntimeError("Traceback ... TuneError")
    except RuntimeError as e:
        assert storage_full(e).filename == "/t/trials.parquet/L0-1-1.parquet"
    rust = RuntimeError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })')
    assert storage_full(rust, "/cache/k").filename == "/cache/k"
    import pickle

    assert pickle.loads(pickle.dumps(StorageFull("/p"))).filename == "/p"  # across Ray processes


def test_a_stage_commit_on_a_full_disk_leaves_nothing_and_the_trial_no_row(tiny_cfg, tmp_path, monkeypatch):
    ctx = Context(tiny_cfg, "exp", str(tmp_path / "exp"), Runner(tmp_path / "cache", "local"))
    reference = pretrained(ctx, "reference")
    real = cache.commit

    def full(cache_dir, key, staged, result, recipe=None):
        if key.startswith("unlearn-"):
            (staged / cache.RESULT_FILE).write_text('{"half')
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(cache_dir, key, staged, result, recipe)

    monkeypatch.setattr(cache, "commit", full)
    with pytest.raises(StorageFull) as stopped:
        defender(ctx, "t1", {"lr": 1e-3, "steps": 3, "lam": 1.0}, reference)
    assert stopped.value.filename.startswith(str(tmp_path / "cache" / "unlearn-"))
    assert not [d for d in (tmp_path / "cache").iterdir() if d.name.startswith("unlearn-")]
    assert not [d for d in (tmp_path / "cache" / ".staging").iterdir() if d.name.startswith("unlearn-")]
    assert tables.read_part(ctx.exp_dir, "t1") == {}  # no failed row: --resume runs it again
    monkeypatch.setattr(cache, "commit", real)
    row = defender(ctx, "t1", {"lr": 1e-3, "steps": 3, "lam": 1.0}, reference)
    assert row["status"] == "ok" and run_stage(ctx.runner, "pretrain", pretrain_spec(tiny_cfg, "reference")).cached


def test_resume_runs_again_the_errored_trials_a_full_disk_left_without_a_row(tmp_path):
    from search.driver import errored_without_row

    exp = tmp_path / "exp"
    (exp / "tune").mkdir(parents=True)
    trials = [("a", "TERMINATED"), ("b", "ERROR"), ("c", "ERROR"), ("d", "PENDING")]
    state = {"trial_data": [[json.dumps({"trial_id": t, "status": s}), json.dumps({})] for t, s in trials]}
    (exp / "tune" / "experiment_state-2026-12-07_00-00-00.json").write_text(json.dumps(state))
    tables.write_part(str(exp), "a", {"trials": [{"trial_id": "a"}]})
    tables.write_part(str(exp), "c", {"trials": [{"trial_id": "c", "status": "error"}]})  # a failure of its own
    assert errored_without_row(str(exp / "tune"), str(exp)) == ["b"]
