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


# Test modules that run first under pytest-xdist (`-n 2`): the longest, so that the two
# workers end together instead of one waiting on a long module drawn last (tests/README: times).
FIRST = ["test_end_to_end", "test_method_defaults", "test_ray_job", "test_multinode", "test_fsdp",
         "test_autoscaler", "test_readme", "test_resident", "test_wmdp"]
XDIST = "PYTEST_XDIST_WORKER" in os.environ


def pytest_collection_modifyitems(session, config, items):
    """Under xdist, the longest modules first (the order is the same in every worker)."""
    if XDIST:
        rank = {name: i for i, name in enumerate(FIRST)}
        items.sort(key=lambda item: rank.get(item.module.__name__.rpartition(".")[2], len(FIRST)))


@pytest.fixture(scope="module", autouse=True)
def _ray_lock(request):
    """Under xdist, a module marked ``ray_exclusive`` (tests/test_ray_job.py: the README's
    ``ray stop`` ends every Ray process on the machine) runs while no other module does; every
    other module holds the lock shared. A plain ``pytest`` run takes no lock."""
    if not XDIST:
        yield
        return
    import fcntl

    path = Path(tempfile.gettempdir()) / f"tamper-search-tests-{os.environ.get('PYTEST_XDIST_TESTRUNUID', 'run')}.lock"
    exclusive = request.node.get_closest_marker("ray_exclusive") is not None
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@pytest.fixture(scope="session", autouse=True)
def _calibrated_models(request, tmp_path_factory):
    """When this session runs tests/test_method_defaults.py, its models train in the background
    from the start (tests/calibrated.py). Not under xdist: there the other worker fills the
    cores, and a worker cannot know in advance whether it will draw that module."""
    from tests import calibrated

    if not XDIST and any(getattr(getattr(item, "module", None), "__name__", "") == "tests.test_method_defaults"
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
