"""Experiment tracking, opt-in: every defender trial to MLflow or Weights & Biases.

Through Ray Tune's own logger callbacks (``ray.air.integrations``): one tracked run per trial
with its parameters and metrics (the trial's single report), plus its attacks — MLflow: one
nested run per attack (its ``attack.*`` parameters, its accuracies and FLOPs as metrics); W&B:
an ``attacks`` table in the trial's run. The baselines and the tables stay in the experiment
folder as always.

Secrets never pass through the config (its sections refuse unknown keys such as ``api_key``):
MLflow reads ``MLFLOW_TRACKING_TOKEN`` / ``MLFLOW_TRACKING_USERNAME`` / ``..._PASSWORD`` and W&B
``WANDB_API_KEY`` (or ``wandb login``) from the environment, and a tracking URI's credentials are
masked in the config copy and the logs like any storage URI's.
"""

from __future__ import annotations

import importlib.util
import math
import netrc
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from trainables.strict import Strict

if TYPE_CHECKING:
    from ray import tune

PACKAGE = {"mlflow": "mlflow", "wandb": "wandb"}  # backend: the module it needs


class TrackingConfig(Strict):
    """``tracking:`` — ``backend`` none (default), mlflow or wandb. ``uri``: MLflow's tracking
    URI (default: an SQLite store ``mlflow.db`` in the experiment folder, which ``mlflow ui
    --backend-store-uri sqlite:///<exp>/mlflow.db`` opens; MLflow 3 keeps its file store in
    maintenance mode). ``project``: the MLflow experiment / W&B project
    (default: the experiment's name). ``mode``: W&B ``offline`` (default: run files in
    ``<exp>/wandb``, sent later with ``wandb sync``) or ``online``."""

    backend: Literal["none", "mlflow", "wandb"] = "none"
    uri: str | None = None
    project: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$")
    mode: Literal["offline", "online"] = "offline"


def _wandb_logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def check(t: TrackingConfig, exp_dir: str) -> str | None:
    """The mistake in ``t`` for an experiment written to ``exp_dir`` (None if there is none),
    found before anything starts."""
    if t.backend == "none":
        return None
    if importlib.util.find_spec(PACKAGE[t.backend]) is None:
        return (f"tracking.backend: {t.backend} is not installed "
                f"(pip install -e '.[tracking]', or pip install {PACKAGE[t.backend]})")
    if t.backend == "mlflow" and t.uri is None and "://" in exp_dir:
        return "tracking.uri: required with remote storage (the default SQLite store lives in a local experiment folder)"
    if t.backend == "wandb" and t.mode == "online" and not _wandb_logged_in():
        return "tracking.mode: online needs WANDB_API_KEY in the environment or `wandb login` (or use offline)"
    return None


def _attacks(exp_dir: str, trial_id: str) -> list[dict[str, Any]]:
    from search import tables

    return tables.read_part(exp_dir, trial_id).get("attacks", [])


def _split(row: dict[str, Any]) -> tuple[dict[str, Any], dict[str, float]]:
    """(parameters, metrics) of an attack row: its ``attack.*`` settings, its finite numbers."""
    params = {k: v for k, v in row.items() if k.startswith("attack.") and v is not None}
    metrics = {k: float(v) for k, v in row.items()
               if not k.startswith("attack.") and isinstance(v, (int, float)) and not isinstance(v, bool)
               and math.isfinite(v)}
    return params, metrics


def callbacks(t: TrackingConfig, experiment: str, name: str, exp_dir: str) -> list["tune.Callback"]:
    """Ray Tune logger callbacks for ``t`` (none for backend none): the config's ``experiment``
    is the MLflow experiment / W&B project unless ``t.project`` says otherwise, the run's
    ``name`` (its results folder) a tag / the W&B group."""
    if t.backend == "mlflow":
        return [_mlflow_callback(t, experiment, name, exp_dir)]
    if t.backend == "wandb":
        return [_wandb_callback(t, experiment, name, exp_dir)]
    return []


def _mlflow_callback(t: TrackingConfig, experiment: str, name: str, exp_dir: str) -> "tune.Callback":
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    uri = t.uri or "sqlite:///" + os.path.join(os.path.abspath(exp_dir), "mlflow.db")
    project = t.project or experiment

    class Callback(MLflowLoggerCallback):
        def _client(self):
            return self.mlflow_util._mlflow.tracking.MlflowClient(uri)

        def setup(self, *args, **kwargs):
            if t.uri is None and self._client().get_experiment_by_name(project) is None:
                # the default store: its artifacts in the experiment folder, not the driver's cwd
                artifacts = Path(os.path.abspath(exp_dir), "mlartifacts").as_uri()
                self._client().create_experiment(project, artifact_location=artifacts)
            super().setup(*args, **kwargs)

        def log_trial_start(self, trial):
            super().log_trial_start(trial)
            self._client().set_tag(self._trial_runs[trial], "trial_id", trial.trial_id)

        def log_trial_end(self, trial, failed: bool = False):
            run_id = self._trial_runs[trial]
            client = self._client()
            experiment_id = client.get_run(run_id).info.experiment_id
            for row in _attacks(exp_dir, trial.trial_id):  # one nested run per attack
                params, metrics = _split(row)
                child = client.create_run(experiment_id, run_name=row.get("attack_id"),
                                          tags={"mlflow.parentRunId": run_id, "trial_id": trial.trial_id})
                self.mlflow_util.log_params(run_id=child.info.run_id, params_to_log=params)
                self.mlflow_util.log_metrics(run_id=child.info.run_id, metrics_to_log=metrics, step=0)
                client.set_terminated(child.info.run_id, "FINISHED")
            super().log_trial_end(trial, failed)

    return Callback(tracking_uri=uri, experiment_name=project, tags={"run": name})


def _wandb_callback(t: TrackingConfig, experiment: str, name: str, exp_dir: str) -> "tune.Callback":
    import wandb
    from ray.air.integrations.wandb import WandbLoggerCallback, _QueueItem

    os.environ["WANDB_MODE"] = t.mode  # read by Ray's key check in this process and by wandb in its actors
    os.environ.setdefault("WANDB_SILENT", "true")

    class Callback(WandbLoggerCallback):
        def log_trial_end(self, trial, failed: bool = False):
            rows = _attacks(exp_dir, trial.trial_id)
            if rows and trial in self._trial_queues:
                columns = sorted({k for r in rows for k in r})
                table = wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])
                self._trial_queues[trial].put((_QueueItem.RESULT, {"attacks": table}))
            super().log_trial_end(trial, failed)

    local = "://" not in exp_dir
    if local:
        os.makedirs(os.path.join(exp_dir, "wandb"), exist_ok=True)
    return Callback(project=t.project or experiment, group=name, mode=t.mode,
                    **({"dir": os.path.abspath(exp_dir)} if local else {}))
