"""Shared fixtures: tiny configs and models, built here; nothing is downloaded."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a test that reaches for the hub fails loudly
# remote-cache mirrors of tests (and of the Ray workers they start) stay out of ~/.cache
os.environ.setdefault("TAMPER_SEARCH_MIRROR", tempfile.mkdtemp(prefix="tamper-search-mirror-"))

# Overrides that shrink configs/quick.yaml to seconds: a smaller model, tens of steps.
TINY = [
    "model.d_model=32", "model.n_layer=1", "model.n_head=2",
    "pretrain.reference.steps=40", "pretrain.pure.steps=30",
    "defender.space.steps=[5,10]", "attack.space.steps=[5,10]",
    "attack.budget=2", "attack.reseeds=1", "attack.loop.eval_every=5", "search.trials=2",
]


@pytest.fixture
def tiny_cfg(tmp_path):
    from search import config

    return config.load(None, [*TINY, f"cache_dir={tmp_path / 'cache'}", f"storage={tmp_path / 'results'}"])


@pytest.fixture(scope="session")
def wmdp_paths(tmp_path_factory):
    """`wmdp` fixtures in the hub schemas and tiny GPT-2 / Llama / Gemma-2 models saved by path."""
    from tests import wmdp_fixtures

    return wmdp_fixtures.make(tmp_path_factory.mktemp("wmdp"))
