"""Resident attack workers (search/runner.py, trainables/resident.py): a released model loaded
once, restored bit for bit after every attack, the same results as a fresh load per attack,
and a worker killed mid-search replaced with nothing lost or counted twice."""

import os
import signal
import threading
import time

import pytest
import torch

from search import adversary, config, runner as stage_runner, trial
from search.adversary import adversary_search
from search.runner import Runner
from tests.conftest import ROOT, TINY
from trainables import models
from trainables.resident import ResidentModel

ATTACK = {"kind": "full", "optimizer": "adamw", "data": "forget", "schedule": "constant", "n_examples": None,
          "lr": 1e-2, "steps": 20, "batch_size": 32}


def _cfg(tmp_path, **attack):
    cfg = config.load(None, [*TINY, f"cache_dir={tmp_path / 'cache'}"])
    return cfg.model_copy(update={"attack": config.AttackConfig(**{"families": ["finetune"],
        "budget": 3, "prior": 0, "archive": 0, "reseeds": 1, "loop": {"eval_every": 10}, "params": {},
        "space": {"lr": [1e-3, 3e-2], "steps": [10, 30]}, **attack})})


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_restored_weights_equal_the_released_model_bit_for_bit(tmp_path):
    from search.adversary import attack_spec

    cfg = _cfg(tmp_path)
    ctx = trial.Context(cfg, "e", str(tmp_path / "e"), Runner(tmp_path / "cache", "local"))
    reference = trial.pretrained(ctx, "reference")
    released = _state(models.load(reference.path, cfg.model.load_options()))
    worker = ResidentModel(str(reference.path), cfg.model.load_options())
    for params in (ATTACK, {**ATTACK, "kind": "lora", "lora_r": 4, "lora_alpha": 8.0, "lora_dropout": 0.0,
                            "lora_targets": "all"}):
        spec = attack_spec(cfg, params, seed=3).model_dump(mode="json")
        result = stage_runner.run_on(worker, "attack", spec)
        assert result["metrics"]["forget_acc_sel_max"] >= 0  # it ran
        now = _state(worker.model)
        assert now.keys() == released.keys()  # no adapter left behind
        assert all(torch.equal(now[k], released[k]) for k in released)
        assert all(p.requires_grad and p.grad is None for p in worker.model.parameters()) and not worker.model.training


def _table(outcome) -> list[tuple]:
    keep = ("attack_id", "status", "forget_acc_sel_max", "forget_acc_rep_at_best", "best_step", "flops",
            "forget_acc_final", "retain_acc_final")
    return sorted(tuple(r.get(k) for k in keep) for r in outcome.attacks)


def test_resident_attacks_give_the_tables_of_a_load_per_attack(tmp_path):
    cfg = _cfg(tmp_path, params={"kind": "lora"}, space={"lr": [1e-3, 3e-2], "steps": [10, 30]})
    ctx = trial.Context(cfg, "e", str(tmp_path / "e"), Runner(tmp_path / "cache", "local"))
    reference = trial.pretrained(ctx, "reference")
    got = {}
    for resident_on in (True, False):  # separate caches: neither reuses the other's attacks
        runner = Runner(tmp_path / f"cache-{resident_on}", "local", resident=resident_on)
        got[resident_on] = adversary_search(runner, cfg, reference, "t0", "e", seed=5)
    assert len(got[True].attacks) == 4  # 3 searched + 1 re-run
    assert _table(got[True]) == _table(got[False])
    assert sorted(got[True].curves, key=str) == sorted(got[False].curves, key=str)


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=128 * 2**20,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    yield ray
    ray.shutdown()


def test_a_resident_worker_killed_mid_search_is_replaced_and_nothing_is_lost_or_counted_twice(tmp_path, local_ray,
                                                                                             monkeypatch):
    cfg = _cfg(tmp_path, reseeds=0, space={"lr": [1e-3, 3e-2], "steps": [150, 200]})
    ctx = trial.Context(cfg, "e", str(tmp_path / "e"), Runner(tmp_path / "cache", "local"))
    reference = trial.pretrained(ctx, "reference")
    pools = []
    real = stage_runner.pool_for  # the adversary search asks for its pool by this name
    monkeypatch.setattr(adversary, "pool_for", lambda *a: pools.append(real(*a)) or pools[-1])
    killed = {}

    def kill_during_the_second_attack() -> None:
        deadline = time.time() + 240
        while time.time() < deadline and not killed:
            if pools and pools[0].made:
                try:
                    status = local_ray.get(pools[0].made[0].status.remote(), timeout=5)
                except Exception:
                    status = {}
                if status.get("started") == 2:
                    os.kill(status["pid"], signal.SIGKILL)
                    killed.update(status)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_during_the_second_attack, daemon=True)
    killer.start()
    runner = Runner(tmp_path / "cache-ray", "ray", scaling={"num_workers": 1, "resources_per_worker": {"CPU": 1}})
    outcome = adversary_search(runner, cfg, reference, "t0", "e", seed=5)
    killer.join(timeout=1)
    assert killed, "the worker was never seen running its second attack"
    assert pools[0].remote and not pools[0].made  # the search's workers are gone
    ids = [r["attack_id"] for r in outcome.attacks]
    assert len(ids) == len(set(ids)) == 3 and all(r["status"] == "ok" for r in outcome.attacks)
    # the re-run attack gives what the same search gives in-process, where nothing was killed
    same = adversary_search(Runner(tmp_path / "cache-local", "local"), cfg, reference, "t0", "e", seed=5)
    assert _table(outcome) == _table(same)


def test_resident_workers_leave_the_trials_placement_group(tmp_path, local_ray):
    """A Tune trial's tasks are captured into its placement group (a quarter CPU): the resident
    worker must hold a stage worker's own resources instead."""
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from search.adversary import attack_spec

    cfg = _cfg(tmp_path)
    ctx = trial.Context(cfg, "e", str(tmp_path / "e"), Runner(tmp_path / "cache", "local"))
    path = str(trial.pretrained(ctx, "reference").path)
    spec = attack_spec(cfg, {**ATTACK, "steps": 5}, seed=1).model_dump(mode="json")

    @local_ray.remote(num_cpus=0.25)
    def like_a_trial() -> dict:
        pool = stage_runner.AttackPool(path, 1, {"num_workers": 1, "resources_per_worker": {"CPU": 1}})
        try:
            return pool.execute("attack", spec, {"model": path}, tmp_path)
        finally:
            pool.close()

    pg = placement_group([{"CPU": 0.25}])
    local_ray.get(pg.ready())
    try:
        strategy = PlacementGroupSchedulingStrategy(pg, placement_group_capture_child_tasks=True)
        result = local_ray.get(like_a_trial.options(scheduling_strategy=strategy).remote(), timeout=180)
    finally:
        remove_placement_group(pg)
    assert result["steps"] == 5


def test_the_same_search_under_another_trial_id_runs_the_same_attacks(tmp_path):
    """Tune's trial ids are random: every attack's spec (its seed; the re-runs' too) must come
    from the config and the model, not from the id. One cache: the second search finds every
    one of its attacks there and runs none."""
    cfg = _cfg(tmp_path)
    runner = Runner(tmp_path / "cache", "local")
    reference = trial.pretrained(trial.Context(cfg, "e", str(tmp_path / "e"), runner), "reference")
    first = adversary_search(runner, cfg, reference, "aaaa_00000", "e")
    entries = set((tmp_path / "cache").iterdir())
    second = adversary_search(runner, cfg, reference, "bbbb_00001", "e")
    assert any(r["attack_id"].endswith("-r1") for r in first.attacks)
    assert set((tmp_path / "cache").iterdir()) == entries  # nothing new ran
    assert len(second.attacks) == len(first.attacks) and first.attacked == second.attacked
