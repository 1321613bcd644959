"""Each method at its defaults, on the calibrated arithmetic reference model (configs/quick.yaml,
seed 0): forget accuracy on V ≤ 0.10 with retain accuracy ≥ 0.80 (LAT also on an RMU
safeguard); TAR at its defaults makes its random-mapping safeguard harder to relearn. Slow: it
trains the reference and every model (in the background from the session's start when it can:
tests/calibrated.py).

Trained models differ across CPUs and thread counts (float reduction order), so every bound is
set from the spread measured at seed 0 with 1 and 2 torch threads on two CPU models (and seed 1
for context), with a margin; the figures are in the comments and in docs/defences.md."""

import pytest

from search import config
from search.trial import method_spec
from tests import calibrated

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    # The models were trained ahead in the background (tests/calibrated.py) when this session
    # started one; else they are trained here, as the tests ask for them.
    run = calibrated.runner(calibrated.wait() or tmp_path_factory.mktemp("cache"))
    ref = calibrated.reference(run)
    assert ref.result["metrics"]["retain_acc"] >= 0.9 and ref.result["metrics"]["forget_acc"] >= 0.9
    return run, ref


@pytest.mark.parametrize("method", [m for m in calibrated.METHODS if m != "gradascent"])
def test_default_unlearns_and_keeps_retain(reference, method):
    m = calibrated.unlearned(*reference, method).result["metrics"]
    assert m["forget_acc"] <= 0.10 and m["retain_acc"] >= 0.80, m


def test_gradascent_default_unlearns_part_of_the_facts(reference):
    # GradAscent has no retain term: on this setting retain collapses before V reaches 0.10 (see
    # trainables/methods/gradascent.py). Its default is the gentle end; it must still unlearn.
    # Measured V drop 0.43 / 0.48 (seed 0, 2 / 1 threads), 0.89 (seed 1). Its retain accuracy is
    # not controlled: 0.77 / 0.94 / 0.33 in the same runs, so it is not asserted.
    run, ref = reference
    m = calibrated.unlearned(run, ref, "gradascent").result["metrics"]
    assert m["forget_acc"] <= ref.result["metrics"]["forget_acc"] - 0.3, m


def test_tar_resists_an_attack_of_its_training_adversarys_kind(reference):
    # The adversary TAR trains against (defaults): AdamW at lr 3.3e-4…3e-3, K = 16 steps on
    # forget data. An attack of that kind — lr 1e-3, 20 steps — recovers 0.32–0.45 V accuracy
    # from the safeguard and 0.08–0.17 from the TAR model (seeds 0 and 1 × 1 and 2 threads,
    # bench/method_calibration.py --methods tar, with the fused GELU; margin 0.16–0.31); longer
    # attacks recover more from both (see docs/defences.md), so the margin is asserted for this
    # kind only, at 0.10. TAR's retain accuracy: 0.83–0.96 in the same runs.
    tarred, attacked = calibrated.tar_attacked(*reference)
    assert tarred.result["metrics"]["retain_acc"] >= 0.60
    assert attacked["tar"] <= attacked["safeguard"] - 0.10, attacked


def test_lat_on_an_rmu_safeguard_keeps_it_unlearned_and_retains(reference):
    # LAT at its defaults on top of RMU at its defaults (the defender's pipeline with
    # defender.safeguard, as the paper's RMU + LAT): V 0.000 with retain 0.947-0.995 (seeds 0
    # and 1, 1 and 2 threads); the RMU safeguard alone: V 0.005-0.068, retain 0.91.
    (safeguard, _), lat = calibrated.lat_on_rmu(*reference)
    assert safeguard.spec == method_spec(config.load(), "rmu", {})  # the RMU model of the test above (cached)
    m = lat.result["metrics"]
    assert m["forget_acc"] <= 0.10 and m["retain_acc"] >= 0.80, m
