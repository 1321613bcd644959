"""Run a stage: from the cache if its key exists, else in-process, inside a Ray Train
``TorchTrainer`` (one in-process local-mode worker on a laptop, DDP workers on a cluster), or —
for an attack — on a resident copy of its model (the end of this file).

Every executor runs the same stage function from ``trainables.stages``; the Ray Train one hands
the output back as a Ray Train checkpoint, so it also works when the workers sit on another node.
"""

from __future__ import annotations

import os
import queue
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

from pydantic import Field, model_validator

from search import cache
from search.disk import storage_full
from trainables.families import FAMILIES
from trainables.loop import world
from trainables.resident import ResidentModel
from trainables.stages import SPECS, STAGES
from trainables.strict import Strict



class ScalingConfig(Strict):
    """Ray Train scaling of every stage: ``num_workers: 0`` runs in-process (local mode); N
    workers train with DDP (gloo on CPUs, NCCL on GPUs), each with ``gpus_per_worker`` GPUs when
    ``use_gpu``. ``max_failures``: restarts of a stage's worker group after a worker is lost.

    ``num_workers: 0`` with ``use_gpu``: every stage runs in the process of its trial (or of the
    pre-training, baseline or verification task), on the one GPU that process holds:
    ``gpus_per_worker`` of it, a fraction letting small models share a GPU. No worker group
    starts, so a stage's fixed cost is the model load, not a group start (tens of seconds).

    With GPUs the driver runs as many trials at once as the cluster's GPUs hold (each trial
    runs ``attack.concurrency`` stages at once), so trials never wait on each other's placement
    groups; ``cluster_gpus`` gives that count for an autoscaling cluster that starts with none.

    ``resources``: custom Ray resources every stage-running process holds besides its CPUs and
    GPUs (the Train workers; with ``num_workers: 0`` the trial and the pre-training and baseline
    tasks, which run their stages in-process), e.g. ``{accelerator_type:A100: 0.01}`` or a
    resource only some node types declare, to pin stages to those nodes."""

    num_workers: int = Field(0, ge=0)
    # ddp: a full replica per worker; fsdp: parameters, gradients and optimizer state sharded
    # over the workers (a model too large for one GPU); not for TAR
    strategy: Literal["ddp", "fsdp"] = "ddp"
    use_gpu: bool = False
    gpus_per_worker: float = Field(1.0, gt=0)
    cpus_per_worker: float = Field(1.0, gt=0)
    max_failures: int = Field(0, ge=0)
    cluster_gpus: int | None = Field(None, ge=1)
    resources: dict[str, float] = Field(default_factory=dict)
    # the attacks of one adversary search run on copies of their model that stay loaded, in the
    # trial's process (num_workers 0) or in Ray actors (1); false: a load (and with workers, a
    # worker-group start) per attack
    resident_attacks: bool = True
    # memory of one GPU of the cluster's type: --plan checks every stage against it and
    # --require-fit refuses a config with a stage that does not fit
    gpu_memory_gib: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _gpu(self) -> "ScalingConfig":
        if self.use_gpu and self.num_workers == 0 and self.gpus_per_worker > 1:
            raise ValueError(f"gpus_per_worker: in-process stages (num_workers: 0) run on one GPU: at most 1 "
                             f"(a fraction shares it), got {self.gpus_per_worker:g}; use num_workers >= 1 for more")
        if self.strategy == "fsdp" and self.num_workers == 0:
            raise ValueError("strategy: fsdp shards a model over Ray Train workers: needs num_workers >= 1")
        for name, amount in self.resources.items():
            if name in ("CPU", "GPU", "memory", "object_store_memory"):
                raise ValueError(f"resources.{name}: set through cpus_per_worker / gpus_per_worker, not resources")
            if not amount > 0:
                raise ValueError(f"resources.{name}: must be > 0, got {amount}")
        return self

    def resources_per_worker(self) -> dict[str, float]:
        """What one stage-running process holds: CPUs, GPUs if used, and the custom resources."""
        return {"CPU": self.cpus_per_worker, **({"GPU": self.gpus_per_worker} if self.use_gpu else {}), **self.resources}

    def in_process(self) -> bool:
        """Stages run in the calling process (trial or task), not in Ray Train workers."""
        return self.num_workers == 0

    def trial_gpus(self, concurrency: int) -> float:
        """GPUs one defender trial holds or makes its stages hold, ``concurrency`` attacks at
        once: in-process, the trial's own share (its attacks run in threads beside each other
        on it); else every concurrent stage's worker group."""
        if not self.use_gpu:
            return 0.0
        return self.gpus_per_worker if self.in_process() else self.num_workers * self.gpus_per_worker * concurrency

    def task_options(self) -> dict:
        """Ray options of a process that runs stages in-process (the trials and the pre-training,
        baseline and verification tasks with ``num_workers: 0``); {} when Train workers hold the
        resources."""
        if not self.in_process():
            return {}
        out: dict = {"num_gpus": self.gpus_per_worker} if self.use_gpu else {}
        if self.resources:
            out["resources"] = dict(self.resources)
        return out

    def train_scaling(self) -> dict:
        """``ray.train.ScalingConfig`` arguments of a stage. In-process, the stage uses the GPU its
        caller holds (Ray made it the process's only visible one), so Ray Train asks for none."""
        if self.in_process():
            return {"num_workers": 0, "use_gpu": False}
        return {"num_workers": self.num_workers, "use_gpu": self.use_gpu,
                "resources_per_worker": self.resources_per_worker()}


@dataclass(frozen=True)
class StageRef:
    """A committed stage output: its key, its folder and its result."""

    key: str
    path: Path | str  # a cache folder, or a hub id / path for a model loaded, not trained
    result: dict
    cached: bool = False


@dataclass(frozen=True)
class Runner:
    """Where and how stages run."""

    cache_dir: Path | str  # a local folder or a storage URI (s3://, gs://)
    executor: Literal["ray", "local"] = "ray"
    scaling: dict = field(default_factory=lambda: {"num_workers": 0})
    max_failures: int = 0
    strategy: Literal["ddp", "fsdp"] = "ddp"  # how the workers of one stage share the model
    resident: bool = True  # attacks run on resident copies of their model (the end of this file)


def canonical(stage: str, spec: Strict | dict) -> dict:
    """``spec`` checked against the stage's ``Spec`` and dumped as JSON, every field present:
    the same work gives the same dump however the spec was built."""
    if type(spec) is SPECS[stage]:  # built and checked already: its dump is the canonical one
        return spec.model_dump(mode="json")
    raw = spec.model_dump() if isinstance(spec, Strict) else spec
    return SPECS[stage].model_validate(raw).model_dump(mode="json")


def cache_key(stage: str, spec: Strict | dict, input_keys: dict[str, str]) -> str:
    """The cache key of ``stage`` on ``spec`` and the inputs with these keys."""
    return cache.stage_key(stage, canonical(stage, spec), input_keys)


def cached(runner: Runner, key: str) -> StageRef | None:
    """The output of the stage run with ``key`` from the runner's cache (None: not there)."""
    found = cache.lookup(runner.cache_dir, key)
    return None if found is None else StageRef(key, cache.entry(runner.cache_dir, key), found, cached=True)


def run_stage(runner: Runner, stage: str, spec: Strict | dict, inputs: dict[str, StageRef] | None = None,
              execute: Callable[[str, dict, dict[str, str], Path], dict] | None = None) -> StageRef:
    """Run ``stage`` on ``spec`` (its ``Spec``, or a dict of its fields) and ``inputs`` unless
    its key is cached; return its output. An invalid spec fails here, before anything is written.
    ``execute(stage, spec, input paths, staging folder) -> result`` runs it instead of the
    runner's executor (a resident attack worker: ``AttackPool.execute``)."""
    inputs = inputs or {}
    spec = canonical(stage, spec)
    key = cache.stage_key(stage, spec, {role: ref.key for role, ref in inputs.items()})
    hit = cached(runner, key)
    if hit is not None:
        return hit
    with cache.computing(runner.cache_dir, key) as waited:
        hit = cached(runner, key)
        if hit is not None:  # another process computed it while this one waited
            print(f"[tamper-search] stage {key}: waited {waited:.1f} s for another process computing it; "
                  "reusing its result", file=sys.stderr, flush=True)
            return hit
        # the inputs stay in use while the stage reads them; one that retention deleted since
        # its ref was taken is made again first
        with cache.using(runner.cache_dir, [ref.key for ref in inputs.values() if _in_cache(runner, ref)]):
            inputs = {role: present(runner, ref) for role, ref in inputs.items()}
            return _compute(runner, stage, spec, key, inputs, execute)


def _in_cache(runner: Runner, ref: StageRef) -> bool:
    """``ref`` is an entry of the runner's cache (not a hub id or a user's folder)."""
    return str(ref.path) == str(cache.entry(runner.cache_dir, ref.key))


def present(runner: Runner, ref: StageRef) -> StageRef:
    """``ref`` as it is in the cache now: itself if its entry is there (or it is not a cache
    entry), else the entry made again from its recipe (:func:`rebuild`)."""
    if not _in_cache(runner, ref) or cache.exists(runner.cache_dir, ref.key):
        return ref
    return rebuild(runner, ref.key)


def rebuild(runner: Runner, key: str) -> StageRef:
    """Entry ``key`` from the cache, or made again from its recipe when retention deleted it
    (its inputs made again first, where they were deleted too). Raises LookupError when it is
    gone and no recipe says how to make it."""
    hit = cached(runner, key)
    if hit is not None:
        return hit
    how = cache.recipe(runner.cache_dir, key)
    if how is None:
        raise LookupError(f"cache entry {key} is gone and has no recipe to make it again")
    print(f"[tamper-search] stage {key}: deleted by retention and needed again; recomputing it",
          file=sys.stderr, flush=True)
    inputs = {role: StageRef(i["key"], cache.entry(runner.cache_dir, i["key"]) if i["cached"] else i["path"], {})
              for role, i in how["inputs"].items()}
    ref = run_stage(runner, how["stage"], how["spec"], inputs)
    if ref.key != key:
        raise LookupError(f"cache entry {key} is gone and its recipe now makes {ref.key} (the training code "
                          "changed since): run the experiment again")
    return ref


def _compute(runner: Runner, stage: str, spec: dict, key: str, inputs: dict[str, StageRef],
             execute: Callable | None) -> StageRef:
    paths = {role: str(ref.path) for role, ref in inputs.items()}  # materialized where they run
    staged, start = None, time.perf_counter()
    try:
        staged = cache.staging_dir(runner.cache_dir, key)
        if execute is not None:
            result = execute(stage, spec, paths, staged)
        elif runner.executor == "local":
            result = STAGES[stage](spec, _local(paths), staged)
        else:
            result = _fit(runner, stage, spec, paths, staged)
        result["wall_s"] = time.perf_counter() - start
        result["inputs"] = {role: ref.key for role, ref in inputs.items()}  # provenance: what it was built from
        result.setdefault("node", node_id())  # set by a Ray Train worker where it ran elsewhere
        recipe = {"stage": stage, "spec": spec,
                  "inputs": {role: {"key": ref.key, "path": str(ref.path), "cached": _in_cache(runner, ref)}
                             for role, ref in inputs.items()}}
        path = cache.commit(runner.cache_dir, key, staged, result, recipe)
    except BaseException as e:
        if staged is not None:  # nothing half-written stays: the key is not committed
            shutil.rmtree(staged, ignore_errors=True)
        full = storage_full(e, str(cache.entry(runner.cache_dir, key)))
        if full is not None and e is not full:
            raise full from e  # the run stops on it (search/driver.py); --resume computes it again
        raise
    return StageRef(key, path, result)


def node_id() -> str | None:
    """The Ray node this process runs on (None outside Ray)."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


def _local(inputs: dict[str, str]) -> dict[str, str]:
    """Input locations as local paths on this node (remote cache entries downloaded once)."""
    return {role: cache.materialize(loc) for role, loc in inputs.items()}


def _worker(config: dict) -> None:
    """Ray Train worker body: run the stage and hand its output folder back.

    In local mode (``num_workers: 0``) the worker is this very process: it writes straight into
    the staging folder and calls no ``ray.train`` API (Ray 2.60 refuses them inside a Tune trial
    in local mode). Otherwise rank 0 writes a temporary folder and reports it as a checkpoint,
    which Ray persists to storage for the caller, wherever the workers ran.
    """
    import json

    if config["local_out"]:
        out = Path(config["local_out"])
        result = STAGES[config["stage"]](config["spec"], _local(config["inputs"]), out)
        (out / cache.RESULT_FILE).write_text(json.dumps(result))
        return

    import ray.train

    from trainables.loop import set_strategy

    set_strategy(config.get("strategy", "ddp"))
    with tempfile.TemporaryDirectory() as tmp:
        result = STAGES[config["stage"]](config["spec"], _local(config["inputs"]), Path(tmp))
        rank0 = world()[0] == 0
        if rank0:
            (Path(tmp) / cache.RESULT_FILE).write_text(json.dumps({**result, "node": node_id()}))
        ray.train.report({"done": 1}, checkpoint=ray.train.Checkpoint.from_directory(tmp) if rank0 else None)


def _fit(runner: Runner, stage: str, spec: dict, inputs: dict[str, str], staged: Path) -> dict:
    import json

    import ray.train
    from ray.train.torch import TorchTrainer

    local = runner.scaling.get("num_workers", 1) == 0
    # Ray Train persists checkpoints under storage_path, which every node must reach: the cache
    # URI itself when the cache is remote.
    run_root = cache.entry(runner.cache_dir, ".ray_train")
    trainer = TorchTrainer(
        train_loop_per_worker=_worker,
        train_loop_config={
            "stage": stage, "spec": spec, "inputs": inputs,
            "local_out": str(staged) if local else None, "strategy": runner.strategy,
        },
        scaling_config=ray.train.ScalingConfig(**runner.scaling),
        run_config=ray.train.RunConfig(
            name=staged.name,
            storage_path=str(run_root),
            failure_config=ray.train.FailureConfig(max_failures=runner.max_failures),
        ),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    if not local:
        result.checkpoint.to_directory(str(staged))
    cache.remove(f"{run_root}/{staged.name}")  # Ray Train's run folder: the output is cached
    return json.loads((staged / cache.RESULT_FILE).read_text())


# Resident attack workers: the attacks of one adversary search run on copies of the released
# model that stay loaded (``trainables.resident.ResidentModel``), one per concurrent attack.
#
# * In-process stages (``scaling.num_workers: 0``, or the local executor): the copies live in the
#   trial's (or task's) own process, on its device.
# * One Ray Train worker per stage (``num_workers: 1``): each copy lives in a Ray actor holding
#   what a stage worker would hold (``scaling.resources_per_worker``: CPUs, GPU share, custom
#   resources), started once per search instead of a worker group per attack. An actor that dies
#   is restarted by Ray (it loads the model again) and the attack it was running is re-run there;
#   the caller records an attack only when its result comes back, so nothing is counted twice.
#
# Worker groups of two or more (DDP / FSDP attacks) still start per attack through Ray Train.
# The copies go away when the search ends (``AttackPool.close``).

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
