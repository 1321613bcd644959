import pyarrow.dataset as ds
import pytest

from search import tables


def _parts():
    return {
        "t1": {"trials": [{"experiment": "e", "trial_id": "t1", "status": "ok", "retain_acc": 0.9,
                           "param.lr": 1e-3, "param.steps": 10}],
               "attacks": [{"experiment": "e", "trial_id": "t1", "attack_id": "t1-a0", "status": "ok",
                            "forget_acc_max": 0.2, "attack.lr": 1e-3}],
               "curves": [{"experiment": "e", "trial_id": "t1", "attack_id": None, "stage": "unlearn",
                           "step": 0, "metric": "loss", "value": 1.0}]},
        "t2": {"trials": [{"experiment": "e", "trial_id": "t2", "status": "error", "error": "boom"}]},
    }


def test_parts_merge_and_read_back_with_other_readers(tmp_path):
    exp = str(tmp_path / "exp")
    for tid, rows in _parts().items():
        tables.write_part(exp, tid, rows)
    tables.write_part(exp, "t1", _parts()["t1"])  # written twice (resume): counted once
    written = tables.write_tables(exp, tables.read_parts(exp))
    trials = ds.dataset(str(tmp_path / "exp" / tables.TRIALS)).to_table()
    assert trials.num_rows == 2 and trials.equals(written[tables.TRIALS])
    df = trials.to_pandas().set_index("trial_id")
    assert df.loc["t2", "error"] == "boom" and df.loc["t1", "param.steps"] == 10
    assert list(trials.column_names[:len(tables.TRIAL_COLUMNS)]) == list(tables.TRIAL_COLUMNS)
    import pandas as pd
    assert pd.read_parquet(tmp_path / "exp" / tables.CURVES)["attack_id"].isna().all()
    assert not [p for p in (tmp_path / "exp").rglob("*.tmp-*")]


def test_duckdb_reads_the_tables(tmp_path):
    duckdb = pytest.importorskip("duckdb")
    exp = str(tmp_path / "exp")
    tables.write_tables(exp, _parts())
    n = duckdb.sql(f"select count(*) from '{tmp_path}/exp/attacks.parquet'").fetchall()[0][0]
    assert n == 1


def test_file_uri_storage(tmp_path):
    uri = f"file://{tmp_path}/exp"
    tables.write_tables(uri, _parts())
    assert tables.read_table(uri, tables.TRIALS).num_rows == 2


def test_three_readers_agree_on_every_table(tmp_path):
    """pandas, pyarrow.dataset and DuckDB read the project's tables back identically."""
    duckdb = pytest.importorskip("duckdb")
    import pandas as pd

    from tests.synthetic import make_experiment

    exp = tmp_path / "exp"
    make_experiment(str(exp), 30, 3)
    for name in (tables.TRIALS, tables.ATTACKS, tables.CURVES):
        path = str(exp / name)
        a = pd.read_parquet(path)
        b = ds.dataset(path).to_table().to_pandas()
        c = duckdb.sql(f"select * from '{path}'").df()
        assert len(a) > 0 and list(a.columns) == list(b.columns) == list(c.columns)
        for other in (b, c):
            for col in a.columns:
                x, y = a[col].to_numpy(dtype=object), other[col].to_numpy(dtype=object)
                same = [(pd.isna(u) and pd.isna(v)) or (not pd.isna(u) and not pd.isna(v) and u == v)
                        for u, v in zip(x, y)]
                assert all(same), (name, col)


def test_run_outcome_from_the_tables(tmp_path):
    from search.run import outcome

    def write(statuses):
        rows = [{"trial_id": f"t{i}", "kind": "defender", "status": s} for i, s in enumerate(statuses)]
        rows.append({"trial_id": "pure", "kind": "baseline", "status": "ok"})
        tables.write_tables(str(tmp_path), {r["trial_id"]: {"trials": [r]} for r in rows})

    write(["ok", "error", "ok"])
    assert outcome(str(tmp_path), 3, "x")[::2] == ("complete", 0)
    assert outcome(str(tmp_path), 3, "x")[1].endswith("1 of 3 defender trials failed")
    write(["error", "error"])
    assert outcome(str(tmp_path), 2, "x")[::2] == ("failed", 1)
    assert outcome(str(tmp_path), 4, "x")[::2] == ("interrupted", 130)
    tables.write_run_status(str(tmp_path), "interrupted")
    assert tables.run_status(str(tmp_path)) == "interrupted"


def test_a_dead_trials_error_is_its_text_not_a_path(tmp_path):
    from types import SimpleNamespace

    from search.driver import _error_text

    f = tmp_path / "error.txt"
    f.write_text("ray.exceptions.WorkerCrashedError: the worker died unexpectedly\n")
    assert _error_text(SimpleNamespace(error_file=str(f))) == "ray.exceptions.WorkerCrashedError: the worker died unexpectedly"
    assert "no error text" in _error_text(SimpleNamespace(error_file=str(tmp_path / "missing.txt")))
    assert "no error text" in _error_text(SimpleNamespace(error_file=None))


# --- tables as folders that grow by appending (search/table_folder.py) ---------------------------

def _synthetic_parts(tmp_path, n: int, attacks: int = 3) -> dict:
    from tests.synthetic import make_experiment

    src = str(tmp_path / "src")
    make_experiment(src, n, attacks)
    return tables.read_parts(src)


def _merged_one_by_one(tmp_path, n: int, attacks: int = 3) -> tuple[dict, str]:
    """A synthetic experiment's parts, each written and merged as the driver does: (parts, folder)."""
    parts = _synthetic_parts(tmp_path, n, attacks)
    exp = str(tmp_path / "exp")
    for tid, part in parts.items():
        tables.write_part(exp, tid, part)
        tables.merge(exp, [tid])
    return parts, exp


def _sorted(df, name: str):
    """A table (Arrow or pandas) as a pandas frame in a fixed row and column order."""
    keys = {tables.TRIALS: ["trial_id"], tables.ATTACKS: ["attack_id"],
            tables.CURVES: ["trial_id", "attack_id", "metric", "step"]}[name]
    df = df if hasattr(df, "iloc") else df.to_pandas()
    return df[sorted(df.columns)].sort_values(keys).reset_index(drop=True)


def _same(a, b) -> bool:
    """Same columns and the same values, missing as missing whatever each reader calls it."""
    import pandas as pd

    if list(a.columns) != list(b.columns) or len(a) != len(b):
        return False
    for col in a.columns:
        for u, v in zip(a[col].to_numpy(dtype=object), b[col].to_numpy(dtype=object)):
            if not ((pd.isna(u) and pd.isna(v)) or (not pd.isna(u) and not pd.isna(v) and u == v)):
                return False
    return True


@pytest.fixture
def small_folders(monkeypatch):
    """Merges after 3 files of a level, two levels: a few trials exercise every path."""
    from search import table_folder

    monkeypatch.setattr(table_folder, "FAN_IN", 3)
    monkeypatch.setattr(table_folder, "TOP", 2)
    monkeypatch.setattr(tables, "_merged", {})


def test_trial_by_trial_merges_equal_one_write_and_every_reader_agrees(tmp_path, small_folders):
    duckdb = pytest.importorskip("duckdb")
    import pandas as pd

    parts = _synthetic_parts(tmp_path, 23)
    exp = str(tmp_path / "exp")
    order = [t for t in parts if t not in ("pure", "reference")] + ["pure", "reference"]  # baselines last
    for tid in order:
        tables.write_part(exp, tid, parts[tid])
        tables.merge(exp, [tid])
    once = tables.write_tables(str(tmp_path / "once"), parts)
    for name in (tables.TRIALS, tables.ATTACKS, tables.CURVES):
        got = _sorted(tables.read_table(exp, name), name)
        assert _same(got, _sorted(once[name], name)), name
        folder = tmp_path / "exp" / name
        levels = sorted(p.name.split("-")[0] for p in folder.glob("*.parquet"))
        assert "L2" in levels and levels.count("L0") < 3 and levels.count("L1") < 3  # merged as it went
        for other in (pd.read_parquet(folder), ds.dataset(str(folder)).to_table().to_pandas(),
                      duckdb.sql(f"select * from '{folder}'").df()):
            assert _same(_sorted(other, name), got), name


def test_a_trial_merged_again_replaces_its_rows(tmp_path, small_folders):
    parts, exp = _merged_one_by_one(tmp_path, 8)
    part = parts["t00003"]
    part["trials"][0]["forget_acc_attacked"] = 0.99
    part["attacks"].append({**part["attacks"][0], "attack_id": "t00003-extra"})
    tables.write_part(exp, "t00003", part)
    tables.merge(exp, ["t00003"])  # verified: its part rewritten
    trials = tables.read_table(exp, tables.TRIALS).to_pandas().set_index("trial_id")
    attacks = tables.read_table(exp, tables.ATTACKS).to_pandas()
    assert trials.index.is_unique and len(trials) == len(parts) and trials.loc["t00003", "forget_acc_attacked"] == 0.99
    assert attacks["attack_id"].is_unique and (attacks["trial_id"] == "t00003").sum() == len(part["attacks"])


def test_a_column_that_appears_late_and_a_type_that_widens_give_every_file_one_schema(tmp_path, small_folders, monkeypatch):
    from search import table_folder

    monkeypatch.setattr(table_folder, "FAN_IN", 10)  # three files, not merged
    exp = str(tmp_path / "exp")
    rows = [{"trial_id": "a", "kind": "defender", "status": "ok", "param.n": 3, "param.q": None},
            {"trial_id": "b", "kind": "defender", "status": "ok", "param.n": 4, "param.q": None},
            {"trial_id": "c", "kind": "defender", "status": "ok", "param.n": 0.5, "param.q": 4, "param.new": "x"}]
    for r in rows:
        tables.write_part(exp, r["trial_id"], {"trials": [r]})
        tables.merge(exp, [r["trial_id"]])
    import pyarrow.parquet as pq

    files = sorted((tmp_path / "exp" / tables.TRIALS).glob("*.parquet"))
    schemas = {str(pq.read_schema(f)) for f in files}
    assert len(files) == 3 and len(schemas) == 1  # rewritten once the schema grew
    df = tables.read_table(exp, tables.TRIALS).to_pandas().set_index("trial_id")
    assert df["param.n"].tolist() == [3.0, 4.0, 0.5] and df.loc["c", "param.q"] == 4 and pd_isna(df.loc["a", "param.new"])


def pd_isna(v) -> bool:
    import pandas as pd

    return bool(pd.isna(v))


def test_a_baseline_that_lands_after_the_trials_sets_their_derived_columns(tmp_path, small_folders):
    parts = _synthetic_parts(tmp_path, 6)
    exp = str(tmp_path / "exp")
    for tid in [t for t in parts if t != "pure"] + ["pure"]:
        tables.write_part(exp, tid, parts[tid])
        tables.merge(exp, [tid])
    got = tables.read_table(exp, tables.TRIALS).to_pandas().set_index("trial_id").sort_index()
    once = tables.write_tables(str(tmp_path / "once"), parts)[tables.TRIALS].to_pandas().set_index("trial_id").sort_index()
    ok = once["under_attacked"].notna()
    assert ok.sum() >= 4 and (got.loc[ok, "under_attacked"] == once.loc[ok, "under_attacked"]).all()


def test_leftovers_of_a_crashed_merge_are_skipped_by_readers_and_removed_by_the_next_append(tmp_path, small_folders):
    import shutil

    parts = _synthetic_parts(tmp_path, 8)
    exp = str(tmp_path / "exp")
    folder = tmp_path / "exp" / tables.ATTACKS
    kept = tmp_path / "kept"
    kept.mkdir()
    for i, (tid, part) in enumerate(parts.items()):
        tables.write_part(exp, tid, part)
        tables.merge(exp, [tid])
        if i == 0:
            (first,) = folder.glob("L0-*.parquet")
            shutil.copy(first, kept / first.name)  # a merge inputs, to put back as if never deleted
    n = tables.read_table(exp, tables.ATTACKS).num_rows
    shutil.copy(kept / first.name, folder / first.name)
    assert tables.read_table(exp, tables.ATTACKS).num_rows == n  # inside a merged file's range: skipped
    tables.write_part(exp, "late", {"attacks": [{**parts["t00001"]["attacks"][0], "trial_id": "late", "attack_id": "late-a0"}],
                                    "trials": [{"trial_id": "late", "kind": "defender", "status": "ok"}]})
    tables.merge(exp, ["late"])
    assert not (folder / first.name).exists() and tables.read_table(exp, tables.ATTACKS).num_rows == n + 1


def test_a_half_written_file_of_a_killed_writer_is_skipped_by_every_reader_and_removed(tmp_path, small_folders, monkeypatch):
    """A driver SIGKILLed inside ``write_atomic`` leaves its file aside, half written. pandas,
    ``pyarrow.dataset`` and DuckDB read the folder as if it were not there (CI once read such a
    file as a table file: "Parquet magic bytes not found"); the next append deletes it."""
    import pandas as pd

    from search import table_folder

    parts, exp = _merged_one_by_one(tmp_path, 4)
    folder = tmp_path / "exp" / tables.TRIALS
    seen = []

    def write(out):  # what lies in the folder while a writer is half way
        out.write(b"PAR1 half a file")
        out.flush()
        seen.extend(p.name for p in folder.iterdir() if ".tmp-" in p.name)

    table_folder.write_atomic(table_folder.pafs.LocalFileSystem(), f"{folder}/x.json", write)
    (name,) = seen
    assert name.startswith(".x.json.tmp-") and (folder / "x.json").exists()
    (folder / "x.json").unlink()
    aside = folder / ".L0-000000099-000000099.parquet.tmp-0123abcd"  # as a killed writer leaves it
    aside.write_bytes(b"PAR1 half a file")
    want = _sorted(tables.read_table(exp, tables.TRIALS), tables.TRIALS)
    readers = [pd.read_parquet(folder), ds.dataset(str(folder)).to_table().to_pandas()]
    try:
        import duckdb

        readers.append(duckdb.sql(f"select * from '{folder}'").df())
    except ImportError:
        pass
    for other in readers:
        assert _same(_sorted(other, tables.TRIALS), want)
    tables.write_part(exp, "late", {"trials": [{"trial_id": "late", "kind": "defender", "status": "ok"}]})
    tables.merge(exp, ["late"])
    assert aside.exists() is False and tables.read_table(exp, tables.TRIALS).num_rows == len(want) + 1


def test_rows_of_a_trial_whose_merge_died_before_its_trial_row_are_removed(tmp_path, small_folders):
    from search import table_folder

    parts, exp = _merged_one_by_one(tmp_path, 5)
    n = tables.read_table(exp, tables.CURVES).num_rows
    fs, base = tables.resolve(exp)
    orphan = [{**parts["t00002"]["curves"][0], "trial_id": "ghost"}]
    table_folder.append(fs, f"{base}/{tables.CURVES}", tables.to_table(orphan, tables.CURVE_COLUMNS), tables.CURVE_COLUMNS)
    tables._merged.clear()  # a new driver (--resume)
    assert tables.catch_up(exp) == [] and tables.read_table(exp, tables.CURVES).num_rows == n


def test_what_a_merge_reads_and_writes_does_not_grow_with_the_trials_before_it(tmp_path, small_folders, monkeypatch):
    """The cost of trial N's bookkeeping, counted: one part read, and rows written bounded by
    FAN_IN ** TOP appends whatever N (a merge of the top level never happens)."""
    from search import table_folder

    parts = _synthetic_parts(tmp_path, 60, attacks=1)
    exp = str(tmp_path / "exp")
    ids = [t for t in parts if t not in ("pure", "reference")]
    for tid in ("pure", "reference"):
        tables.write_part(exp, tid, parts[tid])
        tables.merge(exp, [tid])
    reads, written = [], []
    real_read, real_write = tables.read_part, table_folder._write
    monkeypatch.setattr(tables, "read_part", lambda e, t: reads.append(t) or real_read(e, t))
    monkeypatch.setattr(table_folder, "_write", lambda fs, p, t: written.append(t.num_rows) or real_write(fs, p, t))
    per_trial = []
    for tid in ids:
        tables.write_part(exp, tid, parts[tid])
        reads.clear(), written.clear()
        tables.merge(exp, [tid])
        assert reads == [tid]
        per_trial.append(max(written))
    curve_rows = len(parts[ids[1]]["curves"])  # per trial
    assert max(per_trial) <= 3 ** 2 * curve_rows  # FAN_IN ** TOP appends of curves at most
    assert max(per_trial[-20:]) <= max(per_trial[:30])  # no larger at the end than early on


def test_a_full_disk_at_a_table_write_leaves_nothing_half_written_and_a_retry_completes(tmp_path, small_folders, monkeypatch):
    """ENOSPC injected at the k-th Parquet write of a run's merges (appends, merges of a level,
    rewrites when a baseline lands): the merge raises StorageFull naming the file, no temporary
    file is left, once a new driver reads them a trial is in every table or in none, and merging again once there is space
    (a new driver: --resume) gives the tables of a run that never failed."""
    import errno

    from search import table_folder

    parts = _synthetic_parts(tmp_path, 6)
    once = tables.write_tables(str(tmp_path / "once"), parts)
    real = table_folder.pq.write_table
    for k in (1, 2, 3, 5, 8, 13, 21):
        exp = str(tmp_path / f"exp{k}")
        for tid, part in parts.items():
            tables.write_part(exp, tid, part)
        tables._merged.clear()
        written = []

        def full(table, out, *a, **kw):
            written.append(table.num_rows)
            if len(written) == k:
                out.write(b"PAR1 half a file")  # the disk fills up mid-file
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(table, out, *a, **kw)

        monkeypatch.setattr(table_folder.pq, "write_table", full)
        with pytest.raises(tables.StorageFull) as failed:
            for tid in parts:
                tables.merge(exp, [tid])
        monkeypatch.setattr(table_folder.pq, "write_table", real)
        assert failed.value.filename.endswith(".parquet") and "no space" in str(failed.value)
        assert not list((tmp_path / f"exp{k}").rglob("*.tmp-*"))
        held = set(tables.read_table(exp, tables.TRIALS).column("trial_id").to_pylist())
        tables._merged.clear()  # --resume: a new driver
        tables._state(exp)
        for name in (tables.ATTACKS, tables.CURVES):  # no trial in attacks or curves but not in trials
            assert set(tables.read_table(exp, name).column("trial_id").to_pylist()) <= held
        tables.catch_up(exp)
        for name in (tables.TRIALS, tables.ATTACKS, tables.CURVES):
            assert _same(_sorted(tables.read_table(exp, name), name), _sorted(once[name], name)), (k, name)


def test_run_py_stops_on_a_full_disk_with_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    from search import driver, run

    def full(cfg, name, storage, resume=False):
        raise tables.StorageFull(f"{storage}/{name}/trials.parquet/L0-000000007-000000007.parquet")

    monkeypatch.setattr(driver, "run_experiment", full)
    code = run.main(["--storage", str(tmp_path), "--name", "full"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "no space left" in err[0] and "L0-000000007" in err[0] and "--resume" in err[0]


def test_reading_string_columns_dictionary_encoded_gives_the_same_values(tmp_path):
    """``read_table(..., dictionary=True)``: the same rows and values, strings as dictionaries
    (categorical in pandas), a filter on one still pushed down."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    parts = _synthetic_parts(tmp_path, 5)
    exp = str(tmp_path / "exp")
    for tid, part in parts.items():
        tables.write_part(exp, tid, part)
        tables.merge(exp, [tid])
    for name in (tables.TRIALS, tables.ATTACKS, tables.CURVES):
        plain, coded = tables.read_table(exp, name), tables.read_table(exp, name, dictionary=True)
        assert [f.name for f in plain.schema] == [f.name for f in coded.schema]
        for f, g in zip(plain.schema, coded.schema):
            assert g.type == (pa.dictionary(pa.int32(), pa.string()) if pa.types.is_string(f.type) else f.type)
        assert coded.cast(plain.schema).equals(plain)
    tid = next(t for t in sorted(parts) if parts[t].get("curves"))
    one = tables.read_table(exp, tables.CURVES, filter=ds.field("trial_id") == tid, dictionary=True).to_pandas()
    assert len(one) == len(parts[tid]["curves"]) and set(one["trial_id"]) == {tid}
    assert str(one["metric"].dtype) == "category"
