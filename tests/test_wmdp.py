"""The `wmdp` setting on fixture files in the hub schemas, with tiny models loaded by path:
loaders, the prompt, the letter scorer (a known answer; against per-question log-likelihoods),
the Deeb & Roger split, the padded loss, and every defender and attack stage on tiny GPT-2,
Llama and Gemma-2 models."""

from __future__ import annotations

import json

import pytest
import torch

from search import config, tables
from search.adversary import attack_spec, family_spec
from spaces.attacks import PRIORS as FAMILY_PRIORS
from search.runner import Runner, run_stage
from search.trial import Context, common_spec, pretrained, suppress, method_spec
from tests import wmdp_fixtures as F
from trainables import models
from trainables.settings import wmdp

ARCHS = ("gpt2", "llama", "gemma2")


def _data(paths, **kw) -> wmdp.WmdpData:
    return wmdp.build(wmdp.Config(**F.setting(paths, **kw)))


def test_sources_load_from_jsonl_parquet_and_save_to_disk(wmdp_paths, tmp_path):
    rows = F.forget_questions()
    jsonl = wmdp.load_rows(wmdp.Source(path=str(wmdp_paths["wmdp"])))
    assert [dict(r) for r in jsonl] == rows
    parquet = tmp_path / "wmdp.parquet"
    jsonl.to_parquet(str(parquet))
    assert [dict(r) for r in wmdp.load_rows(wmdp.Source(path=str(parquet)))] == rows
    disk = wmdp.load_rows(wmdp.Source(path=str(wmdp_paths["retain_corpus"]), split="train", limit=7))
    assert disk["text"] == [r["text"] for r in F.corpus("retain")[:7]]
    with pytest.raises(ValueError, match="no split 'test'"):
        wmdp.load_rows(wmdp.Source(path=str(wmdp_paths["retain_corpus"]), split="test"))


def test_hub_ids_and_local_paths_are_told_apart(tmp_path):
    from trainables.sources import is_local

    assert not is_local("cais/wmdp") and not is_local("wikitext")
    for local in ("/data/x", "./x", "~/bio.jsonl", "corpus.parquet", str(tmp_path)):
        assert is_local(local)
    with pytest.raises(ValueError, match="no such file"):
        wmdp.Source(path=str(tmp_path / "missing.jsonl"))


def test_prompt_is_lm_eval_harness_zero_shot_format():
    text = wmdp.prompt("  What is X?\n", ["a", "b", "c", "d"], "biology")
    assert text == ("The following are multiple choice questions (with answers) about biology.\n\n"
                    "What is X?\nA. a\nB. b\nC. c\nD. d\nAnswer:")


def test_known_answer_a_model_forced_to_say_B(wmdp_paths, tmp_path):
    """GPT-2 with a constant final hidden state whose only aligned output row is " B": every
    question is answered B, so accuracy is exactly the share of questions whose answer is B."""
    d = _data(wmdp_paths)
    tok = wmdp.load_tokenizer(wmdp.Config(**F.setting(wmdp_paths)))
    model = models.load_model(wmdp_paths["gpt2"])
    v = torch.zeros(model.config.n_embd)
    v[0] = 1.0
    b = tok.encode(" B", add_special_tokens=False)[0]
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(v)
        model.lm_head.weight[:, 0] = 0.0
        model.lm_head.weight[b] = 10 * v  # tied to the input embedding: only " B" is aligned
    model.save_pretrained(str(tmp_path / "forced"))
    forced = models.load_model(tmp_path / "forced")  # scored as loaded by path
    for qs, key in ((d.forget_V, "forget_acc"), (d.retain_eval, "retain_acc")):
        assert (wmdp.letter_predictions(forced, qs, batch_size=4) == 1).all()
        assert wmdp.score(forced, d)[key] == pytest.approx((qs.answers == 1).float().mean().item())
    assert 0 < (d.forget_V.answers == 1).sum() < len(d.forget_V)  # the check can fail


@pytest.mark.parametrize("arch", ARCHS)
def test_batched_scorer_matches_per_question_log_likelihoods(wmdp_paths, arch):
    """One padded forward pass per batch = lm-eval's loglikelihood of each continuation " A" …
    " D" computed question by question, without padding."""
    d = _data(wmdp_paths)
    model = models.load_model(wmdp_paths[arch]).eval()
    qs = d.retain_eval
    expect = []
    with torch.no_grad():
        for i in range(len(qs)):
            ids = qs.ids[i, : qs.lengths[i]]
            ll = []
            for letter in qs.letters:
                seq = torch.cat([ids, letter.view(1)])[None]
                logp = model(input_ids=seq).logits.log_softmax(-1)[0, -2, letter]
                ll.append(logp.item())
            expect.append(max(range(len(ll)), key=ll.__getitem__))
    assert wmdp.letter_predictions(model, qs, batch_size=5).tolist() == expect


def test_deeb_roger_split_attacker_trains_on_T_and_is_scored_on_V(wmdp_paths):
    rows = wmdp.question_rows(wmdp.load_rows(wmdp.Source(path=str(wmdp_paths["wmdp"]))), "biology")
    T, V = wmdp.split_questions(rows, 0.5, seed=0)
    key = lambda r: json.dumps(r, sort_keys=True)  # noqa: E731
    assert len(T) + len(V) == len(rows) and not {key(r) for r in T} & {key(r) for r in V}
    assert wmdp.split_questions(rows, 0.5, seed=0) == (T, V)  # seeded
    d = _data(wmdp_paths, seq_len=64)
    tok = wmdp.load_tokenizer(wmdp.Config(**F.setting(wmdp_paths)))
    assert len(d.forget_T) == len(T) and len(d.forget_V) == len(V)
    for row, r in zip(d.forget_T, T):  # each attack row: a T question with its right answer
        text = tok.decode(row[row != d.pad_id])
        assert text.endswith(f"Answer : {'ABCD'[r['answer']]}") and r["question"][:-2] in text
    v_prompts = {tok.decode(ids[:n]) for ids, n in zip(d.forget_V.ids, d.forget_V.lengths)}
    for row in d.forget_T:
        assert tok.decode(row[row != d.pad_id]).rsplit(" ", 1)[0] not in v_prompts
    corpus = _data(wmdp_paths, attack_data="corpus")
    assert torch.equal(corpus.forget_T, corpus.forget_all)


def test_attack_loss_is_on_the_answer_letter_only(wmdp_paths, tmp_path, monkeypatch):
    """``attack.loss_on: answer`` (Deeb & Roger): each T row's target is its answer letter; the
    loss's gradient reaches the logits at the position predicting it and nowhere else; corpus
    (retain) rows keep every real token; ``all`` keeps the loss on the whole row."""
    from trainables import attack

    d = _data(wmdp_paths, seq_len=64)
    tok = wmdp.load_tokenizer(wmdp.Config(**F.setting(wmdp_paths)))
    assert d.forget_T_answer.sum(1).tolist() == [1] * len(d.forget_T)
    letters = {tok.decode(row[mask]).strip() for row, mask in zip(d.forget_T, d.forget_T_answer)}
    assert letters <= set("ABCD") and letters
    rows, targets = d.forget_T[:3], d.forget_T_answer[:3]
    logits = torch.randn(3, rows.shape[1], d.vocab_size, requires_grad=True)
    setting = wmdp.bind(wmdp.Config(**F.setting(wmdp_paths)), d)
    loss = attack.target_loss(setting, logits, rows, targets.long())
    by_hand = torch.stack([-logits[i, j - 1].log_softmax(-1)[rows[i, j]] for i, j in targets.nonzero().tolist()]).mean()
    torch.testing.assert_close(loss, by_hand)
    loss.backward()
    touched = logits.grad.abs().sum(-1) != 0
    assert torch.equal(touched[:, :-1], targets[:, 1:])  # only the positions predicting the answer

    cfg = _cfg(wmdp_paths, tmp_path)
    seen = []
    real = attack.target_loss
    monkeypatch.setattr(attack, "target_loss", lambda *a: seen.append(a[3]) or real(*a))
    ref = pretrained(Context(cfg, "exp", str(tmp_path / "exp"), Runner(tmp_path / "cache", "local")), "reference")
    point = {"kind": "full", "data": "mix", "lr": 1e-3, "steps": 2}
    run_stage(Runner(tmp_path / "cache", "local"), "attack", attack_spec(cfg, point, 0), {"model": ref})
    batch_targets = torch.cat(seen)
    assert (batch_targets.sum(1) == 1).any() and (batch_targets.sum(1) > 1).any()  # T rows and retain rows
    seen.clear()
    everything = cfg.model_copy(update={"attack": cfg.attack.model_copy(update={"loss_on": "all"})})
    run_stage(Runner(tmp_path / "cache", "local"), "attack", attack_spec(everything, point, 0), {"model": ref})
    assert not seen


def test_retain_questions_drop_excluded_subjects_and_subsample(wmdp_paths):
    full = _data(wmdp_paths)
    less = _data(wmdp_paths, exclude_subjects=["virology"])
    assert len(less.retain_eval) == len(full.retain_eval) - 6
    assert len(_data(wmdp_paths, retain_eval_size=5).retain_eval) == 5


def test_corpora_are_packed_into_full_rows(wmdp_paths):
    d = _data(wmdp_paths)
    tok = wmdp.load_tokenizer(wmdp.Config(**F.setting(wmdp_paths)))
    stream = []
    for r in F.corpus("forget"):
        stream += tok.encode(r["text"], add_special_tokens=False) + [tok.eos_token_id]
    n = len(stream) // 32
    assert torch.equal(d.forget_all, torch.tensor(stream[: n * 32]).view(n, 32))


def test_answer_loss_ignores_padding_targets():
    torch.manual_seed(0)
    logits, tokens = torch.randn(2, 5, 7), torch.tensor([[3, 4, 5, 0, 0], [1, 2, 3, 4, 6]])
    by_hand = []
    for b in range(2):
        for t in range(4):
            if tokens[b, t + 1] != 0:
                by_hand.append(-logits[b, t].log_softmax(-1)[tokens[b, t + 1]])
    loss = wmdp.answer_loss(logits, tokens, pad_id=0)
    torch.testing.assert_close(loss, torch.stack(by_hand).mean())
    assert wmdp.answer_loss(logits, tokens, "none", pad_id=0)[0, 2:].abs().sum() == 0


def test_every_method_takes_a_step_on_padded_wmdp_rows(wmdp_paths):
    """Every registered method's loss on the bound wmdp setting (padded rows, a real tokenizer's
    padding id): finite, with a gradient. The bound setting is a ``Setting``, so a method may use
    every function of the protocol (LAT's ``answer_targets`` was once missing from it)."""
    from trainables.methods import METHODS
    from trainables.settings import Setting

    d = _data(wmdp_paths, seq_len=64)
    setting = wmdp.bind(wmdp.Config(**F.setting(wmdp_paths)), d)
    assert isinstance(setting, Setting) and isinstance(__import__("trainables.settings.arithmetic").settings.arithmetic, Setting)
    forget, retain = d.forget_T[:4], d.retain_train[:4]  # T's question rows are padded
    mask = setting.answer_mask(forget)
    assert mask.shape == setting.answer_targets(forget).shape and not mask.all() and mask.any()
    for name, method in METHODS.items():
        model = models.load_model(wmdp_paths["llama"])
        params = method.Params()
        state = method.setup(model, params, 0)
        when = {"step": 3, "steps": 10} if getattr(method, "STEPS_AWARE", False) else {}
        loss = method.loss(model, forget, retain, params, setting, state, **when)
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert torch.isfinite(loss) and grads and all(torch.isfinite(g).all() for g in grads), name


def _cfg(paths, tmp_path, arch: str = "llama", extra: list[str] = ()) -> config.ExperimentConfig:
    path = tmp_path / "wmdp.yaml"
    path.write_text(json.dumps({
        "experiment": "wmdp-tiny", "setting": F.setting(paths),
        "model": {"pretrained": str(paths[arch]), "pretrain_tokens": 1e6},
        "defender": {"method": "rmu", "loop": {"batch_size": 4},
                     "params": {"lr": 1e-3, "steps": 3, "layer": 1, "c": 5.0, "alpha": 1.0}},
        "attack": {"budget": 1, "loop": {"batch_size": 4, "eval_every": 2},
                   "params": {"kind": "lora", "lora_r": 2, "lr": 1e-3, "steps": 2, "batch_size": 4}},
        "cache_dir": str(tmp_path / "cache"), "storage": str(tmp_path / "results"),
    }))
    return config.load(path, list(extra))


@pytest.mark.parametrize("arch", ARCHS)
def test_rmu_undo_tar_and_attacks_on_tiny_models(wmdp_paths, tmp_path, arch):
    cfg = _cfg(wmdp_paths, tmp_path, arch)
    ctx = Context(cfg, "exp", str(tmp_path / "exp"), Runner(tmp_path / "cache", "local"))
    reference = pretrained(ctx, "reference")
    assert reference.path == wmdp_paths[arch] and reference.result["flops"] == 6 * reference.result["n_params"] * 1e6
    rmu = suppress(ctx, "rmu", {}, reference)
    before, after = models.load_model(reference.path), models.load_model(rmu.path)
    changed = {n for (n, p), q in zip(before.named_parameters(), after.parameters()) if not torch.equal(p, q)}
    assert changed and all(("down_proj" in n or "c_proj" in n) and "mlp" in n for n in changed)
    undo = config.UndoConfig(loop={"steps": 2, "batch_size": 4, "eval_every": 1})
    distilled = run_stage(ctx.runner, "distill", undo.spec(common_spec(cfg), {"alpha": 0.5, "beta": 0.1}), {"teacher": rmu})
    assert 0 <= distilled.result["metrics"]["retain_acc"] <= 1
    tar_spec = method_spec(cfg, "tar", {"inner_steps": 2, "subsample": 1, "adversary_batch_size": 2, "steps": 1}, fixed={})
    tar = run_stage(ctx.runner, "tar", tar_spec, {"model": rmu, "reference": reference})
    assert tar.result["flops"] > 0
    for params in ({"kind": "lora", "lora_r": 2, "lora_targets": "all"}, {"kind": "full", "data": "mix"}):
        attacked = run_stage(ctx.runner, "attack", attack_spec(cfg, {**params, "lr": 1e-3, "steps": 2}, 0), {"model": distilled})
        assert 0 <= attacked.result["metrics"]["forget_acc_max"] <= 1
    for family, prior in FAMILY_PRIORS.items():  # every other family, at its informed start
        for point in prior if family != "finetune" else []:
            short = {k: 2 for k in point if k == f"{family}_steps"}  # a trained family: two steps
            stage, spec = family_spec(cfg, {**point, **short, "family": family}, 0)
            hit = run_stage(ctx.runner, stage, spec, {"model": rmu})
            assert 0 <= hit.result["metrics"]["forget_acc_rep_at_best"] <= 1 and hit.result["flops"] >= 0


def test_bf16_and_gradient_checkpointing_train(wmdp_paths, tmp_path):
    cfg = _cfg(wmdp_paths, tmp_path, "llama", ["model.dtype=bfloat16", "model.gradient_checkpointing=true"])
    ctx = Context(cfg, "exp", str(tmp_path / "exp"), Runner(tmp_path / "cache", "local"))
    reference = pretrained(ctx, "reference")
    rmu = suppress(ctx, "rmu", {}, reference)
    model = models.load(rmu.path, method_spec(cfg, "rmu", {}).load)
    assert model.dtype == torch.bfloat16 and model.is_gradient_checkpointing


@pytest.mark.parametrize("override,field", [
    ("setting.forget_questions.path=/nope/wmdp.jsonl", "setting.forget_questions.path"),
    ("setting.forget_corpus=[]", "setting.forget_corpus"),
    ("model.pretrain_tokens=null", "model.pretrain_tokens"),
    ("model.pretrained=/nope/model", "model.pretrained"),
    ("setting.attack_data=answers", "setting.attack_data"),
])
def test_bad_wmdp_config_names_the_field(wmdp_paths, tmp_path, override, field):
    with pytest.raises(config.ConfigError, match=field.replace(".", r"\.")):
        _cfg(wmdp_paths, tmp_path, extra=[override])


@pytest.mark.slow
def test_wmdp_search_through_run_py(wmdp_paths, tmp_path):
    """A tiny-Llama RMU search on the fixtures, by path, through search/run.py and Ray."""
    from search.run import main

    cfg = _cfg(wmdp_paths, tmp_path)
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps({**cfg.model_dump(mode="json"), "search": {"trials": 2},
                                "defender": {**cfg.defender.model_dump(mode="json"), "params": {"layer": 1, "steps": 2}}}))
    import ray

    try:
        assert main(["--config", str(path), "--name", "w", "--set", "ray_num_cpus=2", "--set", "verify.enabled=false"]) == 0
    finally:
        ray.shutdown()  # main() ran in this process: leave no Ray instance to later tests
    trials = tables.read_table(str(tmp_path / "results" / "w"), tables.TRIALS).to_pylist()
    kinds = sorted(r["trial_id"] for r in trials if r["kind"] == "baseline")
    assert kinds == ["reference"]  # no pure model given: no pure baseline
    assert all(r["status"] == "ok" and r["setting"] == "wmdp" for r in trials)
    assert sum(r["kind"] == "defender" for r in trials) == 2


def test_every_setting_is_discovered_and_satisfies_the_protocol():
    """A setting is one module of ``trainables/settings/``, named by its module: its ``Config``'s
    literal ``name`` is that name, and the module (or what its ``bind`` returns) has every
    function of the ``Setting`` protocol."""
    import typing

    from trainables.settings import SETTINGS, Setting

    assert set(SETTINGS) == {"arithmetic", "wmdp"}
    for name, module in SETTINGS.items():
        assert typing.get_args(module.Config.model_fields["name"].annotation) == (name,)
        assert callable(module.build) and (isinstance(module, Setting) or hasattr(module, "bind")), name
