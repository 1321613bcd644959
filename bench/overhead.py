"""Overhead of the Ray path: the quick experiment's defender trials run in-process vs. through
Ray (Tune function trainable per trial, a Ray Train ``TorchTrainer`` per stage).

Both paths run the same defender configurations (drawn once from the space with the config's
seed), the same adversary searches, one trial at a time, on the same cached reference model;
each path has its own fresh stage cache so neither reuses the other's work. The Ray path's time
includes starting Ray. Prints both times and their ratio (goal ≤ 1.3), and the Ray path again
with the trials running concurrently, as the driver runs them.

    python bench/overhead.py [--config configs/quick.yaml] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optuna  # noqa: E402

from search import config  # noqa: E402
from search.runner import Runner  # noqa: E402
from search.trial import Context, defender, pretrained  # noqa: E402
from spaces.dims import suggest  # noqa: E402


def defender_points(cfg: config.ExperimentConfig) -> list[dict]:
    """``cfg.search.trials`` defender configurations drawn at random with the config's seed."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=cfg.seed))
    points = []
    for _ in range(cfg.search.trials):
        trial = study.ask()
        points.append(suggest(trial, cfg.defender.search_space()[cfg.defender.methods[0]]))
        study.tell(trial, 0.0)
    return points


def run_local(cfg, points, reference, work: Path) -> float:
    ctx = Context(cfg, "bench-local", str(work / "results-local"), Runner(work / "cache-local", "local"))
    start = time.perf_counter()
    for i, params in enumerate(points):
        defender(ctx, f"local{i}", params, reference)
    return time.perf_counter() - start


def _point_trial(config: dict, points: list[dict], ctx, reference) -> None:
    """The driver's Tune trainable, on a fixed point instead of one Optuna proposes."""
    from search.trial import defender_trial

    defender_trial(points[config["i"]], ctx, reference)


def run_ray(cfg, points, reference, work: Path, concurrent: int, tag: str) -> float:
    """The Ray path; each trial gets the machine's CPUs / ``concurrent`` (torch threads follow,
    as Ray sets OMP_NUM_THREADS from the trial's CPUs), like the in-process run gets them all."""
    import ray
    from ray import tune

    from search.driver import init_ray
    from search.ray_worker import quiet

    start = time.perf_counter()
    init_ray(cfg)
    quiet()
    runner = Runner(work / f"cache-{tag}", "ray", scaling={"num_workers": 0})
    ctx = Context(cfg, f"bench-{tag}", str(work / f"results-{tag}"), runner)
    trainable = tune.with_resources(
        tune.with_parameters(_point_trial, points=points, ctx=ctx, reference=reference),
        {"cpu": max(1, (os.cpu_count() or 1) // concurrent)},
    )
    tune.Tuner(
        trainable,
        param_space={"i": tune.grid_search(list(range(len(points))))},
        tune_config=tune.TuneConfig(max_concurrent_trials=concurrent, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(work / f"tune-{tag}"), name="bench", verbose=0),
    ).fit()
    elapsed = time.perf_counter() - start
    ray.shutdown()
    return elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()
    cfg = config.load(args.config, args.set)
    from search.ray_worker import quiet

    quiet()  # both paths equally quiet
    work = Path(tempfile.mkdtemp(prefix="tamper-bench-"))
    try:
        ref_ctx = Context(cfg, "bench", str(work), Runner(Path(os.path.expanduser(cfg.cache_dir)), "local"))
        reference = pretrained(ref_ctx, "reference")  # cached across runs; not timed
        points = defender_points(cfg)
        print(f"{len(points)} defender trials x {cfg.attack.budget} attacks, reference from cache", flush=True)
        local = run_local(cfg, points, reference, work)
        print(f"in-process:              {local:7.1f} s", flush=True)
        ray_seq = run_ray(cfg, points, reference, work, 1, "ray1")
        print(f"Ray (1 trial at a time): {ray_seq:7.1f} s   ratio {ray_seq / local:.2f}", flush=True)
        ray_par = run_ray(cfg, points, reference, work, 2, "ray2")
        print(f"Ray (2 concurrent):      {ray_par:7.1f} s   ratio {ray_par / local:.2f}", flush=True)
        figures = {"trials": len(points), "attack_budget": cfg.attack.budget, "local_s": local,
                   "ray_sequential_s": ray_seq, "ratio": ray_seq / local,
                   "ray_concurrent2_s": ray_par, "ratio_concurrent2": ray_par / local}
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
