"""Entry point: ``python search/run.py [--config PATH] [--set key.sub=value ...] [--name NAME]
[--storage PATH_OR_URI] [--resume] [--check]``.

Reads and validates the config (a user mistake exits 2 with one message, before Ray starts),
connects to Ray (a fresh local instance, or the cluster under ``ray job submit``), runs the
outer search and prints where the results are and the Pareto set.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# Importable from a checkout whatever the current directory (``python path/to/search/run.py``).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from search import tracking  # noqa: E402
from search.config import ConfigError, ExperimentConfig, load  # noqa: E402

# The config to run when --config is not given: lets a cluster's head node (whose environment a
# `ray job submit -- python search/run.py` entrypoint inherits) or a CI job choose one.
CONFIG_ENV = "TAMPER_SEARCH_CONFIG"


def _redacted(e: Exception) -> str:
    from search.tables import redact

    return redact(str(e))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="search/run.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=os.environ.get(CONFIG_ENV) or None,
                   help=f"experiment YAML (default: ${CONFIG_ENV} if set, else configs/quick.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set search.trials=4 (repeatable)")
    p.add_argument("--name", help="experiment folder name (default: <experiment>-<UTC time>)")
    p.add_argument("--storage", help="results root, a path or a storage URI (default: config's)")
    p.add_argument("--resume", action="store_true",
                   help="continue the experiment --name (default: the newest of this config)")
    p.add_argument("--check", action="store_true",
                   help="validate the config and the command line, print the resolved config and exit "
                        "(0, or 2 on a mistake); starts nothing")
    p.add_argument("--plan", action="store_true",
                   help="print the spaces, the stages that will run (and how many are cached) and an "
                        "estimate of their compute and time, and exit; starts nothing, writes nothing")
    p.add_argument("--require-fit", action="store_true",
                   help="exit 2 before any work if a stage's estimated peak memory per GPU exceeds "
                        "scaling.gpu_memory_gib (printed by --plan)")
    return p.parse_args(argv)


def experiment_name(args: argparse.Namespace, experiment: str, storage: str) -> str:
    """The results folder name; raises ConfigError where it clashes with what exists."""
    from search.tables import join, resolve
    import pyarrow.fs as pafs

    if args.name:
        if not all(c.isalnum() or c in "-_." for c in args.name) or args.name.startswith("."):
            raise ConfigError(f"--name {args.name!r}: one folder name of letters, digits, '-', '_' and '.', "
                              "not starting with '.'")
        fs, base = resolve(storage)
        exists = fs.get_file_info(join(base, args.name)).type != pafs.FileType.NotFound
        if exists and not args.resume:
            raise ConfigError(f"--name {args.name}: {join(storage, args.name)} exists; "
                              "pass --resume to continue it, or choose another --name")
        if args.resume and not exists:
            raise ConfigError(f"--resume: no experiment at {join(storage, args.name)}")
        return args.name
    if args.resume:
        fs, base = resolve(storage)
        found = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
        mine = sorted(i.base_name for i in found if i.base_name.startswith(f"{experiment}-"))
        if not mine:
            raise ConfigError(f"--resume: no earlier '{experiment}' experiment under {storage}")
        return mine[-1]
    return f"{experiment}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"


# What a resumed run may change: where things run and how many at once, never what is computed.
# (More trials are not among them: Tune restores the search with its original sample count.)
RESUMABLE = ("search.max_concurrent", "search.max_failures", "scaling.max_failures", "scaling.cluster_gpus",
             "storage", "cache_dir", "cache.keep", "ray_address", "ray_num_cpus")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_resume(cfg, storage: str, name: str) -> None:
    """Refuse to resume an experiment with a config that would compute different results than
    the one its tables were written with (``config.yaml`` beside them): the rows would mix."""
    import yaml

    from search import tables

    text = tables.read_text(tables.join(storage, name), tables.CONFIG)
    if text is None:  # killed before the config was written: nothing to mix with
        return
    old = _flat(yaml.safe_load(text))
    new = _flat(yaml.safe_load(yaml.safe_dump(cfg.model_dump(mode="json"))))
    changed = sorted(k for k in old.keys() | new.keys()
                     if old.get(k) != new.get(k) and not k.startswith(RESUMABLE))
    if changed:
        shown = ", ".join(f"{k} ({old.get(k)!r} → {new.get(k)!r})" for k in changed[:6])
        more = f" and {len(changed) - 6} more" if len(changed) > 6 else ""
        raise ConfigError(f"--resume: the config differs from the experiment's ({tables.join(storage, name, tables.CONFIG)}) "
                          f"in what changes results: {shown}{more}; resume with that config, or start a new --name")


def check_location(flag: str, value: str) -> None:
    """The config's check of ``storage`` / ``cache_dir``, for a command-line value."""
    try:
        ExperimentConfig._location(value)
    except ValueError as e:
        raise ConfigError(f"{flag} {value}: {e}") from None


def check_writable(field: str, location: str) -> None:
    """A local folder that this process can create and write a file in (a probe, written and
    removed), or ConfigError naming ``field``: found before any work, not by a stage's commit
    an hour in. URIs are checked by their first write."""
    if "://" in location:
        return
    path = Path(os.path.expanduser(location))
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"{field} {location}: cannot write there ({e.strerror})") from None


def claim(storage: str, name: str, resume: bool):
    """Claim the experiment folder before any work, so that two runs never write one
    experiment: a new experiment's folder is created atomically (a second run of the same name
    finds it and stops), and every run holds an exclusive lock on ``<folder>/.lock`` for its
    life (the OS drops it when the process dies, so a killed run never blocks ``--resume``).
    Returns the open lock file, which the caller keeps. Object stores have neither atomic
    folders nor locks: there the check of ``experiment_name`` is all (documented)."""
    import fcntl

    import pyarrow.fs as pafs

    from search.tables import resolve

    fs, base = resolve(storage)
    if not isinstance(fs, pafs.LocalFileSystem):
        return None
    path = os.path.join(base, name)
    if os.path.exists(base) and not os.path.isdir(base):
        raise ConfigError(f"--storage {storage}: is a file, not a folder")
    try:
        os.makedirs(base, exist_ok=True)
        if not resume:
            os.mkdir(path)
        lock = open(os.path.join(path, ".lock"), "a")
    except FileExistsError:
        raise ConfigError(f"--name {name}: {path} exists; pass --resume to continue it, "
                          "or choose another --name") from None
    except OSError as e:
        raise ConfigError(f"storage {storage}: cannot write there ({e.strerror})") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise ConfigError(f"--name {name}: another run is writing {path} right now; "
                          "wait for it to end or choose another --name") from None
    return lock


def storage_root(storage: str) -> str:
    """Where results go. Under ``ray job submit`` the job's working directory is a temporary
    copy of the checkout, so a relative path is placed under ``~/tamper-search/`` instead."""
    if "://" in storage or os.path.isabs(os.path.expanduser(storage)):
        return storage
    if "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ:
        return os.path.join(os.path.expanduser("~/tamper-search"), storage)
    return os.path.abspath(storage)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = load(args.config, args.set)
        if args.storage:
            check_location("--storage", args.storage)
        storage = storage_root(args.storage or cfg.storage)
        name = experiment_name(args, cfg.experiment, storage)
        mistake = tracking.check(cfg.tracking, f"{storage.rstrip('/')}/{name}")
        if mistake:
            raise ConfigError(mistake)
        if args.resume:
            check_resume(cfg, storage, name)
        if args.require_fit:
            check_fit(cfg)
    except ConfigError as e:
        print(f"error: {_redacted(e)}", file=sys.stderr)
        return 2
    if args.plan:
        from search.plan import text

        print(text(cfg), flush=True)
        return 0
    if args.check:
        import yaml

        from search.tables import redact

        print(redact(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)), end="")
        print(f"# ok: would write {redact(storage.rstrip('/'))}/{name}/", flush=True)
        return 0
    try:
        check_writable("cache_dir", cfg.cache_dir)
        lock = claim(storage, name, args.resume)  # noqa: F841 (held until the process ends)
    except ConfigError as e:
        print(f"error: {_redacted(e)}", file=sys.stderr)
        return 2

    from analysis.report import summarize
    from search.disk import storage_full
    from search.driver import run_experiment, say

    from search import tables

    exp_dir = tables.join(storage, name)
    if args.resume and tables.run_status(exp_dir) == "complete":
        # Every trial has its row and the studies are settled: nothing for Ray to do.
        status, text, code = outcome(exp_dir, cfg.search.trials, name)
        print(summarize(exp_dir), flush=True)
        say(f"nothing to resume, the run was complete; {text}")
        return code
    try:
        run_experiment(cfg, name, storage, resume=args.resume)
    except ConfigError as e:  # found once connected to the cluster (its GPUs), before any work
        print(f"error: {_redacted(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        tables.write_run_status(exp_dir, "interrupted")
        print(f"interrupted: tables in {tables.redact(exp_dir)}/ are incomplete; continue with --name {name} --resume",
              file=sys.stderr, flush=True)
        return 130
    except Exception as e:  # a full disk, raised where it was hit or wrapped by Ray and Tune
        full = storage_full(e)
        if full is None:
            raise
        # every write is atomic (tables, cache entries): what was written is whole
        print(f"error: no space left on the device of {tables.redact(full.filename)}; nothing is half-written: "
              f"free space, then continue with --name {name} --resume", file=sys.stderr, flush=True)
        return 1
    status, text, code = outcome(exp_dir, cfg.search.trials, name)
    tables.write_run_status(exp_dir, status)
    if status == "complete":  # no trial will be resumed: close what a killed driver left open
        from search import studies

        studies.settle(exp_dir)
    print(summarize(exp_dir), flush=True)
    say(text)
    return code


def check_fit(cfg: ExperimentConfig) -> None:
    """``--require-fit``: raise ConfigError if a stage's estimated peak memory per GPU exceeds
    ``scaling.gpu_memory_gib`` (``search/plan.py``, ``trainables/memory.py``)."""
    from search.plan import memory_problems, memory_rows

    if not cfg.scaling.gpu_memory_gib:
        raise ConfigError("--require-fit: set scaling.gpu_memory_gib (the memory of one of the cluster's GPUs)")
    problems = memory_problems(memory_rows(cfg), cfg)
    if problems:
        raise ConfigError(f"--require-fit: {problems[0]}" + (f" (and {len(problems) - 1} more stage(s))" if len(problems) > 1 else ""))


def outcome(exp_dir: str, expected: int, name: str) -> tuple[str, str, int]:
    """(run status, last line, exit status) from the merged tables: ``complete`` (0, with the
    number of failed trials), ``failed`` when no defender trial succeeded (1), ``interrupted``
    when fewer trials than the search asked for have rows (130: Ctrl-C stops Ray Tune
    gracefully, so the driver gets here)."""
    from search import tables

    trials = tables.read_table(exp_dir, tables.TRIALS).to_pylist()
    defenders = [r for r in trials if r.get("kind") == "defender"]
    failed = sum(r.get("status") != "ok" for r in defenders)
    where = f"tables in {tables.redact(exp_dir)}/ (trials.parquet, attacks.parquet, curves.parquet)"
    if len(defenders) < expected:
        return ("interrupted", f"interrupted: {len(defenders)} of {expected} trials finished, {where} are "
                               f"incomplete; continue with --name {name} --resume", 130)
    if failed == len(defenders):
        return "failed", f"failed: every one of {failed} defender trials failed (errors in trials.parquet)", 1
    return "complete", f"done: {where}; {failed} of {len(defenders)} defender trials failed", 0


if __name__ == "__main__":
    sys.exit(main())
