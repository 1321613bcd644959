"""What every Ray task and Tune trial of the search does first: quiet logs, and torch on the
CPUs Ray assigned."""

from __future__ import annotations

import logging

import optuna
import ray


def quiet() -> None:
    """Silence per-stage chatter (Ray Train's local-mode notice, transformers' progress bars)."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    for name in ("ray.train", "ray.tune", "ray.train.v2"):
        logging.getLogger(name).setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def use_assigned_cpus() -> None:
    """Give torch as many threads as CPUs Ray assigned to this task or trial (Ray sets
    OMP_NUM_THREADS only for a worker's first task, so a reused trial actor would keep it)."""
    import torch

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))


def in_ray_worker() -> None:
    """What every Ray task and trial of the driver does first."""
    quiet()
    use_assigned_cpus()
