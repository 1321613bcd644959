"""Every fenced block of README.md and docs/, read from the files and tested as written (see
``tests/readme_blocks.py`` for the markers; the `ray job submit` block is run by
``tests/test_ray_job.py``). What a test substitutes is named where it does so: a tiny config
through ``TAMPER_SEARCH_CONFIG``, and a local folder for a bucket the test cannot reach."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from search import tables
from tests.readme_blocks import DOCS, README, ROOT, blocks, commands, of_kind, tiny_config

KINDS = {"quickstart", "analysis", "ray-job", "python", "cloud", "usage", "layout", "output", "diagram",
         "progress", "config"}


def _bash(script: str, cwd: Path, env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_every_block_is_marked_with_how_it_is_tested():
    found = blocks()
    unmarked = [f"{b.path.name}:{b.line}" for b in found if b.kind is None]
    assert not unmarked, f"blocks at {unmarked} have no <!-- readme-test: KIND --> marker"
    assert {b.kind for b in found} <= KINDS, {b.kind for b in found} - KINDS
    assert len(of_kind("quickstart")) == 1 and len(of_kind("ray-job")) == 1
    assert {b.path for b in found if b.kind in ("quickstart", "ray-job")} == {README}


def test_the_readme_fits_in_a_head_and_leads_to_every_page_whose_links_resolve():
    """README ≤ 200 lines, each docs/ page ≤ 300; every page linked from the README; every
    relative link of README and docs/ names a file that exists."""
    assert len(README.read_text().splitlines()) <= 200
    assert DOCS and all(len(p.read_text().splitlines()) <= 300 for p in DOCS), \
        {p.name: len(p.read_text().splitlines()) for p in DOCS}
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)\)", README.read_text()))
    assert linked == {f"docs/{p.name}" for p in DOCS}
    for page in (README, *DOCS):
        for target in re.findall(r"\]\(([^)#:\s]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), (page.name, target)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """The quick-start block's run command, exactly as written, in the checkout, with
    ``TAMPER_SEARCH_CONFIG`` naming a tiny config whose storage and cache are temporary."""
    tmp = tmp_path_factory.mktemp("quickstart")
    env = {**os.environ, "TAMPER_SEARCH_CONFIG": str(tiny_config(tmp)), "RAY_USAGE_STATS_ENABLED": "0"}
    runs = [c for c in commands(of_kind("quickstart")[0].text) if "pytest" not in c]
    assert runs == ["bash scripts/setup.sh && .venv/bin/python search/run.py"], runs
    out = _bash(runs[0], ROOT, env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (exp,) = [p for p in (tmp / "results").iterdir() if p.name.startswith("quick-")]
    return exp, out.stdout


def test_quickstart_runs_the_quick_experiment_and_ci_runs_its_test_command(quick_run):
    exp, stdout = quick_run
    assert "tamper-search ready" in stdout and "Pareto set" in stdout
    for name in (tables.TRIALS, tables.ATTACKS, tables.CURVES):
        assert len(pd.read_parquet(exp / name)) > 0
    # the test command is what CI runs: .ci/run executes it verbatim
    tests = [c for c in commands(of_kind("quickstart")[0].text) if "pytest" in c]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests and all(c in ci for c in tests), (tests, ci)


def test_analysis_block_runs_as_written(quick_run, tmp_path):
    """Run in a folder holding the experiment under the README's own names; the bucket in the
    second command becomes a local ``file://`` folder (the same ``pyarrow.fs`` calls)."""
    exp, _ = quick_run
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    results = tmp_path / "results"
    results.mkdir()
    for name in ("quick-20261124-005129", "A", "B"):
        (results / name).symlink_to(exp)
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    (bucket / "C").symlink_to(exp)
    script = of_kind("analysis")[0].text.replace("s3://bucket/C", f"file://{bucket}/C")
    out = _bash(script, tmp_path, {**os.environ}, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert out.stdout.count("Pareto set") >= 4  # one experiment, then three
    assert (exp / "report.md").exists() and (tmp_path / "report" / "report.html").exists()
    assert (tmp_path / "report" / "pareto_all.png").exists()


def test_python_block_reads_the_table_without_the_project(quick_run, tmp_path):
    exp, _ = quick_run
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "quick-20261124-005129").symlink_to(exp)
    code = of_kind("python")[0].text + "print(len(trials), list(trials.columns[:3]))\n"
    out = subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "['experiment', 'trial_id', 'kind']" in out.stdout
    assert "best_worst_case" in out.stdout and "graddiff" in out.stdout  # the DuckDB query ran


def test_cloud_block_names_existing_files_and_a_valid_command_line():
    """The AWS submit cannot run here: the files it names exist and the job's command line
    passes ``--check`` (config, overrides and storage URIs validated; nothing starts)."""
    (cmd,) = commands(of_kind("cloud")[0].text)
    argv = shlex.split(cmd)
    assert argv[0].startswith("RAY_API_SERVER_ADDRESS=") and argv[1:4] == ["ray", "job", "submit"]
    submit, job = argv[: argv.index("--")], argv[argv.index("--") + 1:]
    assert (ROOT / submit[submit.index("--runtime-env") + 1]).is_file()
    assert job[:2] == ["python", "search/run.py"] and (ROOT / job[job.index("--config") + 1]).is_file()
    out = subprocess.run([sys.executable, *job[1:], "--check"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "storage: s3://my-bucket/tamper-search/results" in out.stdout


def test_usage_block_lists_exactly_the_options_of_run_py():
    usage = set(re.findall(r"--[a-z-]+", of_kind("usage")[0].text))
    out = subprocess.run([sys.executable, "search/run.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    options = set(re.findall(r"^\s+(--[a-z-]+)", out.stdout, re.M)) - {"--help"}
    assert usage == options, (usage, options)


def test_layout_block_names_folders_that_exist():
    names = [line.split()[0] for line in of_kind("layout")[0].text.splitlines() if line and not line[0].isspace()]
    assert names and all((ROOT / n).exists() for n in names), [n for n in names if not (ROOT / n).exists()]


def test_progress_block_is_what_the_display_renders():
    from search import progress

    (block,) = of_kind("progress")
    s = progress.Snapshot(total=8, done=3, failed=0, running=2, attacks_done=27, attacks_running=2,
                          attacks_queued=7, best=0.142, elapsed_s=133, remaining_s=220)
    assert block.text.strip() == progress.render(s)


def test_config_blocks_load_as_written_onto_the_quick_config(tmp_path):
    import yaml

    from search import config, tracking

    for block in of_kind("config"):
        raw = yaml.safe_load((ROOT / "configs" / "quick.yaml").read_text())
        raw.update(yaml.safe_load(block.text))
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(raw))
        cfg = config.load(path)
        assert tracking.check(cfg.tracking, str(tmp_path / "results" / "x")) is None


def test_the_configuration_reference_is_what_the_config_models_say():
    """docs/configuration.md is generated (``python -m search.config_reference``): a field added,
    removed or changed without regenerating it fails here."""
    from search import config_reference

    assert (ROOT / "docs" / "configuration.md").read_text() == config_reference.page(), \
        "regenerate: .venv/bin/python -m search.config_reference > docs/configuration.md"


def test_the_methods_table_is_what_the_method_and_space_files_say():
    """docs/methods.md is generated from the registry (``python -m search.methods_table``): a
    method added or a default changed without regenerating it fails here."""
    from search import methods_table

    assert (ROOT / "docs" / "methods.md").read_text() == methods_table.page(), \
        "regenerate: .venv/bin/python -m search.methods_table > docs/methods.md"


def test_the_benchmark_tables_are_what_their_result_files_say():
    """Every table block in docs/ is generated from the committed JSON it names
    (``python bench/docs_tables.py``), and every page's benchmark tables are such blocks."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_tables", ROOT / "bench" / "docs_tables.py")
    docs_tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(docs_tables)
    blocks = 0
    for page in docs_tables.pages():
        text = page.read_text()
        assert docs_tables.render(text) == text, f"{page.name}: regenerate with .venv/bin/python bench/docs_tables.py"
        for _, kind, file, _, _ in docs_tables.BLOCK.findall(text):
            assert list(ROOT.glob(file)) and kind in docs_tables.TABLES
            blocks += 1
    assert blocks >= 5
    changed = docs_tables.render("<!-- table: quick_cold bench/results/2026-12-07-quick-cold.json -->\n| stale |\n<!-- end table -->")
    assert "| stale |" not in changed and "**6 min 53 s**" in changed
