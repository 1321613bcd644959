"""Entry point: ``python search/run.py [--config PATH] [--set key.sub=value ...] [--name NAME]
[--storage PATH_OR_URI] [--resume]``.

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

from search.config import ConfigError, load  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="search/run.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="experiment YAML (default: configs/quick.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set search.trials=4 (repeatable)")
    p.add_argument("--name", help="experiment folder name (default: <experiment>-<UTC time>)")
    p.add_argument("--storage", help="results root, a path or a storage URI (default: config's)")
    p.add_argument("--resume", action="store_true",
                   help="continue the experiment --name (default: the newest of this config)")
    return p.parse_args(argv)


def experiment_name(args: argparse.Namespace, experiment: str, storage: str) -> str:
    """The results folder name; raises ConfigError where it clashes with what exists."""
    from search.tables import join, resolve
    import pyarrow.fs as pafs

    fs, base = resolve(storage)
    if args.name:
        if not all(c.isalnum() or c in "-_." for c in args.name):
            raise ConfigError(f"--name {args.name!r}: use letters, digits, '-', '_' and '.' only")
        exists = fs.get_file_info(join(base, args.name)).type != pafs.FileType.NotFound
        if exists and not args.resume:
            raise ConfigError(f"--name {args.name}: {join(storage, args.name)} exists; "
                              "pass --resume to continue it, or choose another --name")
        if args.resume and not exists:
            raise ConfigError(f"--resume: no experiment at {join(storage, args.name)}")
        return args.name
    if args.resume:
        found = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
        mine = sorted(i.base_name for i in found if i.base_name.startswith(f"{experiment}-"))
        if not mine:
            raise ConfigError(f"--resume: no earlier '{experiment}' experiment under {storage}")
        return mine[-1]
    return f"{experiment}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"


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
        storage = storage_root(args.storage or cfg.storage)
        name = experiment_name(args, cfg.experiment, storage)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from analysis.report import summarize
    from search.driver import run_experiment, say

    try:
        exp_dir = run_experiment(cfg, name, storage, resume=args.resume)
    except ConfigError as e:  # found once connected to the cluster (its GPUs), before any work
        print(f"error: {e}", file=sys.stderr)
        return 2
    say(f"done: tables in {exp_dir}/ (trials.parquet, attacks.parquet, curves.parquet)")
    print(summarize(exp_dir), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
