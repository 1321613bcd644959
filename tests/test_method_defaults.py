"""Each method at its defaults, on the calibrated arithmetic reference model (configs/quick.yaml):
forget accuracy on V ≤ 0.10 with retain accuracy ≥ 0.80. Slow: it pre-trains the reference."""

import pytest

from search import config
from search.stages import Runner, run_stage
from search.trial import pretrain_spec, unlearn_spec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    cfg = config.load()
    runner = Runner(tmp_path_factory.mktemp("cache"), executor="local")
    ref = run_stage(runner, "pretrain", pretrain_spec(cfg, "reference"))
    assert ref.result["metrics"]["retain_acc"] >= 0.9 and ref.result["metrics"]["forget_acc"] >= 0.9
    return cfg, runner, ref


@pytest.mark.parametrize("method", ["graddiff", "maxent", "npo", "rmu"])
def test_default_unlearns_and_keeps_retain(reference, method):
    cfg, runner, ref = reference
    out = run_stage(runner, "unlearn", unlearn_spec(cfg, method, {}), {"model": ref})
    m = out.result["metrics"]
    assert m["forget_acc"] <= 0.10 and m["retain_acc"] >= 0.80, m


def test_gradascent_default_unlearns_part_of_the_facts(reference):
    # GradAscent has no retain term: on this setting retain collapses before V reaches 0.10 (see
    # trainables/methods/gradascent.py). Its default is the gentle end; it must still unlearn.
    cfg, runner, ref = reference
    out = run_stage(runner, "unlearn", unlearn_spec(cfg, "gradascent", {}), {"model": ref})
    m = out.result["metrics"]
    assert m["forget_acc"] <= ref.result["metrics"]["forget_acc"] - 0.3 and m["retain_acc"] >= 0.80, m
