"""Hypervolume against hand-computed cases and Monte Carlo; ranks; plots and the report."""

import shutil
import subprocess
import sys

import numpy as np
import pytest

from analysis.hypervolume import hypervolume, hypervolume_progress
from analysis.pareto import pareto_mask, pareto_ranks
from analysis.report import front_mask, load_trials, write_report
from tests.conftest import ROOT
from tests.synthetic import make_experiment


def test_hypervolume_hand_computed():
    ref = np.array([1.0, 1.0])
    assert hypervolume(np.array([[0.5, 0.5]]), ref, [False, False]) == pytest.approx(0.25)
    # union of [0.2,1]x[0.8,1] and [0.5,1]x[0.5,1]: 0.16 + 0.25 − 0.10
    assert hypervolume(np.array([[0.2, 0.8], [0.5, 0.5]]), ref, [False, False]) == pytest.approx(0.31)
    # dominated, duplicate, NaN and out-of-box points add nothing
    pts = np.array([[0.2, 0.8], [0.5, 0.5], [0.6, 0.9], [0.5, 0.5], [np.nan, 0.0], [1.5, 0.1]])
    assert hypervolume(pts, ref, [False, False]) == pytest.approx(0.31)
    # maximised objectives with reference at the origin
    assert hypervolume(np.array([[1.0, 2.0], [2.0, 1.0]]), np.zeros(2), [True, True]) == pytest.approx(3.0)
    # 3-D: two boxes 0.5^3 and [0,1]x[0,1]x[0.75,1]-style overlap, by inclusion–exclusion
    p3 = np.array([[0.5, 0.5, 0.5], [0.0, 0.0, 0.75]])
    assert hypervolume(p3, np.ones(3), [False] * 3) == pytest.approx(0.125 + 0.25 - 0.125 * 0.5)
    assert hypervolume(np.empty((0, 2)), ref, [False, False]) == 0.0


@pytest.mark.parametrize("k", [2, 3, 4])
def test_hypervolume_matches_monte_carlo(k):
    rng = np.random.default_rng(k)
    pts = rng.random((12, k))
    maximize = rng.random(k) < 0.5
    ref = np.where(maximize, 0.0, 1.0)
    exact = hypervolume(pts, ref, maximize)
    samples = rng.random((200_000, k))
    g = np.where(maximize, 1.0, -1.0)
    dominated = ((pts * g)[None, :, :] >= (samples * g)[:, None, :]).all(-1).any(-1)
    estimate = dominated.mean()
    assert exact == pytest.approx(estimate, abs=4 * np.sqrt(estimate * (1 - estimate) / len(samples)) + 1e-3)


def test_hypervolume_progress_is_hypervolume_of_prefixes():
    rng = np.random.default_rng(3)
    pts = rng.random((30, 2))
    pts[5] = np.nan
    ref, mx = np.array([0.0, 1.0]), [True, False]
    prog = hypervolume_progress(pts, ref, mx)
    assert np.all(np.diff(prog) >= 0)
    for i in (0, 4, 5, 17, 29):
        assert prog[i] == pytest.approx(hypervolume(pts[: i + 1], ref, mx))


def brute_ranks(values, maximize, feasible):
    g = np.where(maximize, 1.0, -1.0) * values
    ok = ~np.isnan(g).any(1) & feasible
    ranks = np.zeros(len(g), int)
    left = set(np.flatnonzero(ok))
    r = 0
    while left:
        r += 1
        front = {i for i in left if not any((g[j] >= g[i]).all() and (g[j] > g[i]).any() for j in left)}
        for i in front:
            ranks[i] = r
        left -= front
    return ranks


@pytest.mark.parametrize("seed", range(4))
def test_ranks_and_feasibility_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    v = rng.integers(0, 5, size=(50, 3)).astype(float)
    v[rng.random(50) < 0.1, 0] = np.nan
    mx = rng.random(3) < 0.5
    feasible = rng.random(50) < 0.8
    ranks = pareto_ranks(v, mx, feasible)
    assert (ranks == brute_ranks(v, mx, feasible)).all()
    assert (pareto_mask(v, mx, feasible) == (ranks == 1)).all()


@pytest.mark.parametrize("n_trials", [1, 2000])
def test_report_and_plots_from_one_to_many_trials(tmp_path, n_trials):
    exp = str(tmp_path / "exp")
    make_experiment(exp, n_trials, attacks_per_trial=5 if n_trials > 1 else 3, failed=1 if n_trials > 1 else 0)
    md, page = write_report([exp], tmp_path / "out")
    text = md.read_text()
    assert "### Pareto set" in text and "| trial_id | method | retain_acc |" in text
    assert "Strongest attack per model" in text and "experiment: synthetic" in text
    for name in ("pareto", "compute", "attack_curves", "hypervolume", "attack_progress"):
        for ext in ("png", "svg"):
            size = (tmp_path / "out" / f"{name}.{ext}").stat().st_size
            assert 5_000 < size < 20_000_000, (name, ext, size)
    assert "<table" in page.read_text() and '<svg id="front"' in page.read_text() and "](pareto.png)" in text
    assert page.read_text().count('class="point') == n_trials - (1 if n_trials > 1 else 0) + 2  # ok defenders, baselines
    if n_trials > 1:
        assert "RuntimeError: boom" in text  # failed trial listed with its error


def test_report_compares_experiments_through_the_cli(tmp_path):
    make_experiment(str(tmp_path / "a"), 20, 3, seed=1, name="a")
    make_experiment(str(tmp_path / "b"), 20, 3, seed=2, name="b")
    out = subprocess.run([sys.executable, "-m", "analysis", str(tmp_path / "a"), f"file://{tmp_path}/b",
                          "--out", str(tmp_path / "rep"), "--retain-floor", "0.3"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "## Comparison" in text and "## Experiment a" in text and "## Experiment b" in text
    assert (tmp_path / "rep" / "pareto_all.png").exists()
    bad = subprocess.run([sys.executable, "-m", "analysis", str(tmp_path / "nothing")],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert bad.returncode == 2 and "RESULTS" in bad.stderr


def test_retain_floor_makes_collapsed_trials_infeasible():
    import pandas as pd

    from analysis.report import front_mask

    t = pd.DataFrame({
        "trial_id": ["collapsed", "a", "b", "dominated", "pure"],
        "kind": ["defender"] * 4 + ["baseline"],
        "status": ["ok"] * 5,
        "retain_acc": [0.2, 0.9, 0.95, 0.85, 1.0],
        "forget_acc_attacked": [0.0, 0.3, 0.5, 0.4, 0.0],
    })
    assert front_mask(t).tolist() == [True, True, True, False, False]
    assert front_mask(t, retain_floor=0.5).tolist() == [False, True, True, False, False]


def test_best_so_far_is_the_running_maximum_over_attacks_in_run_order():
    import pandas as pd

    from analysis.plot import best_so_far

    rng = np.random.default_rng(0)
    rows = []
    for tid in ("a", "b"):
        order = rng.permutation(6)
        for seq in order:  # stored out of run order
            rows.append({"trial_id": tid, "seq": int(seq), "status": "ok" if seq != 2 else "pruned",
                         "attack.source": "search", "forget_acc_sel_max": float(rng.random()), "flops": float(seq + 1)})
        rows.append({"trial_id": tid, "seq": 6, "status": "ok", "attack.source": "reseed",
                     "forget_acc_sel_max": 1.0, "flops": 100.0})  # re-runs are not search progress
        rows.append({"trial_id": tid, "seq": 7, "status": "error", "attack.source": "search",
                     "forget_acc_sel_max": None, "flops": None})
    got = best_so_far(pd.DataFrame(rows))
    for tid in ("a", "b"):
        ran = sorted((r for r in rows if r["trial_id"] == tid and r["status"] != "error"
                      and r["attack.source"] == "search"), key=lambda r: r["seq"])
        want_best = [max(r["forget_acc_sel_max"] for r in ran[: i + 1]) for i in range(len(ran))]
        want_flops = [sum(r["flops"] for r in ran[: i + 1]) for i in range(len(ran))]
        mine = got[got["trial_id"] == tid]
        assert mine["best"].tolist() == want_best and mine["flops"].tolist() == want_flops


def test_strongest_attack_table_shows_the_chosen_attack_with_seeds_and_interval(tmp_path):
    from analysis.report import load, strongest_attacks

    exp = str(tmp_path / "exp")
    make_experiment(exp, 4, attacks_per_trial=3, failed=0)
    e = load(exp)
    table = strongest_attacks(e.trials, e.attacks)
    ok = e.trials[e.trials["status"] == "ok"].set_index("trial_id")
    assert set(table["attack_id"]) == set(ok["best_attack_id"])
    for _, r in table.iterrows():
        assert r["forget_acc_attacked"] == ok.loc[r["trial_id"], "forget_acc_attacked"]
        assert r["forget_acc_attacked_lo"] <= r["forget_acc_attacked"] <= r["forget_acc_attacked_hi"]
    assert {"attacked_seeds", "forget_acc_attacked_sel", "best_attack_step"} <= set(table.columns)


def test_robustified_models_are_labelled_and_tabled_from_their_stage_columns():
    """Labels and the robustness table come from the generic ``steps.<stage>`` and ``param.*``
    columns: a distilled model is '<method> + distill' (also when the distillation stopped at
    step 0), TAR is its own method, a shallow model its method; the table's rows follow the
    swept parameter (UNDO's α)."""
    import pandas as pd

    from analysis.plot import _label
    from analysis.report import robustness_table

    def row(tid, kind, method, **kw):
        return {"experiment": "e", "trial_id": tid, "kind": kind, "method": method, "status": "ok",
                "retain_acc": 0.9, "forget_acc": 0.1, "forget_acc_attacked": 0.5, "compute_frac": 0.1,
                "flops.unlearn": 1.0, "flops.distill": 0.0, "flops.tar": 0.0, "suppressed_key": None,
                "param.undo.alpha": None, "steps.distill": None, "steps.tar": None, **kw}

    trials = pd.DataFrame([
        row("t1", "defender", "maxent", **{"flops.distill": 5.0, "suppressed_key": "k", "param.undo.alpha": 0.9, "steps.distill": 40}),
        row("t0", "defender", "maxent", **{"flops.distill": 0.0, "suppressed_key": "k", "param.undo.alpha": 0.3, "steps.distill": 0}),
        row("t2", "defender", "tar", **{"flops.tar": 7.0, "suppressed_key": "s", "steps.tar": 100}),
        row("t3", "defender", "graddiff"),
        row("pure", "baseline", "pure", **{"flops.unlearn": 0.0}),
    ])
    assert _label(trials).tolist() == ["maxent + distill", "maxent + distill", "tar", "graddiff", "pure"]
    table = robustness_table(trials)
    assert table["trial_id"].tolist() == ["t0", "t1", "t2", "pure"]  # by α, then compute
    assert {"param.undo.alpha", "steps.distill"} <= set(table.columns)
    assert robustness_table(trials[trials["suppressed_key"].isna()]) is None


BROWSER = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


@pytest.mark.skipif(BROWSER is None, reason="no headless browser installed (apt-get install chromium)")
def test_report_front_is_interactive_in_a_browser(tmp_path):
    """report.html opened by a real browser: the front is an SVG whose points carry their
    trial's parameters, scores and strongest attack as the hover text, before the configuration."""
    from html.parser import HTMLParser

    exp = str(tmp_path / "exp")
    make_experiment(exp, 12, attacks_per_trial=3, failed=0, verified=True)
    _, page = write_report([exp], tmp_path / "r")
    dom = subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout

    class Points(HTMLParser):  # the DOM as the browser built it: circles inside svg#front, their titles
        def __init__(self):
            super().__init__()
            self.in_svg, self.points, self.current, self.order = False, [], None, []

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            self.order.append(a.get("id") or tag)
            if tag == "svg" and a.get("id") == "front":
                self.in_svg = True
            elif self.in_svg and "point" in (a.get("class") or "").split():
                self.current = {**a, "title": ""}
                self.points.append(self.current)

        def handle_endtag(self, tag):
            if tag == "svg":
                self.in_svg = False

        def handle_data(self, data):
            if self.current is not None and self.in_svg:
                self.current["title"] += data

    p = Points()
    p.feed(dom)
    trials = load_trials(exp)
    front = front_mask(trials)
    assert p.points, dom[:2000]
    on_front = {pt["data-trial"] for pt in p.points if pt.get("data-front") == "1"}
    assert on_front == set(trials.loc[front, "trial_id"])
    for pt in p.points:
        if pt.get("data-front") == "1":
            row = trials.set_index("trial_id").loc[pt["data-trial"]]
            assert f"trial {pt['data-trial']}" in pt["title"] and "lr = " in pt["title"]
            assert f"attacked forget (worst case, V_rep) {row['forget_acc_attacked']:.3f} [" in pt["title"]
            assert f"strongest attack {row['best_attack_id']}" in pt["title"]
            assert ("verified: search-time" in pt["title"]) == bool(row["verified"])
    assert p.order.index("front") < p.order.index("details")  # the front first, the configuration folded last
    shot = tmp_path / "shot.png"
    subprocess.run([BROWSER, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1200,900", page.as_uri()], capture_output=True, timeout=120)
    assert shot.stat().st_size > 20_000
