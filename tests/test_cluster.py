"""Cluster files and paper-scale configs: valid against Ray's own cluster schema and the
project's config, with the properties the README promises (CPU head, spot GPU workers from 0,
the pinned Ray version, tokens never in a file)."""

from __future__ import annotations

import re

import pytest
import ray
import yaml

from search import config
from tests.conftest import ROOT

PAPER = ("wmdp_gemma2_2b_undo", "wmdp_zephyr_rmu", "tar_llama3_8b")


@pytest.mark.parametrize("name", ["aws", "gcp"])
def test_launcher_yaml_is_valid_with_a_cpu_head_and_spot_gpu_workers_from_zero(name):
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((ROOT / "cluster" / f"{name}.yaml").read_text())
    validate_config(prepare_config(raw))  # Ray's own schema
    types = raw["available_node_types"]
    head = types[raw["head_node_type"]]["node_config"]
    assert "guestAccelerators" not in head and not re.match(r"(g|p)\d", head.get("InstanceType", "m"))
    workers = {k: v for k, v in types.items() if k != raw["head_node_type"]}
    for node in workers.values():
        assert node["min_workers"] == 0
        cfg = node["node_config"]
        spot = cfg.get("InstanceMarketOptions", {}).get("MarketType") == "spot" or {"preemptible": True} in cfg.get("scheduling", [])
        assert spot
    assert "HF_TOKEN=" not in yaml.safe_dump(raw).replace("export HF_TOKEN=$(", "")  # read at setup, not stored


def test_rayjob_and_image_pin_the_installed_ray_and_run_a_shipped_config():
    job = yaml.safe_load((ROOT / "cluster" / "rayjob.yaml").read_text())
    assert job["kind"] == "RayJob" and job["spec"]["rayClusterSpec"]["rayVersion"] == ray.__version__
    entry = job["spec"]["entrypoint"].split()
    assert entry[:2] == ["python", "search/run.py"] and (ROOT / entry[entry.index("--config") + 1]).is_file()
    workers = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert all(w["minReplicas"] == 0 for w in workers)
    assert f"rayproject/ray:{ray.__version__}-" in (ROOT / "cluster" / "Dockerfile").read_text()
    env = yaml.safe_load((ROOT / "cluster" / "runtime_env.yaml").read_text())
    assert "HF_TOKEN" not in env.get("env_vars", {})


@pytest.mark.parametrize("name", PAPER)
def test_paper_scale_configs_validate(name, tmp_path):
    raw = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())
    overrides = []
    for i, src in enumerate(raw["setting"]["forget_corpus"]):  # the gated bio corpus: a local file
        if src["path"].startswith("/"):
            local = tmp_path / f"forget{i}.jsonl"
            local.write_text('{"text": "x"}\n')
            overrides.append(f"setting.forget_corpus=[{{path: {local}}}]")
    cfg = config.load(ROOT / "configs" / f"{name}.yaml", overrides)
    assert cfg.setting.name == "wmdp" and cfg.setting.tokenizer == cfg.model.pretrained
    assert cfg.model.dtype == "bfloat16" and cfg.model.gradient_checkpointing and cfg.scaling.use_gpu
    assert config.trial_concurrency(cfg, 0) >= 1
    if overrides:
        with pytest.raises(config.ConfigError, match=r"setting\.forget_corpus\.0\.path: no such file"):
            config.load(ROOT / "configs" / f"{name}.yaml")
