"""Resident attack workers: the attacks of one adversary search run on copies of the released
model that stay loaded (``trainables.resident.ResidentModel``), one per concurrent attack.

* In-process stages (``scaling.num_workers: 0``, or the local executor): the copies live in the
  trial's (or task's) own process, on its device.
* One Ray Train worker per stage (``num_workers: 1``): each copy lives in a Ray actor holding
  what a stage worker would hold (``scaling.resources_per_worker``: CPUs, GPU share, custom
  resources), started once per search instead of a worker group per attack. An actor that dies
  is restarted by Ray (it loads the model again) and the attack it was running is re-run there;
  the caller records an attack only when its result comes back, so nothing is counted twice.

Worker groups of two or more (DDP / FSDP attacks) still start per attack through Ray Train.
The copies go away when the search ends (``AttackPool.close``).
"""

from __future__ import annotations

import os
import queue
import tempfile
import threading
from pathlib import Path

from search import cache
from trainables.families import FAMILIES
from trainables.resident import ResidentModel
from trainables.stages import STAGES

ATTACK_STAGES = {m.STAGE for m in FAMILIES.values()}  # every attack family's stage


def run_on(resident: ResidentModel, stage: str, spec: dict) -> dict:
    """Run one attack stage (any family's ``stage``) on a resident model; it is restored after."""
    with resident.lent(spec.get("load", {})) as model, tempfile.TemporaryDirectory() as tmp:
        # an attack stage writes nothing; its contract gives it a folder
        return STAGES[stage](spec, {"model": resident.path}, Path(tmp), model=model)


class _ActorBody(ResidentModel):
    """What a resident Ray actor runs: the model materialised on the actor's node, torch using
    the CPUs the actor holds."""

    def __init__(self, path: str, load_options: dict, threads: int):
        import torch

        torch.set_num_threads(max(1, threads))
        super().__init__(cache.materialize(path), load_options)
        self.started = 0  # attacks begun by this process (a restarted actor counts afresh)

    def run_attack(self, spec: dict, stage: str = "attack") -> dict:
        self.started += 1
        return run_on(self, stage, spec)

    def status(self) -> dict:
        """This process's pid and attacks begun: answered while an attack runs (two threads)."""
        return {"pid": os.getpid(), "started": self.started}


class AttackPool:
    """Up to ``size`` resident copies of the released model at ``path``, made on first use;
    ``execute`` runs one attack on a free copy (the signature ``search.runner.run_stage`` takes).

    ``scaling``: the Runner's Ray Train arguments; ``num_workers`` 1 puts the copies in Ray
    actors with its ``resources_per_worker``, 0 keeps them in this process."""

    def __init__(self, path: str, size: int, scaling: dict | None = None, max_failures: int = 0):
        self.path, self.size = path, size
        self.remote = bool(scaling and scaling.get("num_workers", 0) == 1)
        self.resources = dict((scaling or {}).get("resources_per_worker", {"CPU": 1}))
        self.retries = max(1, max_failures)  # a lost worker is replaced at least once
        self.free: queue.Queue = queue.Queue()
        self.made: list = []
        self.lock = threading.Lock()

    def _make(self, load_options: dict):
        if not self.remote:
            return ResidentModel(str(cache.materialize(self.path)), load_options)
        import ray

        r = dict(self.resources)
        cpus, gpus = r.pop("CPU", 1), r.pop("GPU", 0)
        actor = ray.remote(_ActorBody).options(
            num_cpus=cpus, num_gpus=gpus, resources=r or None,
            max_restarts=self.retries, max_task_retries=self.retries,
            max_concurrency=2,  # an attack, and ``status`` beside it; the pool sends one attack at a time
            # Not inside the calling trial's placement group (Tune captures child tasks into it):
            # the actor holds a stage worker's resources, as a Ray Train worker group would.
            scheduling_strategy="DEFAULT",
        )
        return actor.remote(self.path, load_options, int(cpus))

    def _take(self, load_options: dict):
        with self.lock:
            if self.free.empty() and len(self.made) < self.size:
                slot = self._make(load_options)
                self.made.append(slot)
                return slot
        return self.free.get()

    def execute(self, stage: str, spec: dict, inputs: dict[str, str], staged: Path) -> dict:
        """Run attack ``spec`` (of any family's ``stage``) on a resident copy; ``inputs['model']``
        must be this pool's model."""
        if stage not in ATTACK_STAGES or inputs.get("model") != self.path:
            raise ValueError(f"resident pool of {self.path}: cannot run {stage} on {inputs}")
        slot = self._take(spec["load"])
        try:
            if not self.remote:
                return run_on(slot, stage, spec)
            import ray

            try:
                return ray.get(slot.run_attack.remote(spec, stage))
            except ray.exceptions.RayTaskError as e:
                raise e.as_instanceof_cause() from None
        finally:
            self.free.put(slot)

    def close(self) -> None:
        """Drop every copy (the actors end)."""
        if self.remote:
            import ray

            for actor in self.made:
                ray.kill(actor, no_restart=True)
        self.made.clear()


def pool_for(runner, path: str, size: int) -> AttackPool | None:
    """The resident pool an adversary search on the model at ``path`` uses, or None where its
    attacks start a worker group each (``runner.resident`` off, or 2+ workers per stage)."""
    if not getattr(runner, "resident", False):
        return None
    workers = runner.scaling.get("num_workers", 0) if runner.executor == "ray" else 0
    if workers > 1:
        return None
    return AttackPool(path, size, runner.scaling if runner.executor == "ray" else None, runner.max_failures)
