"""The experiment driver: Ray, the baselines, the outer Tune + Optuna search, the tables.

Ray 2.60 wiring: each Tune trial is a *function* trainable that runs its stages through
``search.runner`` (a Ray Train ``TorchTrainer`` per stage, local mode by default), because
``Tuner(trainer)`` is deprecated. Multi-objective ``OptunaSearch`` (maximise retain accuracy,
minimise attacked forget accuracy) proposes the defenders; no early-stopping scheduler, since it
would hand truncated values to a multi-objective study.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import pyarrow.fs as pafs
import ray
import yaml
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from search import progress, studies, tables, tracking, verify
from search.adversary import error_text
from search.config import ConfigError, ExperimentConfig
from search.disk import storage_full
from search.retention import Retention
from search.runner import Runner, StageRef
from search.ray_worker import in_ray_worker, quiet
from search.trial import (OBJECTIVES, Context, baseline, defender_trial, pretrained, pretrained_key, suppressed_id,
                          suppressed_key, verify_trial)
from spaces import points
from spaces.dims import suggest

ROOT = Path(__file__).resolve().parent.parent
SAMPLERS = {
    "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed),
    "nsga2": lambda seed: optuna.samplers.NSGAIISampler(seed=seed),
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
}


# the running experiment's cache retention (search/retention.py); None outside run_experiment
retention: Retention | None = None

def say(text: str) -> None:
    progress.emit(progress.stamp(tables.redact(text)))


def config_text(cfg: ExperimentConfig) -> str:
    """The resolved config as written beside the tables, credentials in URIs masked."""
    return tables.redact(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


def trial_concurrency(cfg: ExperimentConfig, cluster_gpus: float) -> int | None:
    """Trials to run at once: ``search.max_concurrent`` if set; with GPUs, as many as the
    cluster's GPUs hold (a trial's stages need workers × GPUs each, ``attack.concurrency`` of
    them at once); else None (Tune fills the CPUs). Raises ConfigError where one trial needs
    more GPUs than the cluster has."""
    if cfg.search.max_concurrent:
        return cfg.search.max_concurrent
    s = cfg.scaling
    if not s.use_gpu:
        return None
    gpus = cfg.scaling.cluster_gpus or cluster_gpus
    per_trial = s.trial_gpus(cfg.attack.concurrency)
    if gpus < per_trial:
        how = "gpus_per_worker" if s.in_process() else "num_workers × gpus_per_worker × attack.concurrency"
        raise ConfigError(
            f"scaling: a trial needs {per_trial:g} GPUs ({how}) and the cluster has {gpus:g}; set "
            "scaling.cluster_gpus to the GPUs an autoscaling cluster grows to, or use fewer workers")
    return int(gpus // per_trial)


def init_ray(cfg: ExperimentConfig) -> None:
    """Connect to the cluster named by the config or ``RAY_ADDRESS`` (as under ``ray job
    submit``), else start a fresh local instance that can import this checkout."""
    if ray.is_initialized():
        return
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    address = cfg.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        return
    ray.init(
        address="local",
        num_cpus=cfg.ray_num_cpus,
        include_dashboard=False,
        object_store_memory=256 * 2**20,
        runtime_env={"env_vars": env},
        configure_logging=True,
        logging_level=logging.WARNING,
    )


@ray.remote(num_cpus=1)
def _pretrain_task(ctx: Context, kind: str) -> StageRef:
    in_ray_worker()
    return pretrained(ctx, kind)


@ray.remote(num_cpus=1)
def _verify_task(ctx: Context, trial_id: str, ref_flops: float) -> dict:
    in_ray_worker()
    return verify_trial(ctx, trial_id, ref_flops)


def _share(cfg: ExperimentConfig, n: int, beside: int = 0) -> dict:
    """Ray options of one of ``n`` in-process tasks that run with only ``beside`` one-CPU tasks
    next to them (the reference's pre-training, a round of verifications after the search): an
    equal share of the rest of the largest live node's CPUs, which each task's torch takes as
    threads (``use_assigned_cpus``), so that no core idles while the search waits for them. With
    Train workers (``scaling.num_workers`` > 0) the workers hold the resources."""
    opts = cfg.scaling.task_options()
    if cfg.scaling.in_process():
        cpus = max((node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"]), default=0)
        opts["num_cpus"] = max(1, (int(cpus) - beside) // max(1, n))
    return opts


@dataclass(frozen=True)
class _Pending:
    """The reference model while its pre-training task runs; calling it waits for the task."""

    task: ray.ObjectRef

    def __call__(self) -> StageRef:
        return ray.get(self.task)


def _verify_front(ctx: Context, ref_flops: float) -> None:
    """Verify the front until every model on it is verified (``search/verify.py``), the
    models of a round at once; a verification that fails leaves its row marked, unverified."""
    def verify_many(trial_ids: list[str]) -> list[dict]:
        options = _share(ctx.cfg, len(trial_ids))
        running = {t: _verify_task.options(**options).remote(ctx, t, ref_flops) for t in trial_ids}
        rows = []
        for trial_id, task in running.items():
            try:
                rows.append(ray.get(task))
            except ray.exceptions.RayTaskError as e:
                if (full := storage_full(e)) is not None:
                    raise full from e
                say(f"verification of {trial_id} FAILED: {e.cause!r} (its search-time score stands, unverified)")
                rows.append(verify.mark_failed(ctx.exp_dir, trial_id, error_text(e.cause)))
        return rows

    verify.sweep(ctx.exp_dir, verify_many, say)


@ray.remote(num_cpus=1)
def _baseline_task(ctx: Context, kind: str, reference: StageRef, model: StageRef | None, method: str | None = None) -> dict:
    in_ray_worker()
    return baseline(ctx, kind, reference, model, method)


class Progress(tune.Callback):
    """One readable line per finished trial, and a live status of trials and attacks
    (``search/progress.py``) between them."""

    def __init__(self, total: int, ctx: Context):
        self.total, self.done, self.ctx = total, 0, ctx
        self.live = self.store = None

    def __getstate__(self) -> dict:  # Tune pickles its callbacks: not the terminal or the journal
        return {**self.__dict__, "live": None, "store": None}

    def setup(self, **info):
        self.started_at, self.store = time.time(), studies.storage(self.ctx.exp_dir)
        self.live = progress.current = progress.Live()

    def _status(self, trials, force: bool = False) -> None:
        if self.live is None or not (force or self.live.due()):
            return  # before setup, or too soon: the journal is not read every step
        attacks = progress.attack_counts(self.store, self.ctx.cfg.attack.budget)
        self.live.status(progress.render(progress.snapshot(trials, self.total, self.started_at, attacks)), force)

    def on_step_end(self, iteration, trials, **info):
        self._status(trials)

    def on_experiment_end(self, trials, **info):
        self._status(trials, force=True)
        if self.live is not None:
            self.live.close()  # run_experiment clears progress.current, also when fit() raises

    def _line(self, trial, text: str) -> None:
        self.done += 1
        params = " ".join(f"{k}={_fmt(v)}" for k, v in trial.config.items())
        say(f"trial {self.done}/{self.total} {trial.trial_id} [{params}] {text}")
        rows = tables.merge(self.ctx.exp_dir, [trial.trial_id])  # the tables stay current, at a cost that does not grow
        if retention is not None:  # module state, not this object's: a restored Tuner unpickles its callbacks
            for row in rows:
                retention.finished(row)

    def on_trial_complete(self, iteration, trials, trial, **info):
        r = trial.last_result
        verified = f"  verified (search-time {r['forget_acc_attacked_search']:.3f})" if r.get("verified") else ""
        self._line(trial, f"retain {r['retain_acc']:.3f}  forget {r['forget_acc']:.3f}  "
                          f"{attacked_text(r, r['attacked'])}{verified}" + ("" if r["feasible"] else "  (below retain floor)"))

    def on_trial_error(self, iteration, trials, trial, **info):
        full = storage_full(_trial_error(trial))
        if full is not None:  # the run stops (search/run.py); --resume runs the trial again
            raise full
        # A trial that raised has written its own failed row; one whose process died has not.
        if not tables.read_part(self.ctx.exp_dir, trial.trial_id):
            tables.write_part(self.ctx.exp_dir, trial.trial_id, {"trials": [{
                "experiment": self.ctx.experiment, "trial_id": trial.trial_id, "kind": "defender",
                "status": "error", "error": _error_text(trial),
                "finished_at": time.time(),
                "setting": self.ctx.cfg.setting.name,
                "method": trial.config.get("method", self.ctx.cfg.defender.methods[0]),
                **{f"param.{k}": v for k, v in trial.config.items()},
            }]})
        self._line(trial, "FAILED (row kept in trials.parquet)")


def attacked_text(row: dict, value: float) -> str:
    """``attacked 0.150 [0.105, 0.209] (sel 0.180)``: the V_rep worst case, its 95 % interval
    and the optimistic V_sel figure it was chosen by."""
    return (f"attacked {value:.3f} [{row['forget_acc_attacked_lo']:.3f}, {row['forget_acc_attacked_hi']:.3f}]"
            f" (sel {row['forget_acc_attacked_sel']:.3f})")


def _trial_error(trial) -> BaseException | None:
    """The exception a trial raised, from the file Tune pickled it to on this node (the copy
    in the experiment's storage comes later)."""
    import cloudpickle

    try:
        with open(trial.pickled_error_file, "rb") as f:
            return cloudpickle.load(f)
    except (OSError, TypeError, ValueError, AttributeError, ImportError):
        return None


def _error_text(trial) -> str:
    """The error of a trial whose process died: the text Tune saved, not a path to it."""
    path = getattr(trial, "error_file", None)
    try:
        with open(path) as f:
            return f.read().strip() or "trial process failed"
    except (OSError, TypeError):
        return "trial process failed (no error text was saved)"


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _define_by_run(trial: optuna.Trial, spaces: dict[str, dict], shared: dict | None = None) -> None:
    """One method: its dimensions by name. Several: the method, then its dimensions as
    ``<method>.<name>`` (a conditional space; each method keeps its own ranges). Then the
    dimensions every method shares (a shared stage's ``<scope>.<name>``)."""
    if len(spaces) == 1:
        suggest(trial, next(iter(spaces.values())))
    else:
        method = trial.suggest_categorical(points.METHOD, list(spaces))
        suggest(trial, points.scoped(spaces[method], method))
    suggest(trial, shared or {})


def _search(cfg: ExperimentConfig, exp_dir: str) -> tuple[dict, OptunaSearch | None]:
    """(Tune param_space, search algorithm): every grid point once through Tune's own variant
    generator, else multi-objective Optuna over the define-by-run space, its study in the
    experiment's journal (``search/studies.py``)."""
    if cfg.search.sampler == "grid":  # validated: one method, every dimension a Choice
        return {k: tune.grid_search(list(d.values)) for k, d in cfg.defender.single_space().items()}, None
    store = studies.storage(exp_dir)
    if store is not None:  # a fresh search: no study of an earlier run under this name
        studies.fresh(studies.DEFENDER, store, directions=[f"{m}imize" for m in OBJECTIVES.values()])
    return {}, OptunaSearch(
        space=functools.partial(  # picklable: Tune saves the searcher
            _define_by_run, spaces=cfg.defender.search_space(), shared=cfg.defender.shared_space(),
        ),
        metric=list(OBJECTIVES), mode=list(OBJECTIVES.values()),
        sampler=SAMPLERS[cfg.search.sampler](cfg.seed),
        study_name=studies.DEFENDER, storage=store,
    )


def _tuner(ctx: Context, reference: StageRef, resume: bool, concurrency: int | None) -> tune.Tuner:
    cfg = ctx.cfg
    trainable = tune.with_parameters(defender_trial, ctx=ctx, reference=reference)
    trainable = tune.with_resources(trainable, trial_resources(cfg))
    tune_dir = tables.join(ctx.exp_dir, "tune")
    # Save Tune's experiment state (trial statuses, the searcher) at most a second after any
    # change, not every 10 s or more: a driver killed in between would otherwise resume without
    # trials it had already started, and run their configurations again under new ids.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    if resume and tune.Tuner.can_restore(tune_dir):
        # A trial stopped by a full disk wrote no row: run it again (and so, Tune allowing no
        # finer choice, every errored trial: a failure that is not the disk's fails again)
        retry = errored_without_row(tune_dir, ctx.exp_dir)
        if retry:
            say(f"running again the {len(retry)} trial(s) that a full disk stopped: {', '.join(retry)}")
        return tune.Tuner.restore(tune_dir, trainable, resume_errored=bool(retry), restart_errored=False)
    param_space, search_alg = _search(cfg, ctx.exp_dir)
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=search_alg, num_samples=1 if search_alg is None else cfg.search.trials,
            max_concurrent_trials=concurrency,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name="tune", storage_path=ctx.exp_dir, verbose=0,
            callbacks=[Progress(cfg.search.trials, ctx), *tracking.callbacks(cfg.tracking, cfg.experiment, ctx.experiment, ctx.exp_dir)],
            failure_config=tune.FailureConfig(max_failures=cfg.search.max_failures),
        ),
    )


def errored_without_row(tune_dir: str, exp_dir: str) -> list[str]:
    """The trials Tune's saved state marks errored that have no part (a full disk stopped them
    before they wrote one)."""
    fs, path = tables.resolve(tune_dir)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    states = sorted(i.path for i in infos if i.base_name.startswith("experiment_state-") and i.base_name.endswith(".json"))
    if not states:
        return []
    with fs.open_input_stream(states[-1]) as f:
        trials = [json.loads(t) for t, _ in json.loads(f.read())["trial_data"]]
    have = set(tables.part_ids(exp_dir))
    return [t["trial_id"] for t in trials if t.get("status") == "ERROR" and t["trial_id"] not in have]


def trial_resources(cfg: ExperimentConfig) -> dict[str, float]:
    """What a defender trial holds. In-process (``num_workers: 0``) its stages run in the trial's
    own process, which holds the CPUs, its GPU share and the custom resources; with Ray Train
    workers, the workers hold them and the trial only coordinates."""
    s = cfg.scaling
    if not s.in_process():
        return {"cpu": 0.25}
    return {"cpu": s.cpus_per_worker, **({"gpu": s.gpus_per_worker} if s.use_gpu else {}), **s.resources}


def _report(tasks: dict, exp_dir: str) -> None:
    """Wait for baseline tasks, merge their rows into the tables and print one line each."""
    for kind, task in tasks.items():
        try:
            row = ray.get(task)
            tables.merge(exp_dir, [row["trial_id"]])
            say(f"baseline {kind}: retain {row['retain_acc']:.3f}  forget {row['forget_acc']:.3f}  "
                f"{attacked_text(row, row['forget_acc_attacked'])}")
        except ray.exceptions.RayTaskError as e:
            if (full := storage_full(e)) is not None:
                raise full from e
            say(f"baseline {kind} FAILED: {e.cause!r} (row kept in trials.parquet)")


def run_experiment(cfg: ExperimentConfig, name: str, storage: str, resume: bool = False) -> str:
    """Run the whole experiment; return its results folder (local path or URI)."""
    exp_dir = tables.join(storage, name)
    init_ray(cfg)
    quiet()
    concurrency = trial_concurrency(cfg, ray.cluster_resources().get("GPU", 0))  # cannot fit: exit 2 now
    runner = Runner(
        cache_dir=cfg.cache_dir if "://" in cfg.cache_dir else Path(os.path.expanduser(cfg.cache_dir)),
        executor="ray",
        scaling=cfg.scaling.train_scaling(),
        max_failures=cfg.scaling.max_failures,
        strategy=cfg.scaling.strategy,
        resident=cfg.scaling.resident_attacks,
    )
    ctx = Context(cfg, name, exp_dir, runner)
    tables.write_text(exp_dir, tables.CONFIG, config_text(cfg))
    tables.write_run_status(exp_dir, "running")
    tables.catch_up(exp_dir)  # resumed: what the last driver did not merge
    global retention
    retention = Retention(runner.cache_dir, exp_dir, cfg.cache.mode(cfg.setting.name))
    retention.start()  # registered in the cache as running: gc leaves what it makes alone
    try:
        _run(ctx, concurrency, resume)
    finally:
        retention.stop()
        retention = None
    return exp_dir


def _run(ctx: Context, concurrency: int | None, resume: bool) -> None:
    """The experiment's work: pre-training, baselines, the search, verification, retention."""
    cfg, exp_dir = ctx.cfg, ctx.exp_dir
    say(f"experiment {ctx.experiment}: results in {exp_dir}")
    # In local mode these tasks run their stages in-process: they hold the stage resources.
    tasks = cfg.scaling.task_options()
    budget = (f"{cfg.attack.budget_flops:g} of pre-training compute" if cfg.attack.budget_flops
              else f"{cfg.attack.budget} attacks")
    reruns = f"{cfg.attack.reseeds} re-run{'s' if cfg.attack.reseeds != 1 else ''}"
    others = [k for k in cfg.baseline_kinds if k != "reference"]
    say("pre-training the reference model (cached after the first run)"
        + (f"; beside it the {', '.join(others)} model is pre-trained and attacked" if others else "") + " ...")
    # The trials need only the reference. Beside its pre-training the pure baseline's task
    # pre-trains and attacks the pure model (the shorter pre-training): no core idles while the
    # reference finishes. A lone reference takes every CPU of a node.
    pending = _pretrain_task.options(**_share(cfg, 1, beside=len(others))).remote(ctx, "reference")
    baselines = {k: _baseline_task.options(**tasks).remote(ctx, k, _Pending(pending), None) for k in others}
    reference = ray.get(pending)
    retention.pin({pretrained_key(cfg, k) for k in cfg.baseline_kinds}
                  | {suppressed_key(cfg, m, reference) for m in cfg.defender.methods if cfg.defender.robust(m)})
    m = reference.result["metrics"]
    how = "cached" if reference.cached else f"{reference.result['wall_s']:.0f} s"
    say(f"reference model: retain {m['retain_acc']:.3f}  forget (V_rep) {m['forget_acc_rep']:.3f}  ({how})")
    say(f"adversary search ({budget} + {reruns} of the strongest, each) on the baselines and "
        f"{cfg.search.trials} {cfg.defender.label()} trials ...")
    baselines["reference"] = _baseline_task.options(**tasks).remote(ctx, "reference", reference, reference)
    before = [m for m in cfg.defender.methods if cfg.defender.robust(m)]
    if before:
        # The suppressed models that robustifiers build on (each method's pipeline's first
        # step at its fixed + default hyperparameters) and their attacks come first, so that
        # the trials building on them find both in the stage cache.
        say("unlearning and attacking the suppressed model(s) first ...")
        suppressed = {
            suppressed_id(cfg, m): _baseline_task.options(**tasks).remote(ctx, "suppressed", reference, None, m)
            for m in before
        }
        _report(suppressed, exp_dir)
    if cfg.scaling.use_gpu or cfg.scaling.resources:
        # Scarce resources (GPUs, a node type's custom resource): trials get them all, so let
        # the baselines finish first; an autoscaler then grows the cluster to the trial
        # concurrency, not to trials + baselines.
        _report(baselines, exp_dir)
    try:
        _tuner(ctx, reference, resume, concurrency).fit()
    finally:
        progress.current = None
    if cfg.verify.enabled:
        say("verifying the front: every model on it attacked again by the verification attacker ...")
        _verify_front(ctx, reference.result["flops"])
    if not cfg.scaling.use_gpu:
        _report(baselines, exp_dir)
    tables.catch_up(exp_dir)  # a failed baseline's row, say
    retention.close(tables.trial_rows(exp_dir))
    if retention.deleted:
        say(f"cache.keep: {retention.mode}: deleted {len(retention.deleted)} models off the front from the stage cache "
            "(each is made again from its recipe if needed)")


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run search/run.py")
