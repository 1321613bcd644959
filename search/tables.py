"""The experiment's tables: ``trials.parquet``, ``attacks.parquet``, ``curves.parquet``.

Each trial (and each baseline) writes its rows as one JSON *part* when it ends, failed or not;
the driver merges every part into the three Parquet tables. Parts are keyed by trial id, so a
resumed experiment never counts a trial twice. Every write is atomic (written aside, then
moved into place) and goes through ``pyarrow.fs``, so the folder may be a local path or a
storage URI (``s3://``, ``gs://``, ``file://``).
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

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


def _write_atomic(fs: pafs.FileSystem, path: str, write) -> None:
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with fs.open_output_stream(tmp) as out:
        write(out)
    if isinstance(fs, pafs.LocalFileSystem):
        fs.move(tmp, path)  # rename(2): readers see the old file or the new one, never half
    else:  # object stores publish an object whole on close; no rename needed
        fs.copy_file(tmp, path)
        fs.delete_file(tmp)


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
    inferred types) in sorted order."""
    extra = sorted({k for r in rows for k in r} - set(columns))
    arrays, fields = [], []
    for name in [*columns, *extra]:
        values = [r.get(name) for r in rows]
        typ = columns.get(name) or next((t for p, t in PREFIX_TYPES.items() if name.startswith(p)), None)
        arr = pa.array(values, type=typ) if typ is not None else pa.array(values)
        if typ is None and pa.types.is_null(arr.type):
            arr = arr.cast(pa.string())
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


def write_tables(exp_dir: str, parts: dict[str, dict[str, list[dict]]]) -> dict[str, pa.Table]:
    """Merge parts into the three Parquet tables, each written atomically."""
    fs, base = resolve(exp_dir)
    fs.create_dir(base, recursive=True)
    tables = {}
    for name, columns in SCHEMAS.items():
        rows = [r for tid in sorted(parts) for r in parts[tid].get(PART_KEYS[name], [])]
        if name == TRIALS:
            rows = flag_under_attacked(add_robustness(rows))
        table = to_table(rows, columns)
        _write_atomic(fs, join(base, name), lambda out, t=table: pq.write_table(t, out))
        tables[name] = table
    return tables


def read_table(exp_dir: str, name: str) -> pa.Table:
    """Read one of the experiment's tables."""
    fs, base = resolve(exp_dir)
    return pq.read_table(join(base, name), filesystem=fs)
