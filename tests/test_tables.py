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
