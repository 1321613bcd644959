"""Live progress of a search: trials and the attacks inside them.

The driver's Tune callback takes a :class:`Snapshot` every step: the trials from Tune (finished,
running, queued; the best worst case so far) and the attacks from the adversary studies in the
experiment's journal (``search/studies.py``: every attack a trial asks for is a study trial, so
the driver sees attacks inside running trials without any channel of its own). :class:`Live`
shows it: on a terminal one status line redrawn in place under the permanent lines; elsewhere
(CI, ``ray job logs``, a file) a plain ``progress:`` line when something changed, at most every
``plain_every`` seconds, and never a control character.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import sys
import time
from typing import IO, Any, Iterable

import optuna

from search import studies

_DONE = {"TERMINATED", "ERROR"}
_STARTED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """Where the search stands. ``attacks_queued`` is None when no journal is kept (remote
    storage); ``best`` is the lowest attacked forget accuracy (V_rep) of a finished trial
    above the retain floor; ``remaining_s`` is None until something has finished."""

    total: int
    done: int
    failed: int
    running: int
    attacks_done: int | None
    attacks_running: int | None
    attacks_queued: int | None
    best: float | None
    elapsed_s: float
    remaining_s: float | None

    @property
    def queued(self) -> int:
        return max(0, self.total - self.done - self.running)


def attack_counts(store: optuna.storages.BaseStorage | None, budget: int) -> tuple[int, int, int] | None:
    """(finished, running, queued) attacks over every adversary study in ``store``; queued is
    what each study's ``budget`` has not yet started (a study that stopped early, its FLOPs
    budget spent, may report a few queued until it ends)."""
    if store is None:
        return None
    done = running = queued = 0
    for s in store.get_all_studies():
        if not s.study_name.startswith(studies.ATTACK_PREFIX):
            continue
        trials = store.get_all_trials(s._study_id, deepcopy=False)
        n_done = sum(t.state in _STARTED for t in trials)
        n_running = sum(t.state == optuna.trial.TrialState.RUNNING for t in trials)
        done, running = done + n_done, running + n_running
        queued += max(0, budget - n_done - n_running)
    return done, running, queued


def snapshot(trials: Iterable[Any], total: int, started_at: float, attacks: tuple[int, int, int] | None,
             now: float | None = None) -> Snapshot:
    """The state of Tune ``trials`` (objects with ``status`` and ``last_result``) out of
    ``total``, with the attack counts of :func:`attack_counts`. The time left is the elapsed
    time scaled by the work left, counting a running trial's attacks as its share done."""
    now = time.time() if now is None else now
    trials = list(trials)
    finished = [t for t in trials if t.status in _DONE]
    failed = sum(t.status == "ERROR" for t in finished)
    running = sum(t.status == "RUNNING" for t in trials)
    feasible = [t.last_result["attacked"] for t in finished
                if t.status == "TERMINATED" and t.last_result.get("feasible") and "attacked" in t.last_result]
    elapsed = now - started_at
    fraction = len(finished) / total if total else 1.0
    if attacks is not None and running:
        done_a, running_a, queued_a = attacks
        if done_a + running_a + queued_a:  # the running trials' share, weighted by their attacks
            fraction += running / total * done_a / (done_a + running_a + queued_a)
    remaining = elapsed * (1 - fraction) / fraction if fraction > 0 else None
    a = attacks or (None, None, None)
    return Snapshot(total, len(finished), failed, running, *a, min(feasible) if feasible else None,
                    elapsed, remaining)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def render(s: Snapshot) -> str:
    """One line: ``trials 3/8 done (1 failed), 2 running, 3 queued | attacks 14 done, 2
    running, 6 queued | best attacked 0.142 | 2:13 elapsed, ~3:40 left``."""
    parts = [f"trials {s.done}/{s.total} done" + (f" ({s.failed} failed)" if s.failed else "")
             + f", {s.running} running, {s.queued} queued"]
    if s.attacks_done is not None:
        parts.append(f"attacks {s.attacks_done} done, {s.attacks_running} running, {s.attacks_queued} queued")
    parts.append("best attacked " + ("–" if s.best is None else f"{s.best:.3f}"))
    left = "" if s.remaining_s is None or not math.isfinite(s.remaining_s) else f", ~{_clock(s.remaining_s)} left"
    parts.append(f"{_clock(s.elapsed_s)} elapsed{left}")
    return " | ".join(parts)


def stamp(text: str) -> str:
    """A line as the driver prints it: ``[tamper-search HH:MM:SS] text``."""
    return f"[tamper-search {time.strftime('%H:%M:%S')}] {text}"


def _fit(text: str) -> str:
    """``text`` cut to the terminal's width: a longer line would wrap, and \\r could not undo it."""
    return text[: shutil.get_terminal_size((120, 24)).columns - 1]


class Live:
    """A status line kept under the permanent lines on a terminal; plain lines elsewhere."""

    def __init__(self, stream: IO[str] | None = None, every: float = 1.0, plain_every: float = 30.0):
        self.stream = stream or sys.stdout  # the stdout of now (pytest swaps it per test)
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = every if self.tty else plain_every
        self.shown, self.last_text, self.last_at = False, "", -math.inf

    def due(self) -> bool:
        """Whether the next status would be shown (callers skip building it otherwise)."""
        return time.monotonic() - self.last_at >= self.every

    def status(self, text: str, force: bool = False) -> None:
        """Show ``text`` as the status: rate-limited unless ``force``; off a terminal only
        when more than the clock changed."""
        if not force and not self.due():
            return
        self.last_at = time.monotonic()
        changed = text.rsplit(" | ", 1)[0] != self.last_text.rsplit(" | ", 1)[0]
        self.last_text = text
        if self.tty:
            self.stream.write("\r\x1b[K" + _fit(text))
            self.shown = True
        elif changed or force:
            self.stream.write(stamp(f"progress: {text}") + "\n")
        self.stream.flush()

    def line(self, text: str) -> None:
        """A permanent line, printed above the status line."""
        if self.shown:
            self.stream.write("\r\x1b[K")
        self.stream.write(text + "\n")
        if self.shown:
            self.stream.write(_fit(self.last_text))
        self.stream.flush()

    def close(self) -> None:
        """End the status line (the last status stays on screen)."""
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()
            self.shown = False


current: Live | None = None  # the driver's display while a search runs; say() prints through it


def emit(text: str) -> None:
    """Print a permanent line, above the live status line when one is shown."""
    if current is not None:
        current.line(text)
    else:
        print(text, flush=True)
