"""FSDP (``scaling.strategy: fsdp``): stages on two gloo ranks with sharded parameters give the
same model as DDP on the same two ranks (same batches, same averaged gradients), for a full
fine-tune, RMU's parameter subset and a LoRA attack; and the strategy reaches Ray Train's
workers from the runner."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch

from search.adversary import attack_spec
from search.runner import Runner, run_stage
from search.trial import pretrain_spec, method_spec
from trainables import models
from trainables.stages import STAGES

pytestmark = pytest.mark.slow


def _rank(rank: int, world: int, port: int, jobs: list[tuple]) -> None:
    import torch.distributed as dist

    from trainables import loop

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for strategy, stage, spec, inputs, out in jobs:  # in order: a later job may read an earlier one's output
            loop.set_strategy(strategy)
            STAGES[stage](spec, inputs, Path(out))
            dist.barrier()
    finally:
        dist.destroy_process_group()


def _two_ranks(jobs: list[tuple]) -> list[dict[str, torch.Tensor]]:
    """Run ``jobs`` — (strategy, stage, spec, inputs, output folder) — one after another on one
    two-rank gloo group (one spawn: each costs two interpreters importing torch); each job's
    saved model's state dict."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for *_, out in jobs:
        Path(out).mkdir(parents=True, exist_ok=True)
    jobs = [(strategy, stage, spec, inputs, str(out)) for strategy, stage, spec, inputs, out in jobs]
    torch.multiprocessing.spawn(_rank, args=(2, port, jobs), nprocs=2)
    return [models.load_model(out).state_dict() if (Path(out) / "config.json").exists() else {} for *_, out in jobs]


def test_fsdp_matches_ddp_for_full_subset_and_stage_outputs(tiny_cfg, tmp_path):
    cfg = tiny_cfg.model_copy(update={"model": tiny_cfg.model.model_copy(update={"arch": "llama"})})
    spec = pretrain_spec(cfg, "pure")
    spec = spec.model_copy(update={"loop": spec.loop.model_copy(update={"steps": 6})})
    rmu = method_spec(cfg, "rmu", {"steps": 3, "layer": 0}, fixed={})
    ddp, fsdp, a, b = _two_ranks([
        ("ddp", "pretrain", spec, {}, tmp_path / "ddp"),
        ("fsdp", "pretrain", spec, {}, tmp_path / "fsdp"),
        ("ddp", "unlearn", rmu, {"model": str(tmp_path / "ddp")}, tmp_path / "rmu-ddp"),
        ("fsdp", "unlearn", rmu, {"model": str(tmp_path / "ddp")}, tmp_path / "rmu-fsdp"),
    ])
    assert ddp.keys() == fsdp.keys()
    for k in ddp:
        torch.testing.assert_close(fsdp[k], ddp[k], rtol=1e-4, atol=1e-5)
    changed = [k for k in a if not torch.equal(a[k], ddp[k])]
    assert changed and all("down_proj" in k for k in changed)  # only RMU's subset trained
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5)


@pytest.mark.cluster  # Ray Train worker groups: not in the default run (pytest -m cluster)
def test_fsdp_lora_attack_and_the_strategy_through_ray_train(tiny_cfg, tmp_path):
    ray = pytest.importorskip("ray")
    spec = attack_spec(tiny_cfg, {"kind": "lora", "lora_r": 2, "lr": 1e-2, "steps": 4, "batch_size": 8}, 0)
    pure = pretrain_spec(tiny_cfg, "pure")
    pure = pure.model_copy(update={"loop": pure.loop.model_copy(update={"steps": 5})})
    base = run_stage(Runner(tmp_path / "cache", "local"), "pretrain", pure)
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20,
             runtime_env={"env_vars": {"PYTHONPATH": str(__import__("tests.conftest").conftest.ROOT)}})
    try:
        runs = {}
        for strategy in ("ddp", "fsdp"):
            runner = Runner(tmp_path / f"cache-{strategy}", "ray", {"num_workers": 2, "resources_per_worker": {"CPU": 1}},
                            strategy=strategy)
            runs[strategy] = run_stage(runner, "attack", spec, {"model": base})
    finally:
        ray.shutdown()
    ddp, fsdp = (runs[s].result for s in ("ddp", "fsdp"))
    assert ddp["metrics"] == pytest.approx(fsdp["metrics"], abs=1e-6)
    losses = lambda r: [v for _, k, v in r["curve"] if k == "loss"]  # noqa: E731
    assert losses(fsdp) == pytest.approx(losses(ddp), rel=1e-4)
