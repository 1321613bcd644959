"""Tracking's checks before launch (exit 2 naming the field) and the attack rows it sends."""

import math

import pytest

from search import tracking
from search.tracking import TrackingConfig
from tests.test_config import _cli


def test_no_tracking_needs_nothing():
    assert tracking.check(TrackingConfig(), "s3://bucket/exp") is None
    assert tracking.callbacks(TrackingConfig(), "quick", "quick-1", "/tmp/x") == []


def test_mistakes_are_named_before_anything_starts(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: not logged in to W&B
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert tracking.check(TrackingConfig(backend="mlflow"), "s3://bucket/exp").startswith("tracking.uri:")
    assert tracking.check(TrackingConfig(backend="mlflow", uri="http://mlflow:5000"), "s3://bucket/exp") is None
    assert tracking.check(TrackingConfig(backend="wandb", mode="online"), "/tmp/x").startswith("tracking.mode:")
    assert tracking.check(TrackingConfig(backend="wandb"), "/tmp/x") is None  # offline needs no login
    monkeypatch.setenv("WANDB_API_KEY", "k")
    assert tracking.check(TrackingConfig(backend="wandb", mode="online"), "/tmp/x") is None
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name: None)
    assert "not installed" in tracking.check(TrackingConfig(backend="mlflow"), "/tmp/x")


@pytest.mark.parametrize("override, field", [
    ("tracking.backend=neptune", "tracking.backend"),
    ("tracking.api_key=secret", "tracking.api_key"),  # a secret has no place in a config
    ("tracking={backend: mlflow, uri: null}", None),
])
def test_the_command_line_refuses_bad_tracking(capsys, tmp_path, override, field):
    code, err = _cli(capsys, "--check", "--set", override, "--storage", str(tmp_path))
    if field is None:
        assert code == 0
    else:
        assert code == 2 and field in err and "secret" not in err.replace("tracking.api_key", "")


def test_remote_storage_needs_an_mlflow_uri_from_the_command_line(capsys):
    code, err = _cli(capsys, "--check", "--set", "tracking.backend=mlflow", "--storage", "s3://bucket/results")
    assert code == 2 and "tracking.uri" in err


def test_an_attack_row_splits_into_parameters_and_finite_metrics():
    row = {"attack_id": "a1", "attack.lr": 1e-3, "attack.kind": "lora", "attack.lora_r": None,
           "forget_acc_sel_max": 0.25, "steps_run": 40, "flops": 1e9, "curve_nan": math.nan, "pruned": False}
    params, metrics = tracking._split(row)
    assert params == {"attack.lr": 1e-3, "attack.kind": "lora"}
    assert metrics == {"forget_acc_sel_max": 0.25, "steps_run": 40.0, "flops": 1e9}
