"""What the stage cache keeps: ``cache.keep`` during and after a search, and ``du`` / ``gc``.

An 8 B model in bf16 is 16 GB; a search that kept every trial's released model would fill a disk.
With ``cache.keep: front`` the driver deletes a trial's models (its released model and, under a
robustifier, its own suppressed teacher) as soon as the trial has finished and is dominated by
a model already on the front, and those of a front model that a later one pushes off it; after
verification it deletes every model that is not on the verified front. ``baselines`` deletes
the front's models too, at the end. ``all`` deletes nothing. The experiment's baselines (the
reference and pure models, the shared suppressed teacher) and every attack result (a
``result.json``, no weights) stay.

A deleted entry keeps its recipe (``cache.RECIPES``), so a process that needs it again — the
verification sweep when verification lifts a front model and a dominated one enters in its
place, another experiment — makes it again (``search.runner.rebuild``). A stage holds its inputs
in use while it runs (``cache.using``), and deletion skips an entry in use.

Each experiment that runs against a cache registers itself there (``.experiments/<id>.json``): its
results folder, its state, a heartbeat every minute while it runs and the keys it keeps (its
baselines; once finished, also its front). ``python -m search.cache gc`` deletes every entry with
files that no registered experiment keeps and no running experiment may have made (committed
after that experiment started), and staging leftovers of processes that died;
``python -m search.cache du`` sizes the cache by stage and by experiment.

Ray-free: the driver calls it, and so does the command line.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pyarrow.fs as pafs
from pydantic import Field

from search import cache
from trainables.strict import Strict

EXPERIMENTS = ".experiments"
HEARTBEAT_S = 60.0
LEASE_S = 15 * 60.0  # a running experiment not heard from for this long is taken as stopped
STAGING_MAX_AGE_S = 24 * 3600.0  # a staging folder this old belongs to a process that died

Keep = Literal["all", "front", "baselines"]


class CacheConfig(Strict):
    """Retention of the stage cache (``search/retention.py``)."""

    # all: nothing deleted; front: a trial's models deleted once they are off the front
    # (the front's and the baselines' stay); baselines: only the baselines' stay.
    # None: all in the arithmetic setting (small models, reused across runs), front otherwise.
    keep: Keep | None = Field(None)

    def mode(self, setting: str) -> Keep:
        """The retention in force for an experiment in ``setting``."""
        return self.keep or ("all" if setting == "arithmetic" else "front")


def _record_location(cache_dir: str | Path, exp_dir: str) -> str | Path:
    name = hashlib.sha256(str(exp_dir).encode()).hexdigest()[:16]
    return cache.entry(cache_dir, f"{EXPERIMENTS}/{name}.json")


def register(cache_dir: str | Path, exp_dir: str, state: str, keep: set[str], started: float) -> None:
    """Write experiment ``exp_dir``'s record in the cache: ``state`` (running / finished), the
    keys it keeps, when it started and a fresh heartbeat."""
    cache.write_json(_record_location(cache_dir, exp_dir), {
        "exp_dir": str(exp_dir), "state": state, "keep": sorted(keep), "started": started,
        "heartbeat": time.time(), "host": os.uname().nodename, "pid": os.getpid(),
    })


def records(cache_dir: str | Path) -> list[dict]:
    """Every experiment registered in the cache."""
    return [r for path in _listing(cache.entry(cache_dir, EXPERIMENTS)) if path.endswith(".json")
            and (r := cache.read_json(path)) is not None]


def _listing(location: str | Path) -> list[str]:
    if cache.is_remote(location):
        fs, base = pafs.FileSystem.from_uri(str(location))
        scheme = str(location).split("://", 1)[0]
        infos = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
        return [f"{scheme}://{i.path}" for i in infos if i.type == pafs.FileType.File]
    folder = Path(location)
    return [str(p) for p in folder.iterdir()] if folder.is_dir() else []


def _models(row: dict) -> set[str]:
    return {k for k in (row.get("model_key"), row.get("suppressed_key")) if isinstance(k, str)}


@dataclass
class Retention:
    """The driver's side of ``cache.keep``: fed each finished trial's row, it deletes the models
    no longer needed as it goes (:meth:`finished`) and the rest at the end (:meth:`close`)."""

    cache_dir: str | Path
    exp_dir: str
    mode: Keep
    pinned: set[str] = field(default_factory=set)  # the baselines' models: never deleted here
    front: dict[str, dict] = field(default_factory=dict)  # trial id -> its row, the current front
    started: float = field(default_factory=time.time)
    deleted: list[str] = field(default_factory=list)
    _stop: threading.Event | None = field(default=None, repr=False)
    _writing: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def start(self) -> None:
        """Register the experiment as running, and keep its heartbeat going."""
        register(self.cache_dir, self.exp_dir, "running", self.pinned, self.started)
        self._stop = threading.Event()

        def beat() -> None:
            while not self._stop.wait(HEARTBEAT_S):
                with self._writing:  # never after close() has written the finished record
                    if self._stop.is_set():
                        return
                    try:
                        register(self.cache_dir, self.exp_dir, "running", self.pinned, self.started)
                    except OSError:
                        pass  # the next beat tries again

        threading.Thread(target=beat, daemon=True, name="cache-heartbeat").start()

    def stop(self) -> None:
        """Stop the heartbeat (the record stays: finished by :meth:`close`, else it goes stale)."""
        with self._writing:
            if self._stop is not None:
                self._stop.set()

    def pin(self, keys: set[str]) -> None:
        """Keep ``keys`` (baselines) for as long as the experiment's record says so."""
        with self._writing:
            self.pinned |= keys
            register(self.cache_dir, self.exp_dir, "running", self.pinned, self.started)

    def _delete(self, keys: set[str]) -> None:
        needed = self.pinned | {k for r in self.front.values() for k in _models(r)}
        for key in sorted(keys - needed):
            if cache.release(self.cache_dir, key):
                self.deleted.append(key)

    def finished(self, row: dict) -> None:
        """Trial ``row`` has finished (attacked, verified if it was near the front): delete its
        models if the front dominates it, and those of the front models it dominates."""
        if self.mode == "all" or row.get("kind") != "defender":
            return
        from search.verify import candidates, dominates, near_front  # (not at import: the CLI stays light)

        self.front.pop(row["trial_id"], None)  # a re-merge (resume) replaces it
        if not candidates([row]) or not near_front(row, list(self.front.values()), 0.0):
            self._delete(_models(row))
            return
        fell = [t for t, f in self.front.items() if dominates(row, f)]
        self.front[row["trial_id"]] = row
        gone = {k for t in fell for k in _models(self.front.pop(t))}
        self._delete(gone)

    def close(self, rows: list[dict]) -> None:
        """The experiment finished (``rows``: its trials, verified): delete every trial model not on
        the final front (``baselines``: none of them), and record the keys it keeps: its baselines
        and its front (with ``all`` too: ``gc`` frees the rest)."""
        self.stop()
        from search.verify import front

        final = [] if self.mode == "baselines" else front(rows)
        if self.mode != "all":
            self.front = {r["trial_id"]: r for r in final}
            self._delete({k for r in rows if r.get("kind") == "defender" for k in _models(r)})
        register(self.cache_dir, self.exp_dir, "finished", self.pinned | {k for r in final for k in _models(r)},
                 self.started)


# ---- du / gc -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    """A committed cache entry: its key, stage, bytes, commit time and whether it holds files."""

    key: str
    stage: str
    bytes: int
    committed: float
    has_files: bool


def entries(cache_dir: str | Path) -> list[Entry]:
    """Every committed entry of the cache (local folder or URI)."""
    out = []
    if cache.is_remote(cache_dir):
        fs, base = pafs.FileSystem.from_uri(str(cache_dir))
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        by_key: dict[str, list] = {}
        for i in infos:
            rel = i.path[len(base):].lstrip("/")
            if i.type == pafs.FileType.File and "/" in rel and not rel.startswith("."):
                by_key.setdefault(rel.split("/", 1)[0], []).append(i)
        for key, files in by_key.items():
            marker = [i for i in files if i.base_name == cache.RESULT_FILE]
            if marker:
                out.append(Entry(key, key.rsplit("-", 1)[0], sum(i.size for i in files),
                                 marker[0].mtime.timestamp(), len(files) > 1))
        return out
    root = Path(cache_dir)
    for d in root.iterdir() if root.is_dir() else []:
        marker = d / cache.RESULT_FILE
        if d.name.startswith(".") or not marker.is_file():
            continue
        files = [f for f in d.rglob("*") if f.is_file()]
        out.append(Entry(d.name, d.name.rsplit("-", 1)[0], sum(f.stat().st_size for f in files),
                         marker.stat().st_mtime, len(files) > 1))
    return out


def _experiment_keys(record: dict) -> set[str]:
    """The model keys an experiment's trials table names (its released and teacher models)."""
    from search import tables

    try:
        t = tables.read_table(record["exp_dir"], tables.TRIALS, columns=None)
    except (OSError, FileNotFoundError, ValueError):
        return set()
    cols = [c for c in ("model_key", "suppressed_key") if c in t.column_names]
    return {k for c in cols for k in t.column(c).to_pylist() if k}


def alive(record: dict, now: float | None = None) -> bool:
    """The experiment is running and was heard from within ``LEASE_S``."""
    return record.get("state") == "running" and (now or time.time()) - record.get("heartbeat", 0) < LEASE_S


def collectable(cache_dir: str | Path, now: float | None = None) -> list[Entry]:
    """The entries ``gc`` deletes: with files, kept by no registered experiment, and committed
    before every running experiment started (one that is running may have made it)."""
    now = now or time.time()
    recs = records(cache_dir)
    kept = {k for r in recs for k in r.get("keep", [])}
    starts = [r["started"] for r in recs if alive(r, now)]
    first_running = min(starts, default=float("inf"))
    return [e for e in entries(cache_dir) if e.has_files and e.key not in kept and e.committed < first_running]


def gc(cache_dir: str | Path, dry_run: bool = False, say=print) -> int:
    """Delete what :func:`collectable` names (an entry in use is skipped) and staging folders of
    processes that died; return the bytes freed."""
    freed = 0
    for e in collectable(cache_dir):
        if dry_run or cache.release(cache_dir, e.key):
            freed += e.bytes
            say(f"{'would delete' if dry_run else 'deleted'} {e.key} ({_size(e.bytes)})")
        else:
            say(f"kept {e.key}: in use")
    if not cache.is_remote(cache_dir):
        staging = Path(cache_dir) / ".staging"
        for d in staging.iterdir() if staging.is_dir() else []:
            if time.time() - d.stat().st_mtime > STAGING_MAX_AGE_S:
                size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
                if not dry_run:
                    cache.remove(d)
                freed += size
                say(f"{'would delete' if dry_run else 'deleted'} staging leftover {d.name} ({_size(size)})")
    say(f"{'would free' if dry_run else 'freed'} {_size(freed)}")
    return freed


def du(cache_dir: str | Path) -> dict:
    """Bytes and entries of the cache by stage and by registered experiment (an entry several
    experiments use counts for each; ``(none)``: no registered experiment names it)."""
    all_entries = entries(cache_dir)
    by_stage: dict[str, list[int]] = {}
    for e in all_entries:
        n = by_stage.setdefault(e.stage, [0, 0])
        n[0] += 1
        n[1] += e.bytes
    sizes = {e.key: e.bytes for e in all_entries}
    by_exp: dict[str, list[int]] = {}
    named: set[str] = set()
    for r in records(cache_dir):
        keys = (set(r.get("keep", [])) | _experiment_keys(r)) & sizes.keys()
        named |= keys
        label = f"{r['exp_dir']} ({r.get('state')}{'' if r.get('state') != 'running' or alive(r) else ', stale'})"
        by_exp[label] = [len(keys), sum(sizes[k] for k in keys)]
    rest = [k for k, e in sizes.items() if k not in named and e]
    by_exp["(none)"] = [len(rest), sum(sizes[k] for k in rest)]
    return {"total": [len(all_entries), sum(sizes.values())], "stage": by_stage, "experiment": by_exp}


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def main(argv: list[str] | None = None) -> int:
    """``python -m search.cache du|gc [--cache DIR] [--dry-run]``."""
    p = argparse.ArgumentParser(prog="python -m search.cache", description="Size and clean the stage cache.")
    p.add_argument("command", choices=["du", "gc"], help="du: size by stage and experiment; gc: delete what "
                   "no finished experiment's front and no running experiment needs")
    p.add_argument("--cache", default=cache.DEFAULT_DIR,
                   help="the cache folder or URI (default: %(default)s)")
    p.add_argument("--dry-run", action="store_true", help="gc: say what would be deleted, delete nothing")
    args = p.parse_args(argv)
    where = args.cache if cache.is_remote(args.cache) else Path(os.path.expanduser(args.cache))
    if not cache.is_remote(where) and not Path(where).is_dir():
        print(f"error: --cache: no such folder: {where}", file=sys.stderr)
        return 2
    if args.command == "gc":
        gc(where, args.dry_run)
        return 0
    sizes = du(where)
    print(f"{where}: {sizes['total'][0]} entries, {_size(sizes['total'][1])}")
    for title in ("stage", "experiment"):
        print(f"\nby {title}:")
        for name, (n, size) in sorted(sizes[title].items(), key=lambda kv: -kv[1][1]):
            print(f"  {_size(size):>10}  {n:>6} entries  {name}")
    return 0
