"""The multi-worker Ray Train path: real worker processes, DDP over gloo, the output handed back
as a persisted checkpoint (what a cluster uses; local mode is covered end to end)."""

import pytest
import torch

from search.stages import Runner, run_stage
from search.trial import pretrain_spec, unlearn_spec
from trainables import models

pytestmark = pytest.mark.slow


def test_two_ddp_workers_train_and_return_a_checkpoint(tiny_cfg, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20,
             runtime_env={"env_vars": {"PYTHONPATH": str(__import__("tests.conftest").conftest.ROOT)}})
    try:
        scaling = {"num_workers": 2, "resources_per_worker": {"CPU": 1}}
        runner = Runner(tmp_path / "cache", executor="ray", scaling=scaling)
        ref = run_stage(runner, "pretrain", pretrain_spec(tiny_cfg, "pure"))
        # TAR on two ranks: inner adversaries, the L_TR gradient and the outer step through DDP
        spec = unlearn_spec(tiny_cfg, "tar", {"steps": 2, "inner_steps": 4, "subsample": 2, "adversary_batch_size": 8})
        tarred = run_stage(runner, "tar", spec, {"model": ref, "reference": ref})
    finally:
        ray.shutdown()
    assert (ref.path / "model.safetensors").exists() and ref.result["metrics"]["retain_acc"] >= 0
    local = run_stage(Runner(tmp_path / "cache2", executor="local"), "pretrain", pretrain_spec(tiny_cfg, "pure"))
    a = models.load_model(ref.path).state_dict()
    b = models.load_model(local.path).state_dict()
    # DDP averages two ranks' different batches: same shapes, different weights than one process
    assert a.keys() == b.keys() and any(not torch.equal(a[k], b[k]) for k in a)
    t = models.load_model(tarred.path).state_dict()
    assert all(torch.isfinite(v).all() for v in t.values()) and any(not torch.equal(t[k], a[k]) for k in t)
    assert [s for s, k, _ in tarred.result["curve"] if k == "tr_loss"] == [1, 2]
