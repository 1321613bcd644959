"""Stage functions on a tiny budget, in-process (no Ray), and the stage cache."""

import pytest
import torch

import json

from search.runner import Runner, cache_key, canonical, run_stage
from search.trial import common_spec, pretrain_spec, method_spec
from search.adversary import attack_spec
from trainables import attack, models
from trainables import data as data_mod
from search.defender_config import resolve
from trainables.defence_spec import REFERENCE, SUPPRESSED
from trainables.settings import arithmetic
from tests.conftest import ROOT


def test_pretrain_unlearn_attack_and_cache(tiny_cfg, tmp_path):
    runner = Runner(tmp_path / "cache", executor="local")
    ref = run_stage(runner, "pretrain", pretrain_spec(tiny_cfg, "reference"))
    assert not ref.cached and (ref.path / "model.safetensors").exists()
    assert {"retain_acc", "forget_acc"} <= set(ref.result["metrics"])
    again = run_stage(runner, "pretrain", pretrain_spec(tiny_cfg, "reference"))
    assert again.cached and again.key == ref.key

    params = {"lr": 1e-3, "steps": 5, "lam": 1.0}
    released = run_stage(runner, "unlearn", method_spec(tiny_cfg, "graddiff", params), {"model": ref})
    before = models.load_model(ref.path).state_dict()
    after = models.load_model(released.path).state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # unlearning changed weights

    atk = run_stage(runner, "attack", attack_spec(tiny_cfg, {"lr": 1e-3, "steps": 6}, 0), {"model": released})
    m = atk.result["metrics"]
    forget_curve = [v for _, k, v in atk.result["curve"] if k == "forget_acc"]
    assert m["forget_acc_max"] == max(forget_curve) and m["forget_acc_final"] == forget_curve[-1]
    assert atk.result["flops"] == 6 * atk.result["n_params"] * 6 * 64 * 11
    # along the way V alone is scored (it alone chooses the checkpoint); retain once, at the end,
    # and it is the full score of the model the attack leaves
    retain = [(s, v) for s, k, v in atk.result["curve"] if k == "retain_acc"]
    assert len(forget_curve) > 1 and retain == [(6, m["retain_acc_final"])]
    model = models.load(str(released.path), {})
    again = attack.run(attack_spec(tiny_cfg, {"lr": 1e-3, "steps": 6}, 0), {"model": str(released.path)}, tmp_path,
                       model=model)
    assert again["curve"] == atk.result["curve"]
    assert arithmetic.score(model, arithmetic.build(tiny_cfg.setting))["retain_acc"] == m["retain_acc_final"]


def test_stage_key_depends_on_spec_and_inputs(tiny_cfg):
    a = cache_key("unlearn", method_spec(tiny_cfg, "graddiff", {"lr": 1e-3}), {"model": "k1"})
    assert a == cache_key("unlearn", method_spec(tiny_cfg, "graddiff", {"lr": 1e-3}), {"model": "k1"})
    assert a != cache_key("unlearn", method_spec(tiny_cfg, "graddiff", {"lr": 2e-3}), {"model": "k1"})
    assert a != cache_key("unlearn", method_spec(tiny_cfg, "graddiff", {"lr": 1e-3}), {"model": "k2"})
    # the key is the canonical dump: the same work given as a Spec or as its dict is one key
    spec = method_spec(tiny_cfg, "graddiff", {"lr": 1e-3})
    assert a == cache_key("unlearn", spec.model_dump(), {"model": "k1"})
    assert canonical("unlearn", spec) == json.loads(json.dumps(spec.model_dump()))


def test_a_spec_that_breaks_its_contract_fails_before_anything_is_written(tiny_cfg, tmp_path):
    import pytest

    runner = Runner(tmp_path / "cache", executor="local")
    spec = pretrain_spec(tiny_cfg, "pure").model_dump()
    with pytest.raises(ValueError, match="lr"):
        run_stage(runner, "pretrain", {**spec, "loop": {**spec["loop"], "lr": float("nan")}})
    with pytest.raises(ValueError, match="learning_rate"):
        run_stage(runner, "pretrain", {**spec, "learning_rate": 1e-3})  # not a field of the stage
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.json"))


def test_attack_trains_on_T_only_and_is_scored_on_V(tiny_cfg, tmp_path, monkeypatch):
    runner = Runner(tmp_path / "cache", executor="local")
    ref = run_stage(runner, "pretrain", pretrain_spec(tiny_cfg, "pure"))
    seen = []
    real_draw = data_mod.draw
    monkeypatch.setattr(data_mod, "draw", lambda t, n, g: seen.append(real_draw(t, n, g)) or seen[-1])
    run_stage(runner, "attack", attack_spec(tiny_cfg, {"lr": 1e-3, "steps": 3}, 0), {"model": ref})
    d = arithmetic.build(tiny_cfg.setting)
    trained = {arithmetic.decode(r) for b in seen for r in b}
    T = {arithmetic.decode(r) for r in d.forget_T}
    V = {arithmetic.decode(r) for r in d.forget_V}
    assert trained and trained <= T and not trained & V


def test_failed_stage_leaves_no_cache_entry(tiny_cfg, tmp_path, monkeypatch):
    import pytest

    runner = Runner(tmp_path / "cache", executor="local")
    monkeypatch.setattr(models, "save_model", lambda *a: (_ for _ in ()).throw(RuntimeError("disk full")))
    with pytest.raises(RuntimeError, match="disk full"):  # the stage fails after training
        run_stage(runner, "pretrain", pretrain_spec(tiny_cfg, "pure"))
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")] == []
    assert list((tmp_path / "cache" / ".staging").iterdir()) == []


def test_llama_style_model_builds_saves_and_loads_by_path(tmp_path):
    from trainables.models import ModelConfig, build_model, load_model, save_model

    cfg = ModelConfig(arch="llama", d_model=32, n_layer=1, n_head=2)
    model = build_model(cfg, len(arithmetic.VOCAB), arithmetic.SEQ_LEN)
    assert type(model).__name__ == "LlamaForCausalLM"
    save_model(model, tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").exists()
    loaded = build_model(ModelConfig(pretrained=str(tmp_path / "m")), 0, 0)
    x = torch.randint(0, len(arithmetic.VOCAB), (2, arithmetic.SEQ_LEN))
    assert torch.equal(model(input_ids=x).logits, loaded(input_ids=x).logits)
    assert type(load_model(tmp_path / "m")) is type(loaded)


def test_a_defender_is_a_pipeline_of_registered_stages():
    """Shallow: one unlearning step. UNDO: the method's unlearning, then a distillation of that
    suppressed model. TAR: its safeguard's unlearning (nothing searched reaches it), then TAR
    on it with the reference beside. Every step is a registered stage with a valid spec."""
    from search import config
    from trainables.stages import SPECS

    def stages(cfg, point):
        steps = resolve(cfg.defender, common_spec(cfg), point).steps
        for s in steps:
            SPECS[s.stage].model_validate(s.spec.model_dump())
        return [(s.stage, s.inputs) for s in steps], steps

    shallow = config.load(None, ["defender.method=graddiff"])
    assert stages(shallow, {"lr": 1e-3})[0] == [("unlearn", {"model": REFERENCE})]
    assert not shallow.defender.robust("graddiff")
    undo = config.load(ROOT / "configs" / "undo_arithmetic.yaml")
    got, steps = stages(undo, {"undo.alpha": 0.4})
    assert got == [("unlearn", {"model": REFERENCE}), ("distill", {"teacher": SUPPRESSED})]
    assert steps[1].spec.alpha == 0.4 and undo.defender.robust("maxent")
    tar = config.load(ROOT / "configs" / "tar_arithmetic.yaml")
    got, steps = stages(tar, {"inner_steps": 8})
    assert got == [("unlearn", {"model": REFERENCE}), ("tar", {"model": SUPPRESSED, "reference": REFERENCE})]
    assert steps[0].spec.method == "random_mapping" and steps[1].spec.params.inner_steps == 8
    assert resolve(tar.defender, common_spec(tar), {"inner_steps": 32}).steps[0].spec == steps[0].spec


def test_a_method_on_a_safeguard_is_a_trial_over_its_suppressed_baseline(tmp_path):
    """LAT on a GradDiff safeguard through the trial: the safeguard is the suppressed baseline
    (attacked once), LAT trains on it, both unlearnings are charged to flops.unlearn, and the
    curves keep the two apart."""
    from search import config, tables
    from search.trial import Context, baseline, defender, pretrained
    from tests.conftest import TINY

    cfg = config.load(None, [*TINY, f"cache_dir={tmp_path / 'cache'}", f"storage={tmp_path / 'results'}",
                             "defender.method=lat", "defender.safeguard={method: graddiff, params: {steps: 5}}",
                             "defender.params={steps: 3, pgd_steps: 1}"])
    ctx = Context(cfg, "exp", str(tmp_path / "exp"), Runner(tmp_path / "cache", "local"))
    reference = pretrained(ctx, "reference")
    sup = baseline(ctx, "suppressed", reference, method="lat")
    row = defender(ctx, "t1", {"epsilon": 2.0}, reference)
    assert row["status"] == "ok" and row["param.epsilon"] == 2.0
    assert row["suppressed_key"] == sup["model_key"] != row["model_key"]
    assert row["forget_acc_attacked_suppressed"] == sup["forget_acc_attacked"]
    lat = resolve(cfg.defender, common_spec(cfg), {"epsilon": 2.0}).steps[1]
    assert lat.name == "unlearn.lat" and lat.spec.loop.steps == 3
    assert row["flops.unlearn"] == sup["flops.unlearn"] + 6 * reference.result["n_params"] * 3 * 2 * 64 * 11
    assert row["compute_frac"] == pytest.approx(row["flops.unlearn"] / reference.result["flops"])
    curves = tables.read_parts(ctx.exp_dir)["t1"]["curves"]
    assert {c["stage"] for c in curves} >= {"unlearn", "unlearn.lat", "attack"}


def test_the_pure_baseline_waits_for_the_reference_only_after_its_own_pre_training(tmp_path):
    """The driver runs the pure baseline beside the reference's pre-training, handing it a
    function that waits for the reference: it is called only once the pure model is made (and
    under an attack count, after the attacks); the row is the one a finished reference gives."""
    from search import config, trial
    from search.runner import cached
    from search.trial import Context, baseline, pretrained, pretrained_key
    from tests.conftest import TINY

    cfg = config.load(None, [*TINY, f"cache_dir={tmp_path / 'cache'}"])
    ctx = Context(cfg, "exp", str(tmp_path / "exp"), Runner(tmp_path / "cache", "local"))
    reference = pretrained(ctx, "reference")
    events = []
    real_attack = trial._attack_released

    def wait():
        events.append(("wait", cached(ctx.runner, pretrained_key(cfg, "pure")) is not None))
        return reference

    def attack(*args):
        events.append(("attack", args[-1]))
        return real_attack(*args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trial, "_attack_released", attack)
        row = baseline(ctx, "pure", wait)
    assert events[0] == ("attack", None) and events[1] == ("wait", True)  # the pure model was made first
    assert row["model_key"] == pretrained_key(cfg, "pure") and row["status"] == "ok"
    pure = pretrained(ctx, "pure")
    assert row["compute_frac"] == pytest.approx(pure.result["flops"] / reference.result["flops"])
    assert pretrained_key(cfg, "reference") == reference.key


_TWO_PROCESSES = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from search import config
from search.runner import Runner, run_stage
from search.trial import pretrain_spec
from tests.conftest import TINY
cfg = config.load(None, [*TINY, "pretrain.reference.steps=150"])
me, other = Path({tmp!r}) / f"ready-{{sys.argv[1]}}", Path({tmp!r}) / f"ready-{{1 - int(sys.argv[1])}}"
me.touch()
while not other.exists():  # both imported: ask for the key at the same moment
    time.sleep(0.01)
ref = run_stage(Runner({cache!r}, executor="local"), "pretrain", pretrain_spec(cfg, "reference"))
print(json.dumps({{"key": ref.key, "cached": ref.cached, "result": ref.result}}))
"""


def test_two_processes_needing_one_stage_key_compute_it_once(tmp_path):
    """Two drivers (or two trials) that need the same stage at once: one computes it, the other
    waits for it, says so, and reuses the entry; both get the same result."""
    import subprocess
    import sys

    code = _TWO_PROCESSES.format(root=str(ROOT), tmp=str(tmp_path), cache=str(tmp_path / "cache"))
    procs = [subprocess.Popen([sys.executable, "-c", code, str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=ROOT) for i in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-2000:] for _, e in outs]
    got = [json.loads(o.strip().splitlines()[-1]) for o, _ in outs]
    from search import cache

    same = [{k: v for k, v in g["result"].items() if k != cache.MANIFEST} for g in got]  # the commit adds it
    assert got[0]["key"] == got[1]["key"] and same[0] == same[1]
    assert sorted(g["cached"] for g in got) == [False, True]  # one computation
    waiter = [e for (_, e), g in zip(outs, got) if g["cached"]][0]
    computer = [e for (_, e), g in zip(outs, got) if not g["cached"]][0]
    assert "waited" in waiter and "for another process computing it" in waiter and "waited" not in computer
    entries = [d for d in (tmp_path / "cache").iterdir() if not d.name.startswith(".")]
    assert len(entries) == 1
