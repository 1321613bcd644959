"""The live progress display: counts from Tune's trials and the adversary studies, and output
that is plain (no control characters) when stdout is not a terminal."""

import io
from types import SimpleNamespace

import optuna

from search import progress, studies


def _trial(status, **result):
    return SimpleNamespace(status=status, last_result=result)


def test_attack_counts_read_every_adversary_study_and_nothing_else():
    store = optuna.storages.InMemoryStorage()
    optuna.create_study(study_name=studies.DEFENDER, storage=store).ask()  # not an attack
    busy = optuna.create_study(study_name=studies.attack_study("t1", "abcdef0123456789"), storage=store)
    for value in (0.2, 0.3):
        busy.tell(busy.ask(), value)
    busy.ask()  # one running
    done = optuna.create_study(study_name=studies.attack_study("t2", "0123456789ab"), storage=store)
    for _ in range(3):
        done.tell(done.ask(), 0.1)
    done.tell(done.ask(), state=optuna.trial.TrialState.PRUNED)
    assert progress.attack_counts(store, budget=4) == (6, 1, 1)
    assert progress.attack_counts(None, budget=4) is None  # remote storage keeps no journal


def test_snapshot_counts_trials_the_best_feasible_worst_case_and_time_left():
    trials = [
        _trial("TERMINATED", attacked=0.30, feasible=True),
        _trial("TERMINATED", attacked=0.05, feasible=False),  # below the retain floor: not a best
        _trial("TERMINATED", attacked=0.20, feasible=True),
        _trial("ERROR"),
        _trial("RUNNING"),
        _trial("PENDING"),
    ]
    s = progress.snapshot(trials, total=10, started_at=0.0, attacks=(6, 1, 1), now=100.0)
    assert (s.done, s.failed, s.running, s.queued) == (4, 1, 1, 5)
    assert s.best == 0.20 and s.elapsed_s == 100.0
    fraction = 4 / 10 + 1 / 10 * 6 / 8  # the running trial counts by its attacks done
    assert abs(s.remaining_s - 100 * (1 - fraction) / fraction) < 1e-9
    first = progress.snapshot([_trial("RUNNING")], total=2, started_at=0.0, attacks=None, now=5.0)
    assert first.remaining_s is None and first.best is None and first.attacks_done is None
    line = progress.render(s)
    assert line.startswith("trials 4/10 done (1 failed), 1 running, 5 queued | attacks 6 done, 1 running, 1 queued")
    assert "best attacked 0.200" in line and "1:40 elapsed, ~" in line
    assert "attacks" not in progress.render(first) and "best attacked –" in progress.render(first)


def test_off_a_terminal_the_display_prints_plain_lines_only_when_counts_change():
    out = io.StringIO()
    live = progress.Live(out, plain_every=0.0)
    live.status("trials 0/2 done | 0:01 elapsed")
    live.status("trials 0/2 done | 0:02 elapsed")  # only the clock moved: nothing new to say
    live.line("[tamper-search] trial 1/2 finished")
    live.status("trials 1/2 done | 0:03 elapsed")
    live.close()
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert len(lines) == 3 and lines[1] == "[tamper-search] trial 1/2 finished"
    assert lines[0].endswith("progress: trials 0/2 done | 0:01 elapsed") and "1/2 done" in lines[2]
    slow = progress.Live(io.StringIO(), plain_every=3600.0)
    slow.status("a | 0:01")
    slow.status("b | 0:02")  # too soon
    slow.status("c | 0:03", force=True)
    assert [l.split("progress: ")[1] for l in slow.stream.getvalue().splitlines()] == ["a | 0:01", "c | 0:03"]


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_on_a_terminal_the_status_line_is_redrawn_under_permanent_lines():
    out = _Terminal()
    live = progress.Live(out, every=0.0)
    live.status("trials 0/2 done | 0:01 elapsed")
    live.line("trial 1/2 finished")
    live.close()
    assert out.getvalue() == ("\r\x1b[Ktrials 0/2 done | 0:01 elapsed"  # drawn in place
                              "\r\x1b[Ktrial 1/2 finished\n"            # erased, the line above it
                              "trials 0/2 done | 0:01 elapsed"          # drawn again
                              "\n")


def test_say_prints_through_the_live_display_while_one_is_active(capsys):
    from search import driver

    out = _Terminal()
    progress.current = progress.Live(out, every=0.0)
    try:
        progress.current.status("status")
        driver.say("hello")
    finally:
        progress.current = None
    assert "] hello\n" in out.getvalue() and out.getvalue().endswith("status")
    driver.say("plain")
    assert capsys.readouterr().out.endswith("] plain\n")
