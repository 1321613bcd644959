"""Each method at its defaults, on the calibrated arithmetic reference model (configs/quick.yaml):
forget accuracy on V ≤ 0.10 with retain accuracy ≥ 0.80; TAR at its defaults makes its
random-mapping safeguard harder to relearn. Slow: it pre-trains the reference."""

import pytest

from search import config
from search.stages import Runner, run_stage
from search.adversary import attack_spec
from search.trial import pretrain_spec, unlearn_spec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    cfg = config.load()
    runner = Runner(tmp_path_factory.mktemp("cache"), executor="local")
    ref = run_stage(runner, "pretrain", pretrain_spec(cfg, "reference"))
    assert ref.result["metrics"]["retain_acc"] >= 0.9 and ref.result["metrics"]["forget_acc"] >= 0.9
    return cfg, runner, ref


@pytest.mark.parametrize("method", ["graddiff", "maxent", "npo", "rmu", "random_mapping"])
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


def test_tar_resists_an_attack_of_its_training_adversarys_kind(reference):
    # The adversary TAR trains against (defaults): AdamW at lr 3.3e-4…3e-3, K = 16 steps on
    # forget data. An attack of that kind — lr 1e-3, 20 steps — recovers 0.32–0.43 V accuracy
    # from the safeguard and 0.09–0.12 from the TAR model (seeds 0 and 1); longer attacks recover
    # more from both (see README), so the margin is asserted for this kind only.
    cfg, runner, ref = reference
    safeguard = run_stage(runner, "unlearn", unlearn_spec(cfg, "random_mapping", {}), {"model": ref})
    tarred = run_stage(runner, "tar", unlearn_spec(cfg, "tar", {}), {"model": safeguard, "reference": ref})
    assert tarred.result["metrics"]["retain_acc"] >= 0.80
    spec = attack_spec(cfg, {"lr": 1e-3, "steps": 20, "eval_every": 10}, seed=1)
    attacked = {name: run_stage(runner, "attack", spec, {"model": m}).result["metrics"]["forget_acc_max"]
                for name, m in (("safeguard", safeguard), ("tar", tarred))}
    assert attacked["tar"] <= attacked["safeguard"] - 0.15, attacked
