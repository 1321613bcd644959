"""On a CUDA GPU, skipped without one (``bench/gpu_check.sh`` runs them: ``pytest -m gpu``).

Every stage runs on the device; float32 training there follows the CPU's loss curve; a bf16
stage sharded by FSDP on a one-rank NCCL group trains, saves a full bf16 checkpoint and is
attacked; a whole defender trial (unlearn → adversary search → re-runs) runs in-process."""

from __future__ import annotations

import math
import socket

import pytest
import torch

from search import config
from search.adversary import attack_spec, family_spec
from spaces.attacks import PRIORS as FAMILY_PRIORS
from search.runner import Runner, run_stage
from search.trial import Context, defender, common_spec, pretrained, pretrain_spec, method_spec
from tests.conftest import TINY
from trainables import loop, models
from search.attack_families import needs_context
from trainables.families import FAMILIES
from trainables.stages import STAGES
from trainables.methods import METHODS

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _cfg(tmp_path, *extra: str):
    return config.load(None, [*TINY, f"cache_dir={tmp_path / 'cache'}", f"storage={tmp_path / 'results'}", *extra])


def _losses(ref) -> list[float]:
    return [v for _, k, v in ref.result["curve"] if k == "loss"]


def _ran_on_gpu(fn):
    """Run ``fn``; assert it allocated CUDA memory (its tensors lived on the device)."""
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.max_memory_allocated()
    out = fn()
    assert torch.cuda.max_memory_allocated() > before
    return out


def test_float32_training_on_the_gpu_follows_the_cpu(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path)
    spec = pretrain_spec(cfg, "reference")
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")  # no TF32: float32 products, as on the CPU
    try:
        gpu = _ran_on_gpu(lambda: run_stage(Runner(tmp_path / "gpu", "local"), "pretrain", spec))
    finally:
        torch.set_float32_matmul_precision(precision)
    with monkeypatch.context() as m:
        m.setattr(torch.cuda, "is_available", lambda: False)  # loop.device() → the CPU
        cpu = run_stage(Runner(tmp_path / "cpu", "local"), "pretrain", spec)
    worst = max(abs(g - c) / abs(c) for g, c in zip(_losses(gpu), _losses(cpu)))
    print(f"float32 GPU vs CPU pre-training: largest relative loss difference {worst:.2e}")
    # CPU and GPU kernels reduce in different orders, so the curves agree to float32 rounding
    # grown over 40 Adam steps, not bit for bit
    assert worst < 1e-2


def test_every_stage_runs_on_the_gpu(tmp_path):
    cfg = _cfg(tmp_path, "defender.params.steps=3", "defender.undo.params.beta=0.1",
               "defender.undo.params.steps=5", "defender.undo.loop.eval_every=5")
    runner = Runner(tmp_path / "cache", "local")
    ref = _ran_on_gpu(lambda: run_stage(runner, "pretrain", pretrain_spec(cfg, "reference")))
    released = {}
    for method in METHODS:
        spec = method_spec(cfg, method, {"steps": 3})
        released[method] = _ran_on_gpu(lambda: run_stage(runner, "unlearn", spec, {"model": ref}))
        assert all(math.isfinite(v) for v in released[method].result["metrics"].values()), method
    tar_spec = method_spec(cfg, "tar", {"steps": 2, "inner_steps": 2, "subsample": 2, "adversary_batch_size": 8})
    tar = _ran_on_gpu(lambda: run_stage(runner, "tar", tar_spec, {"model": released["random_mapping"], "reference": ref}))
    student = _ran_on_gpu(lambda: run_stage(runner, "distill", cfg.defender.undo.spec(common_spec(cfg), {"alpha": 0.5}),
                                             {"teacher": released["graddiff"]}))
    for model, point in ((tar, {"lr": 1e-3, "steps": 5}), (student, {"kind": "lora", "lora_r": 4, "lr": 1e-2, "steps": 5})):
        atk = _ran_on_gpu(lambda: run_stage(runner, "attack", attack_spec(cfg, point, 0), {"model": model}))
        assert 0.0 <= atk.result["metrics"]["forget_acc_max"] <= 1.0 and _losses(atk)


def test_bf16_fsdp_stages_on_one_nccl_rank(tmp_path, monkeypatch):
    import torch.distributed as dist

    cfg = _cfg(tmp_path, "model.arch=llama", "model.dtype=bfloat16", "model.d_model=256", "model.n_layer=4",
               "model.n_head=4", "pretrain.reference.lr=3e-3")
    shards = []
    real = loop.shard
    monkeypatch.setattr(loop, "shard", lambda m: shards.append(type(m).__name__) or real(m))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    dist.init_process_group("nccl", rank=0, world_size=1, device_id=torch.device("cuda", 0))
    loop.set_strategy("fsdp")
    try:
        runner = Runner(tmp_path / "cache", "local")
        ref = run_stage(runner, "pretrain", pretrain_spec(cfg, "reference"))
        atk = run_stage(runner, "attack", attack_spec(cfg, {"lr": 1e-4, "steps": 10}, 0), {"model": ref})
    finally:
        loop.set_strategy("ddp")
        dist.destroy_process_group()
    assert shards == ["LlamaForCausalLM", "LlamaForCausalLM"]  # both stages trained FSDP-sharded
    saved = models.load_model(ref.path)
    assert {p.dtype for p in saved.parameters()} == {torch.bfloat16} and not loop.sharded(saved)
    losses = _losses(ref)
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert 0.0 <= atk.result["metrics"]["forget_acc_max"] <= 1.0


def test_a_defender_trial_end_to_end_on_the_gpu(tmp_path):
    cfg = _cfg(tmp_path)
    ctx = Context(cfg, "exp", str(tmp_path / "exp"), Runner(tmp_path / "cache", "local"))
    row = _ran_on_gpu(lambda: defender(ctx, "t1", {"lr": 1e-3, "steps": 5, "lam": 1.0}, pretrained(ctx, "reference")))
    assert row["status"] == "ok" and row["attacks_run"] == cfg.attack.budget + cfg.attack.reseeds
    assert 0.0 <= row["forget_acc_attacked"] <= 1.0


@pytest.mark.parametrize("family", sorted(f for f in FAMILIES if f != "finetune"))
def test_every_attack_family_runs_on_the_gpu_and_scores_as_on_the_cpu(tmp_path, family, monkeypatch):
    """One row per attack family in bench/gpu_check.sh: its informed points on the device,
    their scores within 0.05 of the same points on the CPU (float reductions differ)."""
    cfg = _cfg(tmp_path, *(["model.arch=llama"] if needs_context(family) else []))  # GPT-2's positions are full
    runner = Runner(tmp_path / "cache", "local")
    ref = run_stage(runner, "pretrain", pretrain_spec(cfg, "reference"))
    for i, point in enumerate(FAMILY_PRIORS[family]):
        point = {**point, **{k: 5 for k in point if k == f"{family}_steps"}, "family": family}
        stage, spec = family_spec(cfg, point, 0)
        gpu = _ran_on_gpu(lambda: STAGES[stage](spec, {"model": str(ref.path)}, tmp_path))
        monkeypatch.setattr(loop, "device", lambda: torch.device("cpu"))
        cpu = STAGES[stage](spec, {"model": str(ref.path)}, tmp_path)
        monkeypatch.undo()
        for key in ("forget_acc_sel_max", "forget_acc_rep_at_best", "retain_acc_final"):
            assert abs(gpu["metrics"][key] - cpu["metrics"][key]) <= 0.05, (family, i, key)
