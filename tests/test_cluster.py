"""Cluster files and paper-scale configs: valid against Ray's own cluster schema and the
project's config, with the properties docs/cluster.md promises (CPU head, spot GPU workers from 0,
the pinned Ray version, tokens never in a file)."""

from __future__ import annotations

import re

import pytest
import ray
import yaml

from search import config, driver
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
    assert "HF_TOKEN=" not in yaml.safe_dump(raw).replace('HF_TOKEN="$(bash', "")  # fetched at start, not stored


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
    assert driver.trial_concurrency(cfg, 0) >= 1
    if overrides:
        with pytest.raises(config.ConfigError, match=r"setting\.forget_corpus\.0\.path: no such file"):
            config.load(ROOT / "configs" / f"{name}.yaml")


@pytest.mark.parametrize("name", ["aws", "gcp"])
def test_the_token_reaches_ray_processes_without_touching_a_file(name):
    text = (ROOT / "cluster" / f"{name}.yaml").read_text()
    raw = yaml.safe_load(text)
    assert "bashrc" not in text and ">>" not in " ".join(raw["setup_commands"])
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in raw[key] if "ray start" in c]
        assert start and all(f'HF_TOKEN="$(bash ~/tamper-search/cluster/hf_token.sh {name})" || exit 1' in c for c in start)


def _fake_cli(tmp_path, name: str, succeed_on: int) -> dict:
    """A fake `aws` / `gcloud` that fails until its ``succeed_on``-th call (0: never)."""
    import os

    count = tmp_path / "calls"
    script = tmp_path / name
    script.write_text(f"#!/usr/bin/env bash\nn=$(( $(cat {count} 2>/dev/null || echo 0) + 1 )); echo $n > {count}\n"
                      f"[ {succeed_on} -ne 0 ] && [ $n -ge {succeed_on} ] && printf hf_secret && exit 0\nexit 255\n")
    script.chmod(0o755)
    return {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "HF_TOKEN_RETRY_SECONDS": "0"}


@pytest.mark.parametrize("provider,cli", [("aws", "aws"), ("gcp", "gcloud")])
def test_token_fetch_retries_then_fails_loudly(tmp_path, provider, cli):
    import subprocess

    script = ROOT / "cluster" / "hf_token.sh"
    ok = subprocess.run(["bash", str(script), provider], env=_fake_cli(tmp_path, cli, 3), capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout == "hf_secret" and (tmp_path / "calls").read_text().strip() == "3"
    (tmp_path / "calls").unlink()
    bad = subprocess.run(["bash", str(script), provider], env=_fake_cli(tmp_path, cli, 0), capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stdout == "" and "could not read the Hugging Face token" in bad.stderr
    assert (tmp_path / "calls").read_text().strip() == "5"


def test_credentials_in_storage_uris_are_masked_everywhere_written():
    from search import tables
    from search.driver import config_text

    uri = "s3://AKIAXXXX:wJalrSECRET@bucket/results?region=us-east-1&secret_key=abc&session_token=xyz"
    masked = tables.redact(uri)
    assert "AKIAXXXX" not in masked and "wJalrSECRET" not in masked and "abc" not in masked and "xyz" not in masked
    assert masked == "s3://***@bucket/results?region=us-east-1&secret_key=***&session_token=***"
    cfg = config.load(None, [f"storage={uri}", "cache_dir=gs://tok:pw@b/c"])
    text = config_text(cfg)
    assert "wJalrSECRET" not in text and "pw@" not in text and "bucket/results" in text


def test_the_tar_config_trains_as_the_authors_run_it(tmp_path):
    """run_tar_bio.sh: outer Schedule-Free AdamW (2e-5, 32 warm-up steps, no clipping), the
    adversary's published learning rates {2e-6, 2e-5, 4e-5} at batch 4."""
    from search.trial import method_spec

    local = tmp_path / "bio.jsonl"
    local.write_text('{"text": "x"}\n')
    cfg = config.load(ROOT / "configs" / "tar_llama3_8b.yaml", [f"setting.forget_corpus=[{{path: {local}}}]"])
    spec = method_spec(cfg, "tar", {"retain_forget": 0.33})
    loop = spec.loop
    assert (loop.optimizer, loop.lr, loop.warmup_steps, loop.grad_clip, loop.steps) == (
        "adamw_schedule_free", 2e-5, 32, None, 750)
    assert spec.params.adversary_lrs == [2e-6, 2e-5, 4e-5] and spec.params.adversary_batch_size == 4
    assert set(cfg.defender.search_space()["tar"]) == {"retain_forget"}
