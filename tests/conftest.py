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
# Ray starts one idle worker per CPU for the first driver; a test's short search leaves them idle
# (a tiny search: 2 of its 6 workers), and each costs a process start on 2 busy cores
os.environ.setdefault("RAY_prestart_worker_first_driver", "0")
# remote-cache mirrors of tests (and of the Ray workers they start) stay out of ~/.cache
os.environ.setdefault("TAMPER_SEARCH_MIRROR", tempfile.mkdtemp(prefix="tamper-search-mirror-"))

# Overrides that shrink configs/quick.yaml to seconds: a smaller model, tens of steps.
TINY = [
    "model.d_model=32", "model.n_layer=1", "model.n_head=2",
    "pretrain.reference.steps=40", "pretrain.pure.steps=30",
    "defender.space.steps=[5,10]", "attack.space.steps=[5,10]",
    "attack.budget=2", "attack.reseeds=1", "attack.loop.eval_every=5", "search.trials=2",
    # fine-tuning only: tests of the search's bookkeeping count its attacks; the other families
    # are tested in tests/test_families.py, tests/test_activation_and_context_families.py and by
    # the first end-to-end search
    "attack.families=[finetune]", "verify.families=[finetune]",
]


def tiny_model(arch: str = "gpt2", seed: int = 0):
    """A two-layer, 32-wide model of ``arch`` on the arithmetic vocabulary (no training)."""
    # imported here: this file sets the environment above before any project module loads
    from trainables import models
    from trainables.settings import arithmetic

    cfg = models.ModelConfig(arch=arch, d_model=32, n_layer=2, n_head=2, init_seed=seed)
    return models.build_model(cfg, len(arithmetic.VOCAB), arithmetic.SEQ_LEN)


def tiny_search(tmp_path: Path, name: str, *extra: str, cache: str | None = None) -> list[str]:
    """The command of ``python search/run.py`` on the TINY config, results and stage cache under
    ``tmp_path`` (or the cache at ``cache``), then ``extra`` arguments."""
    sets = [a for o in TINY for a in ("--set", o)]
    return [sys.executable, str(ROOT / "search" / "run.py"), "--storage", str(tmp_path / "results"), "--name", name,
            *sets, "--set", f"cache_dir={cache or tmp_path / 'cache'}", *extra]


def forget_cluster(address: str) -> None:
    """Remove Ray's "current cluster" file where it names ``address``, a test cluster now
    stopped: a later ``ray.init()`` would otherwise try to join it."""
    import ray

    current = Path(ray._private.utils.get_ray_address_file(None))
    if current.exists() and current.read_text().strip() == address:
        current.unlink()


@pytest.fixture(scope="session", autouse=True)
def _calibrated_models(request, tmp_path_factory):
    """When this session runs tests/test_method_defaults.py, its models train in the background
    from the start (tests/calibrated.py)."""
    from tests import calibrated

    if any(getattr(getattr(item, "module", None), "__name__", "") == "tests.test_method_defaults"
           for item in request.session.items):
        calibrated.start(tmp_path_factory.mktemp("calibrated"))
    yield
    calibrated.stop()


@pytest.fixture
def tiny_cfg(tmp_path):
    from search import config

    return config.load(None, [*TINY, f"cache_dir={tmp_path / 'cache'}", f"storage={tmp_path / 'results'}"])


@pytest.fixture(scope="session")
def wmdp_paths(tmp_path_factory):
    """`wmdp` fixtures in the hub schemas and tiny GPT-2 / Llama / Gemma-2 models saved by path."""
    from tests import wmdp_fixtures

    return wmdp_fixtures.make(tmp_path_factory.mktemp("wmdp"))
