"""The Tune + Optuna path end to end at a tiny budget, through the real entry point."""

import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest

from analysis.report import front_mask
from search import cache, retention, tables
from tests.conftest import ROOT, tiny_search
from search.attack_families import needs_context, training_free
from trainables.families import FAMILIES

pytestmark = pytest.mark.slow


# One trial at a time: a trial actor imports torch and transformers (~7 CPU-s), and the searches
# here run side by side on 2 cores, so a second actor per search costs more than it overlaps
# (a tiny search alone: 68 → 48 CPU-s, 46 → 36 s, with RAY_prestart_worker_first_driver=0).
ONE_AT_A_TIME = ["--set", "search.max_concurrent=1"]


def _run(tmp_path, *extra, env=None):
    cmd = tiny_search(tmp_path, "e2e", *ONE_AT_A_TIME, *extra)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env=None if env is None else {**os.environ, **env})


TOKEN = "wandb-secret-0123456789abcdef0123456789abcdef"

# Verification of the front is what the first search checks; the others test other things and
# skip it (a fifth of a tiny search's time).
NO_VERIFY = ["--set", "verify.enabled=false"]
# The searches of the tests below that depend on nothing else: (arguments, environment).
SEARCHES = {
    "test_search_writes_all_tables_and_resumes": (["--set", "tracking.backend=mlflow", "--set", "cache.keep=front"], {}),
    "test_several_methods_in_one_search_and_one_plot": (
        ["--set", "defender.method=[graddiff,maxent,npo,rmu]", "--set", "search.trials=4",
         "--set", "search.sampler=random", "--set", "attack.budget=1", "--set", "search.retain_floor=0.5",
         "--set", "tracking.backend=wandb", "--set", "attack.families=null", "--set", "cache.keep=front", *NO_VERIFY], {"WANDB_API_KEY": TOKEN}),
    "test_undo_alpha_sweep_through_the_driver": (
        ["--config", str(ROOT / "configs" / "undo_arithmetic.yaml"),
         "--set", "defender.undo.space.alpha={values: [0.3, 0.9]}", "--set", "search.trials=2",
         "--set", "defender.undo.params.steps=10", "--set", "defender.undo.loop.eval_every=5",
         "--set", "defender.params.steps=5", *NO_VERIFY], {}),
    "test_tar_search_over_the_inner_loop_adversary": (
        ["--config", str(ROOT / "configs" / "tar_arithmetic.yaml"), "--set", "search.trials=2",
         "--set", "defender.params={lr: 3.0e-4, steps: 3}", "--set", "defender.space.inner_steps=[4, 8]",
         "--set", "defender.safeguard.params.steps=5", "--set", "defender.params.adversary_batch_size=8", *NO_VERIFY], {}),
}


@pytest.fixture(scope="module")
def searches(request, tmp_path_factory):
    """The selected tests' searches, all started when the module starts, each its own
    ``python search/run.py`` with its own Ray instance as on a laptop. Most of a tiny search is
    process start-ups and imports that leave a core idle; side by side they overlap. The ctrl-c
    and full-disk scenarios (drivers one after another, one trial at a time: half a core idle)
    run beside them in threads. ``searches(name)`` waits for the search of test ``name`` and
    returns its folder and its finished process (stdout, stderr, code), or for the ctrl-c
    test what its scenario observed."""
    selected = {item.originalname for item in request.session.items if item.module is request.module}
    logs = tmp_path_factory.mktemp("logs")
    started = {}
    for test, (extra, env) in SEARCHES.items():
        if test in selected:
            folder = tmp_path_factory.mktemp(test.removeprefix("test_")[:24])
            out, err = open(logs / f"{test}.out", "w+"), open(logs / f"{test}.err", "w+")  # a pipe could fill up
            proc = subprocess.Popen(tiny_search(folder, "e2e", *ONE_AT_A_TIME, *extra), cwd=folder, stdout=out, stderr=err,
                                    text=True, env={**os.environ, **env}, start_new_session=True)
            started[test] = (folder, proc, out, err)
    procs = [proc for _, proc, _, _ in started.values()]

    def scenario(run, later: bool, folder):
        # Ray gives a starting node 30 s (hard-coded) to register: on 2 cores, six instances
        # starting at once can miss it, so a later scenario waits for a search to finish
        while later and procs and all(proc.poll() is None for proc in procs):
            time.sleep(1)
        return run(folder)

    pool = ThreadPoolExecutor(len(SCENARIOS))
    scenarios = {test: pool.submit(scenario, run, later, tmp_path_factory.mktemp(test.removeprefix("test_")[:24]))
                 for test, (run, later) in SCENARIOS.items() if test in selected}

    def finished(test: str) -> tuple:
        if test in SCENARIOS:
            return scenarios[test].result(timeout=1200)
        folder, proc, out, err = started[test]
        proc.wait(timeout=900)
        out.seek(0), err.seek(0)
        return folder, subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())

    yield finished
    for _, proc, out, err in started.values():
        if proc.poll() is None:  # a test failed before waiting: end the driver and its Ray instance
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        out.close(), err.close()
    pool.shutdown(wait=True)  # the scenario ends its own drivers, also when it fails


@pytest.fixture
def search(searches, request):
    """This test's search from ``searches``, finished: (its folder, its process)."""
    return searches(request.node.originalname)


def test_search_writes_all_tables_and_resumes(search):
    tmp_path, out = search
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Pareto set" in out.stdout
    exp = tmp_path / "results" / "e2e"
    trials = pd.read_parquet(exp / tables.TRIALS)
    attacks = pd.read_parquet(exp / tables.ATTACKS)
    curves = pd.read_parquet(exp / tables.CURVES)
    assert list(trials.columns[: len(tables.TRIAL_COLUMNS)]) == list(tables.TRIAL_COLUMNS)
    assert {"param.lr", "param.steps", "param.lam"} <= set(trials.columns)
    assert {"attack.lr", "attack.steps", "attack.kind"} <= set(attacks.columns)
    defenders = trials[trials["kind"] == "defender"]
    assert len(defenders) == 2 and (defenders["status"] == "ok").all()
    assert set(trials.loc[trials["kind"] == "baseline", "method"]) == {"pure", "reference"}
    # 2 searched attacks + 1 re-run of the strongest (TINY: attack.reseeds=1), then the
    # verification attacker's against every model on the front (after the search: TPE learns
    # from scores only after 10 trials), its rows and FLOPs the model's too
    search = attacks[attacks["attack.role"] == "search"]
    assert len(search) == 3 * len(trials)
    assert (search.groupby("trial_id")["attack.source"].agg(lambda s: sorted(s)) .map(tuple) == ("reseed", "search", "search")).all()
    t = trials.set_index("trial_id")
    # (aligned on trial id: the tables' row order is the order trials finished in)
    assert (t["attacks_run"] == attacks.groupby("trial_id").size().reindex(t.index)).all()
    on_front = set(trials.loc[front_mask(trials), "trial_id"])
    assert on_front and t.loc[list(on_front), "verified"].all()
    verified = set(attacks.loc[attacks["attack.role"] == "verify", "trial_id"])
    assert verified == set(t.index[t["verified"].fillna(False).astype(bool)]) <= set(t.index[t["kind"] == "defender"])
    assert (t.loc[list(verified), "verified_in"] == "sweep").all()
    assert (t["flops.attack"] == attacks.groupby("trial_id")["flops"].sum().reindex(t.index)).all()
    assert (t["forget_acc_attacked"] >= t["forget_acc_attacked_search"]).all()
    # the attack is chosen on V_sel over what was searched, and reported on V_rep over its seeds
    by_search = t[t["attacked_by"] == "search"]
    searched = search[search["attack.source"] == "search"]
    assert (by_search["forget_acc_attacked_sel"] == searched.groupby("trial_id")["forget_acc_sel_max"].max()[by_search.index]).all()
    assert all(attacks.set_index("attack_id").loc[a, "trial_id"] == tid for tid, a in t["best_attack_id"].items())
    assert ((t["forget_acc_attacked_lo"] <= t["forget_acc_attacked"]) & (t["forget_acc_attacked"] <= t["forget_acc_attacked_hi"])).all()
    assert (by_search["attacked_seeds"] == 2).all() and (t["n_report"] + t["n_select"] == 400).all()
    assert "verifying the front" in out.stdout and "by the verification attacker" in out.stdout
    assert "attacked " in out.stdout and "(sel " in out.stdout  # progress lines show interval and V_sel
    live = [line for line in out.stdout.splitlines() if "] progress: " in line]  # stdout is a pipe: plain
    assert live and not any("\r" in line or "\x1b" in line for line in live)
    assert re.search(r"progress: trials 2/2 done, 0 running, 0 queued \| attacks \d+ done", live[-1]), live
    assert set(curves["stage"]) == {"pretrain", "unlearn", "attack"}
    assert curves.loc[curves["stage"] == "unlearn", "attack_id"].isna().all()
    assert (exp / "pareto.png").stat().st_size > 10_000
    _studies_match_the_tables(exp, trials, attacks)

    _mlflow_holds_each_trial_and_its_attacks(exp, trials, attacks)

    _cache_holds_the_front_and_the_baselines(tmp_path / "cache", trials, attacks, out.stdout)

    again = _run(tmp_path, "--set", "tracking.backend=mlflow", "--resume")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "nothing to resume, the run was complete" in again.stdout and "Pareto set" in again.stdout
    resumed = pd.read_parquet(exp / tables.TRIALS)
    assert sorted(resumed["trial_id"]) == sorted(trials["trial_id"])  # nothing run or counted twice
    _mlflow_holds_each_trial_and_its_attacks(exp, resumed, pd.read_parquet(exp / tables.ATTACKS))
    _studies_match_the_tables(exp, resumed, pd.read_parquet(exp / tables.ATTACKS))

    report = subprocess.run([sys.executable, "-m", "analysis", str(exp), "--out", str(tmp_path / "fig")],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert report.returncode == 0 and "Pareto set" in report.stdout
    assert (tmp_path / "fig" / "pareto.png").exists()
    md = (tmp_path / "fig" / "report.md").read_text()
    assert all(name in md for name in resumed["attack_study"])  # the report names each model's study
    studies = subprocess.run([sys.executable, "-m", "analysis", str(exp / "studies.journal")],
                             capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert studies.returncode == 0 and "defender: 2 complete" in studies.stdout, studies.stderr
    assert all(f"{name}: 2 complete" in studies.stdout for name in resumed["attack_study"])


def _cache_holds_the_front_and_the_baselines(cache_dir, trials, attacks, stdout) -> None:
    """After a search with ``cache.keep: front``: the cache holds the front's models and the
    baselines', and every attack result (no weights); the other trials' models are gone, their
    recipes kept; the experiment's record in the cache keeps exactly those models."""
    cached = retention.entries(cache_dir)
    with_files = {e.key for e in cached if e.has_files}
    on_front = set(trials.loc[front_mask(trials), "model_key"])
    baselines = set(trials.loc[trials["kind"] == "baseline", "model_key"])
    assert with_files == on_front | baselines
    gone = set(trials.loc[trials["kind"] == "defender", "model_key"]) - with_files
    assert all(cache.recipe(cache_dir, k) for k in gone)
    assert (f"deleted {len(gone)} models off the front" in stdout) == bool(gone)
    assert {FAMILIES[f].STAGE for f in attacks["attack.family"]} <= {e.stage for e in cached if not e.has_files}
    record = retention.records(cache_dir)[0]
    assert record["state"] == "finished" and set(record["keep"]) == on_front | baselines


def _mlflow_holds_each_trial_and_its_attacks(exp, trials, attacks) -> None:
    """Read back by MLflow's own client from the store the UI opens: one run per defender trial
    with the trial's metrics and parameters, one nested run per attack."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{exp / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("quick")
    assert experiment.artifact_location == (exp / "mlartifacts").as_uri()  # not the driver's cwd
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = {r.info.run_id: r for r in runs if "mlflow.parentRunId" not in r.data.tags}
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    defenders = trials[trials["kind"] == "defender"].set_index("trial_id")
    assert len(parents) == len(defenders) and all(r.info.status == "FINISHED" for r in runs)
    # a trial's run holds what it reported; the sweep's verification comes later (tables only)
    sweep = set(defenders.index[defenders["verified_in"] == "sweep"])
    logged = attacks[(attacks["attack.role"] == "search") | ~attacks["trial_id"].isin(sweep)]
    for run in parents.values():
        tid = run.data.tags["trial_id"]
        row = defenders.loc[tid]
        assert run.data.metrics["retain_acc"] == pytest.approx(row["retain_acc"])
        reported = row["forget_acc_attacked_search"] if tid in sweep else row["forget_acc_attacked"]
        assert run.data.metrics["attacked"] == pytest.approx(reported)
        assert float(run.data.params["lam"]) == pytest.approx(row["param.lam"])
        mine = sorted(c.data.tags["mlflow.runName"] for c in children if c.data.tags["mlflow.parentRunId"] == run.info.run_id)
        assert mine == sorted(logged.loc[logged["trial_id"] == tid, "attack_id"])
    first = attacks.set_index("attack_id")
    for child in children:
        a = first.loc[child.data.tags["mlflow.runName"]]
        assert child.data.metrics["forget_acc_sel_max"] == pytest.approx(a["forget_acc_sel_max"])
        assert float(child.data.params["attack.lr"]) == pytest.approx(a["attack.lr"])


def _studies_match_the_tables(exp, trials, attacks) -> None:
    """The Optuna studies reloaded from the experiment's journal by a second reader (Optuna
    itself): the outer study holds each defender trial once, complete, with its two objective
    values; each model's adversary study holds its searched attacks with their V_sel scores."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    store = JournalStorage(JournalFileBackend(str(exp / "studies.journal")))
    outer = optuna.load_study(study_name="defender", storage=store)
    defenders = trials[trials["kind"] == "defender"]
    done = outer.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(outer.trials) == len(done) == len(defenders)
    assert sorted(t.values[0] for t in done) == pytest.approx(sorted(defenders["retain_acc"]))
    lrs = [v for t in done for k, v in t.params.items() if k.split(".")[-1] == "lr"]
    assert sorted(lrs) == pytest.approx(sorted(defenders["param.lr"]))
    for _, row in trials.iterrows():
        study = optuna.load_study(study_name=row["attack_study"], storage=store)
        searched = attacks[(attacks["trial_id"] == row["trial_id"]) & (attacks["attack.source"] == "search")
                           & (attacks["attack.role"] == "search")]
        assert sorted(t.value for t in study.trials) == pytest.approx(sorted(searched["forget_acc_sel_max"]))


def test_several_methods_in_one_search_and_one_plot(search):
    """Also W&B tracking, offline, with a token in the environment that nothing may write."""
    token = TOKEN
    tmp_path, out = search
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    exp = tmp_path / "results" / "e2e"
    trials = pd.read_parquet(exp / tables.TRIALS)
    defenders = trials[trials["kind"] == "defender"]
    runs = sorted((exp / "wandb").glob("offline-run-*"))
    assert sorted(r.name.rsplit("-", 1)[1] for r in runs) == sorted(defenders["trial_id"])  # W&B ids: trial ids
    assert all(list(r.glob("*.wandb")) for r in runs)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not [p for p in written if token.encode() in p.read_bytes()] and token not in out.stdout + out.stderr
    assert len(defenders) == 4 and (defenders["status"] == "ok").all()
    assert set(defenders["method"]) <= {"graddiff", "maxent", "npo", "rmu"} and defenders["method"].nunique() >= 2
    assert (defenders["feasible"] == (defenders["retain_acc"] >= 0.5)).all()
    assert (tmp_path / "results" / "e2e" / "pareto.png").exists()
    # every attack family (attack.families: null, all): each in the attack rows, its worst case
    # per model in the trials, the overall worst case the strongest of them
    attacks = pd.read_parquet(exp / tables.ATTACKS)
    ran = set(attacks["attack.family"])  # every training-free family's informed start runs; then the budget's
    takes = {f for f in FAMILIES if not needs_context(f)}  # a fresh GPT-2: no positions before a question
    assert {f for f in takes if training_free(f)} | {"finetune"} <= ran <= takes
    assert attacks.loc[attacks["attack.family"] == "quantize", "attack.quantize_scheme"].notna().all()
    fams = trials[[f"forget_acc_attacked.{f}" for f in ran]]
    ok = trials["status"] == "ok"
    assert (fams[ok].max(axis=1) >= trials.loc[ok, "forget_acc_attacked"] - 1e-12).all()
    report = subprocess.run([sys.executable, "-m", "analysis", str(exp), "--out", str(tmp_path / "fig")],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert report.returncode == 0, report.stderr
    assert "Which attack family breaks which model" in (tmp_path / "fig" / "report.md").read_text()
    # cache.keep: front, every trial below the retain floor: no front, every trial's model deleted
    assert not front_mask(trials).any()
    _cache_holds_the_front_and_the_baselines(tmp_path / "cache", trials, attacks, out.stdout)


def test_undo_alpha_sweep_through_the_driver(search):
    """UNDO from config through the grid sweep: one row per α, a suppressed baseline whose
    attacks the trials reuse, robustness in the table and in the report."""
    tmp_path, out = search
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    exp = tmp_path / "results" / "e2e"
    trials = pd.read_parquet(exp / tables.TRIALS)
    defenders = trials[trials["kind"] == "defender"].sort_values("param.undo.alpha")
    assert list(defenders["param.undo.alpha"]) == [0.3, 0.9] and (defenders["status"] == "ok").all()
    assert set(trials.loc[trials["kind"] == "baseline", "method"]) == {"pure", "reference", "suppressed"}
    sup = trials.set_index("trial_id").loc["suppressed"]
    assert (defenders["suppressed_key"] == sup["model_key"]).all()  # one teacher for every α
    assert (defenders["forget_acc_attacked_suppressed"] == sup["forget_acc_attacked"]).all()
    assert (defenders["flops.distill"] >= 0).all() and "robustness" in trials
    assert {"distill", "unlearn"} <= set(pd.read_parquet(exp / tables.CURVES)["stage"])
    report = subprocess.run([sys.executable, "-m", "analysis", str(exp), "--out", str(tmp_path / "fig")],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert report.returncode == 0 and "Robustness vs. compute (robustified models" in report.stdout
    assert (tmp_path / "fig" / "compute.png").exists()


def test_tar_search_over_the_inner_loop_adversary(search):
    """TAR from config through the Optuna outer search: the inner-loop adversary's settings are
    searched dimensions, the safeguard is a baseline every trial shares."""
    tmp_path, out = search
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    exp = tmp_path / "results" / "e2e"
    trials = pd.read_parquet(exp / tables.TRIALS)
    defenders = trials[trials["kind"] == "defender"]
    assert len(defenders) == 2 and (defenders["status"] == "ok").all() and set(defenders["method"]) == {"tar"}
    assert defenders["param.inner_steps"].between(4, 8).all() and defenders["param.grad_scale"].between(1, 16).all()
    sup = trials.set_index("trial_id").loc["suppressed"]
    assert (defenders["suppressed_key"] == sup["model_key"]).all() and (defenders["flops.tar"] > 0).all()
    assert "tar" in set(pd.read_parquet(exp / tables.CURVES)["stage"])
    report = subprocess.run([sys.executable, "-m", "analysis", str(exp), "--out", str(tmp_path / "fig")],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert report.returncode == 0 and "Robustness vs. compute (robustified models" in report.stdout


CTRL_C = "test_ctrl_c_then_a_killed_driver_then_resume_lands_every_trial_once"
GRID = ["--set", "search.sampler=grid", "--set", "search.trials=4", "--set", "search.max_concurrent=1",
        "--set", "defender.params={steps: 5, lam: 1.0}",
        "--set", "defender.space.lr={values: [1.0e-3, 1.0e+30, 2.0e-3, 3.0e-3]}", *NO_VERIFY]


def _stopped_twice_then_resumed(tmp_path) -> dict:
    """The ctrl-c test's drivers, one after another (run in the ``searches`` fixture's thread):
    what each stop left behind, for the test to assert on."""
    import json
    import time

    cmd = tiny_search(tmp_path, "e2e", *GRID)
    exp = tmp_path / "results" / "e2e"
    seen: dict = {"tmp_path": tmp_path, "exp": exp}

    def landed() -> set[str]:
        return {p.stem for p in (exp / "parts").glob("*.json")} - {"pure", "reference"} if (exp / "parts").exists() else set()

    def wait_for(n: int, proc: subprocess.Popen) -> None:
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None and len(landed()) < n:
            time.sleep(0.2)

    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(1, proc)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    seen["interrupted"] = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    seen["status_after_interrupt"] = json.loads((exp / "run.json").read_text())["run_status"]
    seen["first"] = first = landed()
    if not 1 <= len(first) < 4:
        return seen  # the test fails on it; nothing to resume

    proc = subprocess.Popen([*cmd, "--resume"], cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(len(first) + 1, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray processes it started
        proc.wait()
    seen["killed"] = landed()
    seen["again"] = _run(tmp_path, *GRID, "--resume")
    return seen


def test_ctrl_c_then_a_killed_driver_then_resume_lands_every_trial_once(search):
    """One search, stopped twice. SIGINT (Ctrl-C) after the first trial landed: Ray Tune stops
    gracefully, the driver writes what finished, marks the run interrupted and exits 130.
    ``--resume``, then SIGKILL of that driver (and the Ray instance it started) after another
    trial landed. ``--resume`` again finishes the search: each trial exactly once, the planted
    NaN trial (a learning rate that blows the weights up) a failed row with its error, the
    others ok, the run marked complete."""
    import json

    seen = search
    stopped, exp = seen["interrupted"], seen["exp"]
    assert stopped.returncode == 130, stopped.stdout[-2000:] + stopped.stderr[-2000:]
    assert "interrupted" in (stopped.stdout + stopped.stderr) and "--resume" in (stopped.stdout + stopped.stderr)
    assert seen["status_after_interrupt"] == "interrupted"
    first = seen["first"]
    assert 1 <= len(first) < 4, first
    assert len(first) < len(seen["killed"]) < 4, seen["killed"]  # killed mid-search, after progress

    again = seen["again"]
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stdout.strip().splitlines()[-1].endswith("1 of 4 defender trials failed")
    assert json.loads((exp / "run.json").read_text())["run_status"] == "complete"
    trials = pd.read_parquet(exp / tables.TRIALS)
    assert trials["trial_id"].is_unique
    defenders = trials[trials["kind"] == "defender"]
    assert sorted(defenders["param.lr"]) == [1e-3, 2e-3, 3e-3, 1e30]  # every grid point once
    failed = defenders[defenders["status"] == "error"]
    assert list(failed["param.lr"]) == [1e30] and "NonFiniteLoss" in failed["error"].iloc[0]
    assert (defenders.loc[defenders["param.lr"] < 1, "status"] == "ok").all()
    assert set(trials.loc[trials["kind"] == "baseline", "method"]) == {"pure", "reference"}
    # every adversary study reloads from the journal with the attacks its trial searched
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    store = JournalStorage(JournalFileBackend(str(exp / "studies.journal")))
    attacks = pd.read_parquet(exp / tables.ATTACKS)
    for _, row in trials[trials["status"] == "ok"].iterrows():
        study = optuna.load_study(study_name=row["attack_study"], storage=store)
        searched = attacks[(attacks["trial_id"] == row["trial_id"]) & (attacks["attack.source"] == "search")
                           & (attacks["attack.role"] == "search")]
        assert sorted(t.value for t in study.trials) == pytest.approx(sorted(searched["forget_acc_sel_max"]))


def _full_disk_then_resumed(tmp_path) -> tuple:
    """A search whose disk fills up at a stage commit, then ``--resume`` once there is space:
    (folder, the first run, the cache's entry folders after it, the resumed run)."""
    env = {"PYTHONPATH": str(ROOT / "tests" / "full_disk"), "TAMPER_SEARCH_TEST_SPACE": str(tmp_path / "space")}
    first = _run(tmp_path, *NO_VERIFY, env=env)
    folders = {d.name: (d / "result.json").is_file() for d in (tmp_path / "cache").iterdir() if not d.name.startswith(".")}
    parts = tables.read_parts(str(tmp_path / "results" / "e2e"))
    (tmp_path / "space").touch()  # space freed
    return tmp_path, first, folders, parts, _run(tmp_path, *NO_VERIFY, "--resume", env=env)


def test_a_full_disk_at_a_stage_commit_stops_the_run_and_resume_completes(search):
    """The disk fills up as a trial commits its unlearned model (``tests/full_disk``: ENOSPC
    injected in every process until ``space`` exists): the run stops with one line naming the
    cache, leaves no half-written entry and no failed row; once there is space, ``--resume``
    runs the stopped trials again and completes."""
    tmp_path, out, folders, parts, again = search
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no space left on the device of" in errors[0], out.stderr[-3000:]
    assert str(tmp_path / "cache" / "unlearn-") in errors[0] and "--name e2e --resume" in errors[0]
    assert folders and all(folders.values())  # every entry whole (a staging folder of the other
    # trial, ended mid-stage as the run stopped, may stay: gc removes those a day old)
    assert not [k for k in folders if k.startswith("unlearn-")]
    assert not [p for p in parts.values() if p["trials"][0]["kind"] == "defender"]  # no failed trial row
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    exp = tmp_path / "results" / "e2e"
    trials = pd.read_parquet(exp / tables.TRIALS)
    defenders = trials[trials["kind"] == "defender"]
    assert len(defenders) == 2 and (defenders["status"] == "ok").all() and defenders["trial_id"].is_unique
    assert set(trials.loc[trials["kind"] == "baseline", "method"]) == {"pure", "reference"}


# test -> (its scenario, whether it starts only once one of the searches has finished)
SCENARIOS = {CTRL_C: (_stopped_twice_then_resumed, False),
             "test_a_full_disk_at_a_stage_commit_stops_the_run_and_resume_completes": (_full_disk_then_resumed, True)}
