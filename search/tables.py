"""The experiment's tables: ``trials.parquet``, ``attacks.parquet``, ``curves.parquet``.

Each trial (and each baseline) writes its rows as one JSON *part* when it ends, failed or not.
The driver appends a finished trial's rows to the three tables (:func:`merge`). Each table is a
folder of Parquet files that grows by appending (``search/table_folder.py``), so a trial's
bookkeeping costs the same at trial 10,000 as at trial 1. pandas, ``pyarrow.dataset``, DuckDB
and polars read a folder as one table. Parts are keyed by trial id: a trial merged again (after
verification, or on resume) replaces its rows, so nothing is counted twice. Every write is atomic
(written aside, then moved into place) and goes through ``pyarrow.fs``, so the folder may be a
local path or a storage URI (``s3://``, ``gs://``, ``file://``).
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from search import table_folder
from search.table_folder import StorageFull, write_atomic as _write_atomic  # noqa: F401 (StorageFull: re-exported)

TRIALS = "trials.parquet"
ATTACKS = "attacks.parquet"
CURVES = "curves.parquet"
PARTS = "parts"
CONFIG = "config.yaml"  # the resolved experiment config, beside the tables
RUN = "run.json"  # {"run_status": running | complete | interrupted | failed, "updated_at": ...}

# Per-stage columns, typed by prefix (the stages are the trial's registry, not this module's:
# reading the tables needs no torch): compute ``flops.<stage>`` (``flops.unlearn``,
# ``flops.attack``, ...), and a robustifier's step count ``steps.<stage>`` (a distillation may
# stop early).
PREFIX_TYPES: dict[str, pa.DataType] = {"flops.": pa.float64(), "steps.": pa.int64()}


# Fixed columns and their types; ``param.*`` and ``attack.*`` columns are added as they appear.
TRIAL_COLUMNS: dict[str, pa.DataType] = {
    "experiment": pa.string(), "trial_id": pa.string(), "kind": pa.string(),
    "status": pa.string(), "error": pa.string(), "setting": pa.string(), "method": pa.string(),
    "seed": pa.int64(), "retain_acc": pa.float64(), "forget_acc": pa.float64(),
    "forget_acc_attacked": pa.float64(), "best_attack_id": pa.string(), "attacks_run": pa.int64(),
    # forget_acc and forget_acc_attacked are on V_rep, which no selection saw; 95 % Wilson
    # intervals over questions; the optimistic V_sel figure and the chosen attack's seed spread
    "retain_acc_lo": pa.float64(), "retain_acc_hi": pa.float64(),
    "forget_acc_lo": pa.float64(), "forget_acc_hi": pa.float64(),
    "forget_acc_attacked_lo": pa.float64(), "forget_acc_attacked_hi": pa.float64(),
    "forget_acc_attacked_sel": pa.float64(), "forget_acc_attacked_sd": pa.float64(),
    "attacked_seeds": pa.int64(), "best_attack_step": pa.int64(),
    "forget_acc_full": pa.float64(), "forget_acc_sel": pa.float64(),
    "n_retain": pa.int64(), "n_select": pa.int64(), "n_report": pa.int64(),
    "under_attacked": pa.bool_(),
    "compute_frac": pa.float64(), "compute_frac_attack": pa.float64(),
    "feasible": pa.bool_(), "wall_s": pa.float64(),
    # a robustified model: the suppressed model it was built on (UNDO's teacher, TAR's initial
    # safeguard), and the robustness derived from them
    "retain_acc_suppressed": pa.float64(),
    "forget_acc_suppressed": pa.float64(), "forget_acc_attacked_suppressed": pa.float64(),
    "robustness": pa.float64(), "suppressed_key": pa.string(),
    "finished_at": pa.float64(),
    "model_key": pa.string(), "attack_study": pa.string(),
    "config_hash": pa.string(), "code_version": pa.string(),
}
ATTACK_COLUMNS: dict[str, pa.DataType] = {
    "experiment": pa.string(), "trial_id": pa.string(), "attack_id": pa.string(), "seq": pa.int64(),
    "status": pa.string(), "error": pa.string(), "forget_acc_final": pa.float64(),
    "forget_acc_max": pa.float64(), "retain_acc_final": pa.float64(),
    # the checkpoint chosen on V_sel and its V_rep accuracy
    "forget_acc_sel_max": pa.float64(), "best_step": pa.int64(), "forget_acc_rep_at_best": pa.float64(),
    "flops": pa.float64(),
    "compute_frac": pa.float64(), "wall_s": pa.float64(),
    # the training loop's share of wall_s (its steps and evaluations); the rest is the attack's
    # fixed cost: a load or restore, a worker-group start, the cache
    "train_wall_s": pa.float64(),
}
CURVE_COLUMNS: dict[str, pa.DataType] = {
    "experiment": pa.string(), "trial_id": pa.string(), "attack_id": pa.string(),
    "stage": pa.string(), "step": pa.int64(), "metric": pa.string(), "value": pa.float64(),
}
SCHEMAS = {TRIALS: TRIAL_COLUMNS, ATTACKS: ATTACK_COLUMNS, CURVES: CURVE_COLUMNS}
PART_KEYS = {TRIALS: "trials", ATTACKS: "attacks", CURVES: "curves"}


_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
_SECRET_QUERY = re.compile(r"(?i)([?&](?:[a-z_]*(?:secret|key|token|password|credential|session)[a-z_]*)=)[^&\s]*")


def redact(text: str) -> str:
    """``text`` with the credentials a storage URI may carry masked (``s3://KEY:SECRET@bucket``,
    ``?secret_key=...``), for anything written or printed: config copies, logs, reports."""
    return _SECRET_QUERY.sub(r"\1***", _USERINFO.sub("***@", text))


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) of a local path or storage URI."""
    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))


def join(base: str, *parts: str) -> str:
    """Join path pieces with '/', for both local paths and URIs."""
    return "/".join([base.rstrip("/"), *parts])


def write_part(exp_dir: str, trial_id: str, rows: dict[str, list[dict]]) -> None:
    """Write one trial's rows {'trials': [...], 'attacks': [...], 'curves': [...]} atomically."""
    fs, base = resolve(exp_dir)
    fs.create_dir(join(base, PARTS), recursive=True)
    data = json.dumps(rows, default=float).encode()
    _write_atomic(fs, join(base, PARTS, f"{trial_id}.json"), lambda out: out.write(data))


def write_text(exp_dir: str, name: str, text: str) -> None:
    """Write a small text file (e.g. the resolved config) into the experiment folder."""
    fs, base = resolve(exp_dir)
    fs.create_dir(base, recursive=True)
    data = text.encode()
    _write_atomic(fs, join(base, name), lambda out: out.write(data))


def write_run_status(exp_dir: str, status: str) -> None:
    """Record whether the tables are complete (``run.json``): ``running`` while a driver works
    (and after one died), ``interrupted``, ``failed`` or ``complete``."""
    write_text(exp_dir, RUN, json.dumps({"run_status": status, "updated_at": time.time()}))


def run_status(exp_dir: str) -> str | None:
    """The experiment's run status, or None for one written before run.json existed."""
    text = read_text(exp_dir, RUN)
    return json.loads(text)["run_status"] if text else None


def read_text(exp_dir: str, name: str) -> str | None:
    """A text file of the experiment folder, or None if it is not there."""
    fs, base = resolve(exp_dir)
    path = join(base, name)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    with fs.open_input_stream(path) as f:
        return f.read().decode()


def read_part(exp_dir: str, trial_id: str) -> dict[str, list[dict]]:
    """One trial's part ({} if it has none)."""
    fs, base = resolve(exp_dir)
    path = join(base, PARTS, f"{trial_id}.json")
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return {}
    return _read_json(fs, path)


def read_parts(exp_dir: str) -> dict[str, dict[str, list[dict]]]:
    """Every trial's part, by trial id."""
    fs, base = resolve(exp_dir)
    infos = fs.get_file_info(pafs.FileSelector(join(base, PARTS), allow_not_found=True))
    return {info.base_name[: -len(".json")]: _read_json(fs, info.path)
            for info in sorted(infos, key=lambda i: i.path) if info.is_file and info.path.endswith(".json")}


def _read_json(fs: pafs.FileSystem, path: str) -> Any:
    with fs.open_input_stream(path) as f:
        return json.loads(f.read())


def to_table(rows: list[dict[str, Any]], columns: dict[str, pa.DataType]) -> pa.Table:
    """Rows → a table with the fixed columns first (typed, nulls allowed), then any extra
    columns (``flops.*``, ``steps.*`` typed by their prefix; ``param.*``, ``attack.*`` with
    inferred types, null-typed while all null) in sorted order."""
    extra = sorted({k for r in rows for k in r} - set(columns))
    arrays, fields = [], []
    for name in [*columns, *extra]:
        values = [r.get(name) for r in rows]
        typ = columns.get(name) or next((t for p, t in PREFIX_TYPES.items() if name.startswith(p)), None)
        # an untyped column that is all null stays null-typed: a later trial's value gives it its
        # type when the table folder's schema is unified
        arr = pa.array(values, type=typ) if typ is not None else pa.array(values)
        arrays.append(arr)
        fields.append(pa.field(name, arr.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def add_robustness(trials: list[dict]) -> list[dict]:
    """Set ``robustness = (attacked_suppressed − attacked) / (attacked_suppressed −
    attacked_pure)`` on every row that has an attacked suppressed score (1: as robust as the
    pure model, 0: no better than the suppressed model its robustifier started from), and on the pure and reference rows
    when the experiment has one suppressed model. Derived when the tables are merged, because
    the pure baseline may finish after the trials. Returns new row dicts."""
    def baseline(method: str) -> list[float]:
        return [r["forget_acc_attacked"] for r in trials
                if r.get("kind") == "baseline" and r.get("method") == method and r.get("status") == "ok"]

    pure, suppressed = baseline("pure"), baseline("suppressed")
    out = []
    for r in trials:
        r = dict(r)
        s, a = r.get("forget_acc_attacked_suppressed"), r.get("forget_acc_attacked")
        if s is None and r.get("kind") == "baseline" and len(suppressed) == 1:
            s = suppressed[0]
        if pure and s is not None and a is not None and s == s and a == a and s != pure[0]:
            r["robustness"] = (s - a) / (s - pure[0])
        out.append(r)
    return out


def flag_under_attacked(trials: list[dict]) -> list[dict]:
    """Set ``under_attacked`` on every ok row whose reported worst case lies below the pure
    model's 95 % interval: a model that learned the facts looks safer than one that never did,
    so its attacker was too weak (raise the attack budget). Derived at merge time, as
    robustness is. Returns new row dicts."""
    pure = [r for r in trials if r.get("kind") == "baseline" and r.get("method") == "pure"
            and r.get("status") == "ok" and r.get("forget_acc_attacked_lo") is not None]
    out = []
    for r in trials:
        r = dict(r)
        a = r.get("forget_acc_attacked")
        if pure and r.get("status") == "ok" and r.get("method") != "pure" and a is not None and a == a:
            r["under_attacked"] = bool(a < pure[0]["forget_acc_attacked_lo"])
        out.append(r)
    return out


def _derived(rows: list[dict], baselines: list[dict]) -> list[dict]:
    """``rows`` with their derived columns (robustness, under_attacked) against ``baselines``
    (the baseline rows among them count once)."""
    mine = {r["trial_id"] for r in rows}
    context = [b for b in baselines if b["trial_id"] not in mine]
    return flag_under_attacked(add_robustness([*context, *rows]))[len(context):]


def _folder(exp_dir: str, name: str) -> tuple[pafs.FileSystem, str]:
    fs, base = resolve(exp_dir)
    return fs, join(base, name)


def _drop_old_files(exp_dir: str) -> None:
    """Delete tables an older version wrote whole, as single files: their rows are in the
    parts, from which the folders are then built."""
    for name in SCHEMAS:
        fs, path = _folder(exp_dir, name)
        if fs.get_file_info(path).type == pafs.FileType.File:
            fs.delete_file(path)


# What the driver has merged, by experiment folder: {"ids": trial ids, "baselines": baseline rows}.
# The driver is the tables' only writer, so its own record stays true while it runs.
_merged: dict[str, dict] = {}


def _state(exp_dir: str) -> dict:
    """What is merged into ``exp_dir``'s tables, read once per process. Rows of a trial that
    reached ``curves`` or ``attacks`` but not ``trials`` (a driver that died mid-merge) are
    removed: a trial is in every table or in none."""
    if exp_dir not in _merged:
        _drop_old_files(exp_dir)
        fs, trials = _folder(exp_dir, TRIALS)
        t = table_folder.read(fs, trials, columns=["trial_id", "kind"])
        ids = set(t.column("trial_id").to_pylist()) if t is not None else set()
        base = table_folder.read(fs, trials, filter=ds.field("kind") == "baseline") if t is not None else None
        for name in (ATTACKS, CURVES):
            fs, folder = _folder(exp_dir, name)
            held = table_folder.read(fs, folder, columns=["trial_id"])
            if held is not None:
                orphans = set(held.column("trial_id").unique().to_pylist()) - ids
                if orphans:
                    table_folder.remove(fs, folder, "trial_id", orphans)
        _merged[exp_dir] = {"ids": ids, "baselines": base.to_pylist() if base is not None else []}
    return _merged[exp_dir]


def merge(exp_dir: str, trial_ids: list[str]) -> list[dict]:
    """Append these trials' parts to the three tables, replacing the rows of any already merged
    (a verified trial's new rows, a resumed trial); return their parts' trials rows. What it
    costs does not grow with the trials already in the tables, except where a baseline lands:
    every trial's derived columns depend on the baselines, so the trials table is rewritten
    then."""
    state = _state(exp_dir)
    parts = {tid: read_part(exp_dir, tid) for tid in trial_ids}
    parts = {tid: p for tid, p in parts.items() if p}
    try:
        _merge(exp_dir, state, parts)
    except BaseException:  # a full disk, say: read the tables afresh next time (the rows of a
        _merged.pop(exp_dir, None)  # half-merged trial are then removed, and it merges again)
        raise
    return [row for p in parts.values() for row in p.get("trials", [])]


def _merge(exp_dir: str, state: dict, parts: dict[str, dict]) -> None:
    again = set(parts) & state["ids"]
    if again:  # out of trials first: until its new row is in, a trial counts as not merged
        fs, folder = _folder(exp_dir, TRIALS)
        table_folder.remove(fs, folder, "trial_id", again)
        state["ids"] -= again
    for name in (CURVES, ATTACKS, TRIALS):  # trials last: a trial is merged once its row is there
        fs, folder = _folder(exp_dir, name)
        if again and name != TRIALS:
            table_folder.remove(fs, folder, "trial_id", again)
        rows = [r for tid in parts for r in parts[tid].get(PART_KEYS[name], [])]
        if name == TRIALS:
            landed = [r for r in rows if r.get("kind") == "baseline"]
            state["baselines"] = [*(b for b in state["baselines"] if b["trial_id"] not in parts), *landed]
            rows = _derived(rows, state["baselines"])
        if rows:
            table_folder.append(fs, folder, to_table(rows, SCHEMAS[name]), SCHEMAS[name])
    state["ids"] |= set(parts)
    if landed:  # every trial's derived columns depend on the baselines
        fs, folder = _folder(exp_dir, TRIALS)
        fields = table_folder.schema(fs, folder)
        table_folder.rewrite(fs, folder, lambda t: table_folder.conform(
            to_table(_derived(t.to_pylist(), state["baselines"]), TRIAL_COLUMNS), fields))


def part_ids(exp_dir: str) -> list[str]:
    """The trial ids that have a part, from the folder's listing (no part is read)."""
    fs, base = resolve(exp_dir)
    infos = fs.get_file_info(pafs.FileSelector(join(base, PARTS), allow_not_found=True))
    return sorted(i.base_name[: -len(".json")] for i in infos if i.is_file and i.base_name.endswith(".json"))


def catch_up(exp_dir: str) -> list[str]:
    """Merge every part the tables do not hold yet (a resumed or finished run); return their ids."""
    todo = [tid for tid in part_ids(exp_dir) if tid not in _state(exp_dir)["ids"]]
    for tid in todo:
        merge(exp_dir, [tid])
    return todo


def trial_rows(exp_dir: str) -> list[dict]:
    """Every finished trial's row: the trials table's, and those of parts not merged yet (a
    reader beside the driver, which merges a trial after it reports)."""
    rows = {r["trial_id"]: r for r in read_table(exp_dir, TRIALS).to_pylist()}
    for tid in part_ids(exp_dir):
        if tid not in rows:
            rows.update({r["trial_id"]: r for r in read_part(exp_dir, tid).get("trials", [])})
    return list(rows.values())


def write_tables(exp_dir: str, parts: dict[str, dict[str, list[dict]]]) -> dict[str, pa.Table]:
    """Write the three tables from ``parts`` alone (whatever they held is replaced), one file
    each; return them."""
    _merged.pop(exp_dir, None)
    _drop_old_files(exp_dir)
    out = {}
    for name, columns in SCHEMAS.items():
        fs, folder = _folder(exp_dir, name)
        fs.delete_dir_contents(folder, missing_dir_ok=True)
        rows = [r for tid in sorted(parts) for r in parts[tid].get(PART_KEYS[name], [])]
        if name == TRIALS:
            rows = flag_under_attacked(add_robustness(rows))
        out[name] = to_table(rows, columns)
        table_folder.append(fs, folder, out[name], columns)
    _merged[exp_dir] = {"ids": set(parts), "baselines": [r for r in out[TRIALS].to_pylist() if r.get("kind") == "baseline"]}
    return out


def read_table(exp_dir: str, name: str, columns: list[str] | None = None,
               filter: ds.Expression | None = None, dictionary: bool = False) -> pa.Table:
    """Read one of the experiment's tables (``columns`` and ``filter`` read only what they
    name); empty if it has no rows yet. ``dictionary``: its string columns dictionary-encoded
    (pandas: categorical), the fast way to read a large one: 10 M curve rows in a fraction of
    the time and memory."""
    fs, path = _folder(exp_dir, name)
    if fs.get_file_info(path).type == pafs.FileType.File:  # written whole by an older version
        return pq.read_table(path, filesystem=fs, columns=columns, filters=filter)
    t = table_folder.read(fs, path, columns, filter, dictionary)
    return t if t is not None else to_table([], SCHEMAS[name])
