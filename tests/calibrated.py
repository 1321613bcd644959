"""The models of tests/test_method_defaults.py, and their training ahead of time in the background.

That module checks each method at its defaults on the calibrated arithmetic reference
(configs/quick.yaml, seed 0). Its models are most of the suite's plain compute: the reference's
3,000-step pre-training, then every method, TAR and two attacks, about 4 minutes on 2 cores that
depend on nothing else in the suite. A session that will run the module calls ``start`` first:
a separate process trains them with one torch thread into the session's cache folder while the
other tests run, and fills the gaps their process start-ups leave on the cores. The module's
fixture waits for it (``wait``) and then builds the same models through the stage cache, so each
``run_stage`` call finds its entry (the same specs give the same keys) and the module asserts on
what the background trained. Without ``start`` (or after it failed, which ``wait`` reports) the
module trains them itself.

One thread, not two: the bounds in test_method_defaults.py were measured with 1 and 2 threads.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from search import config
from search.adversary import attack_spec
from search.runner import Runner, StageRef, run_stage
from search.trial import common_spec, pretrain_spec, method_spec
from trainables import methods as registry
from search.defender_config import resolve

# Each method of the registry at its defaults on the reference (GradAscent: see its test).
METHODS = list(registry.METHODS)
# The attack of TAR's test: its training adversary's kind (AdamW, lr 1e-3, 20 steps).
TAR_ATTACK = {"lr": 1e-3, "steps": 20, "eval_every": 10}


def runner(cache_dir: Path | str) -> Runner:
    """Stages in this process, cached under ``cache_dir``."""
    return Runner(cache_dir, executor="local")


def reference(run: Runner) -> StageRef:
    """The quick experiment's reference model at seed 0."""
    return run_stage(run, "pretrain", pretrain_spec(config.load(), "reference"))


def unlearned(run: Runner, ref: StageRef, method: str) -> StageRef:
    """``method`` at its defaults on the reference."""
    return run_stage(run, "unlearn", method_spec(config.load(), method, {}), {"model": ref})


def tar_attacked(run: Runner, ref: StageRef) -> tuple[StageRef, dict[str, float]]:
    """TAR at its defaults on its random-mapping safeguard, and V's attacked accuracy of the
    safeguard and of the TAR model under ``TAR_ATTACK``."""
    cfg = config.load()
    safeguard = unlearned(run, ref, "random_mapping")
    tarred = run_stage(run, "tar", method_spec(cfg, "tar", {}), {"model": safeguard, "reference": ref})
    spec = attack_spec(cfg, TAR_ATTACK, seed=1)
    attacked = {name: run_stage(run, "attack", spec, {"model": m}).result["metrics"]["forget_acc_max"]
                for name, m in (("safeguard", safeguard), ("tar", tarred))}
    return tarred, attacked


def lat_on_rmu(run: Runner, ref: StageRef) -> tuple[list, StageRef]:
    """LAT at its defaults on an RMU safeguard at its defaults (``defender.safeguard``): the
    pipeline's steps and LAT's model."""
    on_rmu = config.load(None, ["defender.method=lat", "defender.safeguard={method: rmu}"])
    steps = resolve(on_rmu.defender, common_spec(on_rmu), {}).steps
    safeguard, lat = steps
    guarded = run_stage(run, safeguard.stage, safeguard.spec, {"model": ref})
    return steps, run_stage(run, lat.stage, lat.spec, {"model": guarded})


def train_all(cache_dir: Path | str) -> None:
    """Every model of the module, in the order it asks for them."""
    run = runner(cache_dir)
    ref = reference(run)
    for method in METHODS:
        unlearned(run, ref, method)
    tar_attacked(run, ref)
    lat_on_rmu(run, ref)


_started: dict = {}


def start(cache_dir: Path) -> None:
    """Train every model of the module in a background process into ``cache_dir``."""
    log = open(cache_dir.parent / f"{cache_dir.name}.log", "w+")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "tests.calibrated", str(cache_dir)], cwd=Path(__file__).parent.parent,
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    _started.update(cache_dir=cache_dir, proc=proc, log=log)


def wait() -> Path | None:
    """The cache folder the background process filled, once it has ended (None if none was
    started); raises with its output if it failed."""
    if not _started:
        return None
    proc, log = _started["proc"], _started["log"]
    if proc.wait() != 0:
        log.seek(0)
        raise RuntimeError(f"training the calibrated models failed (exit {proc.returncode}):\n{log.read()[-4000:]}")
    return _started["cache_dir"]


def stop() -> None:
    """End the background process if it still runs (a session cut short)."""
    if _started:
        if _started["proc"].poll() is None:
            _started["proc"].kill()
            _started["proc"].wait()
        _started["log"].close()
        _started.clear()


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    train_all(sys.argv[1])
