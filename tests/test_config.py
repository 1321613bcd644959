import subprocess
import sys

import pytest

from search import config, driver
from tests.conftest import ROOT


def test_quick_config_loads():
    cfg = config.load()
    assert cfg.defender.method == "graddiff" and cfg.search.trials >= 1
    assert set(cfg.defender.search_space()["graddiff"]) == {"lr", "steps", "lam"}


@pytest.mark.parametrize("override, field", [
    ("attack.budget=-1", "attack.budget"),
    ("defender.loop.lr=-1", "defender.loop.lr"),
    ("pretrain.reference.lr=-0.1", "pretrain.reference.lr"),
    ("search.trials=many", "search.trials"),
    ("bogus=1", "bogus"),
    ("defender.method=rmu_typo", "defender.method"),
    ("defender.space.lr=[1.0e-2,1.0e-3]", "space.lr"),
    ("defender.space.nope=[1,2]", "nope"),
    ("defender.space.lr=[0,1]", "space.lr"),
    ("setting.forget_eval_fraction=1.5", "setting.forget_eval_fraction"),
    ("model.n_head=3", "n_head"),
    ("scaling.use_gpu=true,scaling.gpus_per_worker=2", "gpus_per_worker"),
    ("scaling.strategy=fsdp", "strategy"),
    ("scaling.resources={GPU: 1}", "resources.GPU"),
    ("scaling.resources={fake_gpu: 0}", "resources.fake_gpu"),
])
def test_bad_values_name_the_field(override, field):
    with pytest.raises(config.ConfigError, match=field.replace(".", r"\.").replace("[", r"\[")):
        config.load(None, override.split(",") if override.startswith("scaling.use_gpu") else [override])


def test_missing_file_and_bad_override():
    with pytest.raises(config.ConfigError, match="--config"):
        config.load("no/such.yaml")
    with pytest.raises(config.ConfigError, match="--set"):
        config.load(None, ["novalue"])


def _cli(capsys, *args: str) -> tuple[int, str]:
    """``search/run.py`` in this process (a subprocess costs seconds of imports per case):
    (exit status, stderr). One case of each kind also runs as a real process below."""
    from search.run import main

    capsys.readouterr()
    code = main(list(args))
    return code, capsys.readouterr().err


def _one_line_error(code: int, err: str, needle: str) -> None:
    assert code == 2 and err.startswith("error:") and needle in err and len(err.strip().splitlines()) == 1


def test_cli_exits_2_with_one_message_before_ray(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "search" / "run.py"), "--storage", str(tmp_path), "--set", "attack.budget=-1"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    _one_line_error(out.returncode, out.stderr, "attack.budget")
    assert "Ray" not in out.stdout + out.stderr and list(tmp_path.iterdir()) == []


def test_validating_a_config_imports_neither_transformers_nor_peft():
    """--help, --check and every exit 2 validate the config only: transformers' model classes
    and peft (about 3 s of imports) load where a model is built or wrapped, not before."""
    code = ("import sys; import search.run; "
            "print(sorted(m for m in ('transformers', 'peft', 'ray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("args, needle", [
    (["--config", "missing.yaml"], "no such file"),
    (["--set", "defender.loop.lr=-1"], "defender.loop.lr"),
])
def test_cli_exits_2_with_one_message(tmp_path, monkeypatch, capsys, args, needle):
    monkeypatch.chdir(tmp_path)
    _one_line_error(*_cli(capsys, "--storage", str(tmp_path), *args), needle)
    assert list(tmp_path.iterdir()) == []


def test_cli_refuses_to_overwrite_an_experiment(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "trials.parquet").write_text("keep me")
    out = subprocess.run(
        [sys.executable, str(ROOT / "search" / "run.py"), "--storage", str(tmp_path), "--name", "mine"],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 2 and "--resume" in out.stderr
    assert (tmp_path / "mine" / "trials.parquet").read_text() == "keep me"


def test_trial_concurrency_is_sized_to_the_clusters_gpus():
    base = ["scaling.num_workers=2", "scaling.use_gpu=true", "scaling.gpus_per_worker=1"]
    cfg = config.load(None, base)
    assert driver.trial_concurrency(cfg, 8) == 4  # 2 GPUs per trial
    assert driver.trial_concurrency(config.load(None, [*base, "attack.concurrency=2"]), 8) == 2
    assert driver.trial_concurrency(config.load(None, [*base, "scaling.cluster_gpus=16"]), 0) == 8  # autoscaling
    assert driver.trial_concurrency(config.load(None, [*base, "search.max_concurrent=3"]), 8) == 3
    assert driver.trial_concurrency(config.load(None, []), 0) is None  # CPUs: Tune decides
    with pytest.raises(config.ConfigError, match="scaling.cluster_gpus"):
        driver.trial_concurrency(cfg, 1)


def test_in_process_gpu_stages_hold_the_trials_gpu():
    """``num_workers: 0`` with ``use_gpu``: stages run in the trial's (or task's) own process on
    its GPU share; a fraction lets trials share a GPU; Ray Train is asked for no GPU."""
    cfg = config.load(None, ["scaling.use_gpu=true", "scaling.gpus_per_worker=0.25", "attack.concurrency=2"])
    s = cfg.scaling
    assert driver.trial_resources(cfg) == {"cpu": 1.0, "gpu": 0.25}
    assert s.task_options() == {"num_gpus": 0.25}
    assert s.train_scaling() == {"num_workers": 0, "use_gpu": False}
    assert driver.trial_concurrency(cfg, 2) == 8  # concurrent attacks share the trial's share
    with_workers = config.load(None, ["scaling.use_gpu=true", "scaling.num_workers=1"])
    assert driver.trial_resources(with_workers) == {"cpu": 0.25} and with_workers.scaling.task_options() == {}
    assert with_workers.scaling.train_scaling()["resources_per_worker"] == {"CPU": 1.0, "GPU": 1.0}
    pinned = config.load(None, ["scaling.resources={big: 1}"])
    assert driver.trial_resources(pinned) == {"cpu": 1.0, "big": 1} and pinned.scaling.task_options() == {"resources": {"big": 1}}


def test_in_process_gpu_config_is_checked_before_any_work(tmp_path, capsys):
    code, err = _cli(capsys, "--storage", str(tmp_path / "s"), "--set", "scaling.use_gpu=true",
                     "--set", "scaling.gpus_per_worker=2")
    _one_line_error(code, err, "scaling.gpus_per_worker")
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("name", ["..", ".", ".hidden", "a/b", "../up", "x y"])
def test_cli_names_are_one_folder_name(tmp_path, capsys, name):
    (tmp_path / "config.yaml").write_text("unrelated: keep me")
    argv = ["--storage", str(tmp_path / "s"), "--name", name, "--resume"]
    if name == "..":  # once as a real process: the exit status and stderr a shell sees
        out = subprocess.run([sys.executable, str(ROOT / "search" / "run.py"), *argv],
                             capture_output=True, text=True, timeout=120)
        code, err = out.returncode, out.stderr
    else:
        code, err = _cli(capsys, *argv)
    _one_line_error(code, err, "--name")
    assert err.startswith("error: --name")
    assert (tmp_path / "config.yaml").read_text() == "unrelated: keep me" and not (tmp_path / "s").exists()


def test_an_experiment_is_claimed_once_and_a_dead_runs_lock_is_released(tmp_path):
    from search.run import claim

    lock = claim(str(tmp_path), "exp", resume=False)
    assert (tmp_path / "exp").is_dir()
    with pytest.raises(config.ConfigError, match="exists"):
        claim(str(tmp_path), "exp", resume=False)  # the same name started twice
    # a --resume while the first run is alive, from another process (flock is per open file)
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from search.run import claim; claim({str(tmp_path)!r}, 'exp', True)"
    busy = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert busy.returncode != 0 and "another run is writing" in busy.stderr
    lock.close()  # what the OS does when the first run dies
    free = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert free.returncode == 0, free.stderr
    (tmp_path / "file").write_text("x")
    with pytest.raises(config.ConfigError, match="is a file"):
        claim(str(tmp_path / "file"), "exp", resume=False)


def test_resume_refuses_a_config_that_changes_results(tmp_path, capsys):
    import yaml

    from search import tables

    exp = tmp_path / "exp"
    exp.mkdir()
    cfg = config.load(None, ["attack.budget=4", "search.trials=3"])
    (exp / tables.CONFIG).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    (exp / "trials.parquet").write_text("keep me")
    base = ["--storage", str(tmp_path), "--name", "exp", "--resume"]
    code, err = _cli(capsys, *base, "--set", "attack.budget=8", "--set", "search.trials=5")
    assert code == 2 and len(err.splitlines()) == 1
    assert "attack.budget (4 → 8)" in err and "search.trials (3 → 5)" in err
    assert (exp / "trials.parquet").read_text() == "keep me"
    assert yaml.safe_load((exp / tables.CONFIG).read_text())["attack"]["budget"] == 4  # not rewritten
    code, err = _cli(capsys, *base, "--set", "attack.budget=4", "--set", "search.trials=3",
                     "--set", "search.max_concurrent=1", "--check")
    assert code == 0, err  # where and how many at once: accepted


BAD_INPUTS = [
    # (config file text or None for quick.yaml, overrides, the field the one line must name)
    (None, ["search.trials=true"], "search.trials: must be a number"),
    (None, ["seed=yes"], "seed: must be a number"),
    (None, ["defender.params.lr=.inf"], "defender.params.lr: must be a finite number"),
    (None, ["attack.space.lr=[1e-4, .nan]"], "attack.space.lr.1: must be a finite number"),
    (None, ["attack.loop.lr=.nan"], "attack.loop.lr: must be a finite number"),
    (None, ["search.trials=1000000000000"], "search.trials: Input should be less than or equal to 10000000"),
    (None, ["pretrain.reference.steps=1e12"], "pretrain.reference.steps"),
    (None, ["attack.space.steps=[20, 1e12]"], "attack.space.steps: 1000000000000 is beyond"),
    (None, ["storage=ftp://host/x"], "storage: unknown URI scheme 'ftp'"),
    (None, ["cache_dir=/etc/hostname/sub"], "cache_dir: /etc/hostname is a file"),
    (None, ["defender.method=tar", "defender.space.subsample=[1, 8]", "defender.space.inner_steps=[4, 16]"],
     "defender.space.subsample: can reach 8 while inner_steps can be 4"),
    (None, ["defender.space.lr=[1e-4, 1e-3, 1e-2]"], "defender.space.lr: must be [low, high]"),
    (None, ["attack.reseeds=-1"], "attack.reseeds"),
    (None, ["attack.budget_flops=0"], "attack.budget_flops"),
    (None, ["attack.pruner=hyperband"], "attack.pruner"),
    (None, ["setting.report_fraction=1.5"], "setting.report_fraction"),
    (None, ["attack.prior=9"], "attack.prior"),
    (None, ["defender.method=rmu", "defender.params.layer=2"],
     "defender.params.layer: 2 is not among the model's 2 decoder layers (model.n_layer"),
    (None, ["defender.method=circuit_breakers", "defender.params.layers=[0, -3]"],
     "defender.params.layers: -3 is not among the model's 2 decoder layers"),
    (None, ["defender.method=circuit_breakers", "defender.params.layers=[]"], "defender.params.layers: an empty list"),
    (None, ["defender.method=[rmu, lat]", "defender.params.lat.layer=-3"], "defender.params.lat.layer: -3 is not among"),
    (None, ["defender.method=lat", "defender.safeguard.method=rmu", "defender.safeguard.params.layer=4"],
     "defender.safeguard.params.layer: 4 is not among"),
    (None, ["search.trials=[1"], "--set search.trials:1:3: not valid YAML"),
    ("experiment: x\nseed: 1\nseed: 2\n", [], ":3:1: not valid YAML: duplicated key 'seed'"),
    ("attack:\n  budget: 4\nattack:\n  budget: 8\n", [], "duplicated key 'attack'"),
    ("search: {trials: 4\n", [], "c.yaml:2:1: not valid YAML"),
    (b"seed: 1\nexperiment: caf\xe9\n", [], "c.yaml: not UTF-8 text (byte 23)"),
    ("- a\n- b\n", [], "top level must be a mapping"),
]


@pytest.mark.parametrize("text,overrides,message", BAD_INPUTS)
def test_bad_inputs_get_one_line_naming_the_field(tmp_path, text, overrides, message):
    path = None
    if text is not None:
        path = tmp_path / "c.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(config.ConfigError) as err:
        config.load(path, overrides)
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_scientific_notation_is_a_number_in_files_and_overrides(tmp_path):
    cfg = config.load(None, ["defender.space.lr=[1e-4,1e-3]", "attack.params.lr=3e-3"])
    assert cfg.defender.space["lr"] == [1e-4, 1e-3] and cfg.attack.params["lr"] == 3e-3
    quick = (ROOT / "configs" / "quick.yaml").read_text()
    assert "reference: {steps: 3000, lr: 3.0e-3" in quick
    (tmp_path / "c.yaml").write_text(quick.replace("reference: {steps: 3000, lr: 3.0e-3", "reference: {steps: 3e3, lr: 3e-3"))
    ref = config.load(tmp_path / "c.yaml").pretrain.reference
    assert (ref.steps, ref.lr) == (3000, 3e-3)


def test_bad_storage_on_the_command_line_exits_2_before_anything_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    for value in (str(tmp_path / "afile"), "ftp://host/results"):
        code, err = _cli(capsys, "--storage", value)
        _one_line_error(code, err, "--storage")
        assert err.startswith("error: --storage")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_a_config_extends_another_and_states_only_what_differs(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "child.yaml").write_text("base: ../base.yaml\nexperiment: child\nattack: {prior: 2}\n")
    (tmp_path / "base.yaml").write_text(f"base: {config.DEFAULT_CONFIG}\nattack: {{budget: 3, loop: {{eval_every: 10}}}}\n")
    child, quick = config.load(tmp_path / "sub" / "child.yaml"), config.load()
    assert child.experiment == "child" and child.attack.prior == 2 and child.attack.budget == 3
    assert child.attack.loop.eval_every == 10 and child.attack.loop.batch_size == quick.attack.loop.batch_size  # merged
    assert child.model_dump(exclude={"experiment", "attack"}) == quick.model_dump(exclude={"experiment", "attack"})
    for name in ("quick_methods", "undo_arithmetic", "tar_arithmetic"):  # the shipped arithmetic configs share quick's
        cfg = config.load(config.CONFIG_DIR / f"{name}.yaml")
        assert (cfg.setting, cfg.model, cfg.pretrain) == (quick.setting, quick.model, quick.pretrain)
        assert (cfg.attack.prior, cfg.attack.reseeds) == (3, 2)  # the defaults, not quick's small ones


def test_method_all_is_every_unlearning_method_of_the_registry():
    from trainables.methods import METHODS

    every = config.load(config.CONFIG_DIR / "quick_methods.yaml")
    assert every.defender.methods == list(METHODS) and "tar" not in every.defender.methods
    assert config.load(None, ["defender.method=all"]).defender.methods == list(METHODS)
    with pytest.raises(config.ConfigError, match="defender.method"):
        config.load(None, ["defender.method=everything"])


@pytest.mark.parametrize("text, needle", [
    ("base: missing.yaml\n", "base: no such file"),
    ("base: loop.yaml\n", "base: cycle"),
    ("base: [quick.yaml]\n", "base: expected the path"),
])
def test_a_bad_base_is_named(tmp_path, text, needle):
    (tmp_path / "loop.yaml").write_text(text)
    with pytest.raises(config.ConfigError, match=needle):
        config.load(tmp_path / "loop.yaml")


@pytest.mark.parametrize("args, needle", [
    (["--storage", "/sys/tamper-search-test"], "storage /sys/tamper-search-test: cannot write there"),
    (["--set", "cache_dir=/sys/tamper-search-test"], "cache_dir /sys/tamper-search-test: cannot write there"),
])
def test_storage_or_cache_that_cannot_be_written_exits_2_before_any_work(tmp_path, monkeypatch, capsys, args, needle):
    """/sys refuses new folders even to root (who may write anywhere chmod could forbid)."""
    monkeypatch.chdir(tmp_path)
    base = [] if args[0] == "--storage" else ["--storage", str(tmp_path / "results")]
    _one_line_error(*_cli(capsys, *base, *args), needle)
    assert not (tmp_path / "results").exists() or list((tmp_path / "results").iterdir()) == []


def test_layer_indices_are_checked_against_the_models_layers_wherever_they_are_known(tmp_path):
    """A fresh model's ``n_layer``, a known paper model's shape and a local checkpoint's
    ``config.json`` give the layer count when the config loads; a hub id this machine has no
    config of is left to the stage (no download to validate a config)."""
    from trainables.architectures import decoder_layers_of

    assert decoder_layers_of("meta-llama/Meta-Llama-3-8B-Instruct") == 32
    assert decoder_layers_of("google/gemma-2-2b") == 26
    assert decoder_layers_of("someone/unknown-model") is None
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "config.json").write_text('{"model_type": "gpt2", "n_layer": 3}')
    (tmp_path / "llava").mkdir()
    (tmp_path / "llava" / "config.json").write_text('{"text_config": {"num_hidden_layers": 5}}')
    assert decoder_layers_of(str(tmp_path / "gpt2")) == 3
    assert decoder_layers_of(str(tmp_path / "llava")) == 5
    config.load(None, ["defender.method=rmu", "defender.params.layer=-2"])  # both layers of two: fine
    config.load(None, ["model.n_layer=3", "defender.method=rmu", "defender.params.layer=2"])
    with pytest.raises(config.ConfigError, match="defender.params.layer: 3 is not among the model's 3 decoder layers"):
        config.load(None, ["model.n_layer=3", "defender.method=rmu", "defender.params.layer=3"])
