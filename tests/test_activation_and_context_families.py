"""Attack families on activations and on the context (trainables/families/): ablation leaves no
component along a direction, ablation and steering undo a one-direction suppression, contexts
score as the joined sequence, few-shot contexts hold k examples of T, no family changes a weight
or reads a scoring question outside scoring, and GCG's swaps."""

import pytest
import torch

from search import config
from search.adversary import adversary_search
from search.attack_families import needs_context
from search.runner import Runner
from search.trial import Context, pretrained
from spaces.attacks import PRIORS as FAMILY_PRIORS_
from tests.conftest import TINY, tiny_model as _model
from trainables import models
from trainables.families import FAMILIES, quantize
from trainables.families._base import calibration_rows
from trainables.settings import arithmetic as A


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gemma2"])
def test_after_ablation_no_layer_output_has_a_component_along_a_direction_and_no_weight_changed(arch):
    from trainables.families import ablate
    from trainables.methods import rmu

    model = _model(arch)
    d = A.build(A.Config())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    spec = ablate.Spec(setting={"name": "arithmetic"}, depth=0.5, k=3, calibration=32)
    outputs = []
    modules = [*ablate.embedding_modules(model), *rmu.decoder_layers(model, rmu.Params())]
    with ablate.applied(model, spec, d):
        forget = ablate.row_means(model, 0, d.forget_T[:8], None)  # any forward pass
        q = ablate.directions(forget, ablate.row_means(model, 0, d.retain_train[:8], None), 1)  # (unused)
        handles = [m.register_forward_hook(lambda mod, a, out: outputs.append(ablate._hidden(out))) for m in modules]
        with torch.no_grad():
            model(input_ids=d.forget_V[:16])
        for h in handles:
            h.remove()
        hooks = [h for m in modules for h in m._forward_hooks.values()]
    assert len(outputs) == len(modules) and len(hooks) == len(modules)  # one ablation hook per module
    # the directions the ablation used: recompute them as it did, from the same rows
    layer = round(0.5 * (len(rmu.decoder_layers(model, rmu.Params())) - 1))
    f = ablate.row_means(model, layer, calibration_rows(d.forget_T, 32, 0), None)
    r = ablate.row_means(model, layer, calibration_rows(d.retain_train, 32, 1), None)
    q = ablate.directions(f, r, 3)
    assert torch.allclose(q.T @ q, torch.eye(3), atol=1e-5)
    diff = f.mean(0) - r.mean(0)
    assert torch.allclose(q[:, 0], diff / diff.norm(), atol=1e-5)  # the first: difference in means
    for h in outputs:
        assert ((h.float() @ q).norm() / h.float().norm()).item() <= 1e-6
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not any(m._forward_hooks for m in modules)  # removed after the block


def test_a_suppression_along_one_direction_is_undone_by_ablation():
    """RMU's failure, built: the reference knows its facts; the "unlearned" model adds a large
    fixed vector to the residual stream at every position of a row whose operation is × or ÷
    (the forget facts'), which wrecks its answers to them. The difference-in-means direction
    found from T and retain rows, ablated at every layer, gives them back."""
    from trainables.families import ablate

    model, d, facts, _ = _suppressed_model()
    known = 1.0  # by construction: the facts are the model's own answers before the suppression
    suppressed = A.exact_match(model, facts).float().mean().item()
    spec = ablate.Spec(setting={"name": "arithmetic"}, depth=0.0, k=1, calibration=64)
    with ablate.applied(model, spec, d):
        recovered = A.exact_match(model, facts).float().mean().item()
    assert known == 1.0 and suppressed <= 0.3 and recovered >= 0.9 * known, (known, suppressed, recovered)


def _suppressed_model(seed: int = 4):
    """A model, its facts (its own greedy answers to V's problems, and to T's for an attacker
    to train on), and the model "unlearned" by a large fixed vector added to the residual stream
    at every position of a × or ÷ row (a forward hook on the embeddings)."""
    model = _model(seed=seed)
    d = A.build(A.Config())
    own = []
    for rows in (d.forget_V, d.forget_T):
        rows = rows.clone()
        with torch.no_grad():
            for pos in range(A.ANSWER_START, A.SEQ_LEN):
                rows[:, pos] = model(input_ids=rows).logits[:, pos - 1].argmax(-1)
        own.append(rows)
    v = torch.randn(model.config.n_embd, generator=torch.Generator().manual_seed(1))
    scale = 20.0 * model.get_input_embeddings().weight.norm(dim=1).mean().item()
    forget_ops = torch.tensor([A.VOCAB.index("*"), A.VOCAB.index("/")])

    def suppress(module, args, output):
        rows = torch.isin(args[0][:, A.WIDTH], forget_ops)
        return output + rows[:, None, None] * scale * v / v.norm()

    model.get_input_embeddings().register_forward_hook(suppress)
    return model, d, own[0], own[1]


def test_steering_cancels_a_one_direction_suppression_and_changes_no_weight():
    from types import SimpleNamespace

    from trainables.families import steer

    model, d, facts, facts_T = _suppressed_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    suppressed = A.exact_match(model, facts).float().mean().item()

    def score(m, _, retain=True, forget=True):
        acc = A.exact_match(m, facts).float().mean().item()
        return {**({"retain_acc": 0.0} if retain else {}),
                **({"forget_acc": acc, "forget_acc_sel": acc, "forget_acc_rep": acc} if forget else {})}

    setting = SimpleNamespace(score=score, answer_loss=A.answer_loss)
    spec = steer.Spec(setting={"name": "arithmetic"}, depth=0.0, bound=2.0, lr=3e-2, steps=60, batch_size=64,
                      eval_every=20)
    out = steer.steer(model, spec, setting, SimpleNamespace(forget_T=facts_T, pad_id=None))
    assert suppressed <= 0.3 and out["metrics"]["forget_acc_rep_at_best"] >= 0.9, (suppressed, out["metrics"])
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert A.exact_match(model, facts).float().mean().item() == suppressed  # the vector is gone after


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_no_family_feeds_a_scoring_question_to_the_model_outside_scoring(family, tmp_path, monkeypatch):
    """Every row any family's attack puts through the model, scoring aside, is from T or retain
    data: nothing of V builds a direction, a calibration, a steering vector or a batch."""
    from spaces.attacks import PRIORS as FAMILY_PRIORS
    from search.adversary import family_spec
    from trainables.stages import STAGES

    arch = "llama" if needs_context(family) else "gpt2"  # GPT-2's positions are full
    cfg = config.load(None, [*TINY, "attack.families=null", f"model.arch={arch}", f"cache_dir={tmp_path / 'cache'}"])
    d = A.build(cfg.setting)
    model = _model(arch)
    path = tmp_path / "m"
    model.save_pretrained(str(path))
    fed, drawn = [], []  # every token row embedded, its last SEQ_LEN tokens (a context family's prefix
    # aside); single tokens embedded (a soft prompt's start, drawn from T's tokens)
    model.get_input_embeddings().register_forward_pre_hook(
        lambda m, args: fed.append(args[0][:, -A.SEQ_LEN:]) if args[0].dim() == 2 else drawn.append(args[0]))
    stub = {"retain_acc": 0.0, "forget_acc": 0.0, "forget_acc_sel": 0.0, "forget_acc_rep": 0.0}
    monkeypatch.setattr(A, "score", lambda m, data, **parts: dict(stub))  # scoring reads V; nothing else may
    point = {"lr": 1e-3, "data": "mix", "steps": 4} if family == "finetune" else FAMILY_PRIORS[family][0]
    point = {**point, **{k: 4 for k in point if k == f"{family}_steps"}, "family": family}
    stage, spec = family_spec(cfg, point, 0)
    STAGES[stage](spec, {"model": str(path)}, tmp_path, model=model)
    allowed = {tuple(r.tolist()) for r in torch.cat([d.forget_T, d.retain_train])}
    V = {tuple(r.tolist()) for r in d.forget_V}
    rows = [tuple(r.tolist()) for batch in fed for r in batch]
    assert rows or family in ("quantize", "few_shot")  # no data but scoring's (few_shot's context: below)
    assert not any(r in V for r in rows) and all(r in allowed for r in rows)
    assert all(set(t.tolist()) <= set(d.forget_T.unique().tolist()) for t in drawn)


@pytest.mark.parametrize("family", ["quantize", "ablate"])
def test_a_search_of_one_family_runs_that_family_only(family, tmp_path):
    cfg = config.load(None, [*TINY, f"attack.families=[{family}]", "attack.budget=2", f"cache_dir={tmp_path / 'cache'}"])
    runner = Runner(tmp_path / "cache", "local")
    ref = pretrained(Context(cfg, "e", str(tmp_path / "e"), runner), "pure")
    out = adversary_search(runner, cfg, ref, "t", "e", 400)
    assert out.attacks and {a["attack.family"] for a in out.attacks} == {family}
    assert all(a["flops"] < 0.05 * ref.result["flops"] for a in out.attacks)  # no fine-tune (≥ 17 %) slipped in


# ---------------------------------------------------------------- families that put a context first


@pytest.mark.parametrize("arch", ["gpt2", "llama", "gemma2"])
def test_a_context_before_padded_questions_scores_as_the_joined_sequence_question_by_question(wmdp_paths, arch):
    """``Prepended``: the batched, padded letter predictions with a context in front equal each
    question scored alone on [context, question] without padding; a context given as token ids
    and the same tokens given as input embeddings give the same logits."""
    from tests import wmdp_fixtures as F
    from trainables.settings import wmdp
    from trainables.families._context import Prepended

    d = wmdp.build(wmdp.Config(**F.setting(wmdp_paths)))
    model = models.load_model(wmdp_paths[arch]).eval()
    ctx = d.forget_T[0][d.forget_T[0] != d.pad_id][:9]
    qs = d.retain_eval
    expect = []
    with torch.no_grad():
        for i in range(len(qs)):
            seq = torch.cat([ctx, qs.ids[i, : qs.lengths[i]]])[None]
            last = model(input_ids=seq).logits[0, -1, qs.letters]
            expect.append(int(last[: int(qs.n_choices[i])].argmax()))
        assert wmdp.letter_predictions(Prepended(model, ctx), qs, batch_size=5).tolist() == expect
        rows = qs.ids[:4, :12]
        by_ids = Prepended(model, ctx)(input_ids=rows).logits
        by_embeds = Prepended(model, model.get_input_embeddings()(ctx))(input_ids=rows).logits
    assert by_ids.shape == (*rows.shape, by_ids.shape[-1])
    torch.testing.assert_close(by_embeds, by_ids, rtol=1e-4, atol=1e-5)
    # Without gradients the context ran once and its keys and values were reused (above); with
    # them [context, row] runs whole: the same logits at every real position of padded rows.
    mask = (qs.ids[:4] != d.pad_id).long()
    wrapped = Prepended(model, ctx)
    with torch.no_grad():
        cached = wrapped(input_ids=qs.ids[:4], attention_mask=mask).logits
        again = wrapped(input_ids=qs.ids[:4], attention_mask=mask).logits  # the kept cache, unchanged by a use
    whole = wrapped(input_ids=qs.ids[:4], attention_mask=mask).logits.detach()
    torch.testing.assert_close(cached * mask[..., None], whole * mask[..., None], rtol=1e-4, atol=1e-5)
    assert torch.equal(cached, again)
    # a soft prompt updated in place between two scorings is not scored with its old keys
    soft = model.get_input_embeddings()(ctx).detach().clone()
    prompt = Prepended(model, soft)
    with torch.no_grad():
        before = prompt(input_ids=rows).logits
        soft.add_(1.0)
        after = prompt(input_ids=rows).logits
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, prompt(input_ids=rows).logits.detach(), rtol=1e-4, atol=1e-5)


def test_few_shot_contexts_hold_exactly_k_examples_all_from_T_and_fit_a_model_s_positions(wmdp_paths):
    from tests import wmdp_fixtures as F
    from trainables.settings import wmdp
    from trainables.families import few_shot

    d = wmdp.build(wmdp.Config(**F.setting(wmdp_paths)))
    T = [tuple(r[r != d.pad_id].tolist()) for r in d.forget_T]
    V = {tuple(d.forget_V.ids[i, : d.forget_V.lengths[i]].tolist()) for i in range(len(d.forget_V))}
    for shots, seed in ((1, 0), (3, 1), (5, 2), (len(T), 0)):
        spec = few_shot.Spec(setting={}, shots=shots, seed=seed)
        rows = [tuple(r.tolist()) for r in few_shot.context(d, spec)]
        idx = few_shot.examples(d.forget_T, shots, seed).tolist()
        assert len(rows) == shots and len(set(idx)) == shots and rows == [T[i] for i in idx]
        assert not any(r[: len(v)] == v for r in rows for v in V)  # no question of V, answered or not
    assert few_shot.examples(d.forget_T, 3, 1).tolist() != few_shot.examples(d.forget_T, 3, 2).tolist()
    # a GPT-2 of 96 positions takes the examples that fit before the widest scored row, in draw order
    gpt2 = models.load_model(wmdp_paths["gpt2"])
    spec = few_shot.Spec(setting={}, shots=16)
    fitted = few_shot.fitted(gpt2, spec, d)
    width = max(d.forget_V.ids.shape[1], d.retain_eval.ids.shape[1], d.forget_T.shape[1])
    assert 0 < len(fitted) < 16 and sum(map(len, fitted)) + width <= gpt2.config.n_positions
    assert [tuple(r.tolist()) for r in fitted] == [tuple(r.tolist()) for r in few_shot.context(d, spec)][: len(fitted)]
    # arithmetic: solved problems of T, back to back
    arith = A.build(config.load(None, list(TINY)).setting)
    rows = few_shot.context(arith, few_shot.Spec(setting={}, shots=4, seed=3))
    facts = {tuple(r.tolist()) for r in arith.forget_T}
    assert len(rows) == 4 and all(len(r) == A.SEQ_LEN and tuple(r.tolist()) in facts for r in rows)


@pytest.mark.parametrize("family", ["few_shot", "soft_prompt", "prefix", "steer"])
def test_context_and_vector_families_leave_every_weight_and_its_requires_grad_as_they_were(family, tmp_path):
    from search.adversary import family_spec
    from trainables.stages import STAGES

    cfg = config.load(None, [*TINY, "model.arch=llama", "attack.families=null"])
    model = _model("llama")
    model.lm_head.weight.requires_grad_(False)  # a frozen weight stays frozen, the others trainable
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.requires_grad for p in model.parameters()]
    short = {"soft_prompt": {"soft_prompt_steps": 6, "soft_prompt_tokens": 3, "soft_prompt_lr": 0.1},
             "steer": {"steer_steps": 6},
             "prefix": {"prefix_steps": 4, "prefix_tokens": 3, "prefix_topk": 4, "prefix_candidates": 4}}
    point = {**FAMILY_PRIORS_[family][0], **short.get(family, {}), "family": family}
    stage, spec = family_spec(cfg, point, 0)
    out = STAGES[stage](spec, {"model": "unused"}, tmp_path, model=model)
    assert out["flops"] > 0 and 0 <= out["metrics"]["forget_acc_rep_at_best"] <= 1
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert [p.requires_grad for p in model.parameters()] == grads and all(p.grad is None for p in model.parameters())


def test_gcg_one_hot_gradient_ranks_swaps_and_keeps_a_prefix_only_when_it_lowers_the_loss():
    """The one-hot gradient is the embedding gradient projected on every token's embedding
    (GCG's first-order swap score); a step returns the batch's loss before and after, the
    after recomputed by hand on [prefix, row], never above the before."""
    from trainables.families import prefix as gcg
    from trainables.families._context import Prepended

    cfg = config.load(None, list(TINY))
    d = A.build(cfg.setting)
    model = _model("llama", seed=1).eval()
    spec = gcg.Spec(setting={}, tokens=4, topk=8, candidates=16)
    emb = model.get_input_embeddings().weight
    current = torch.tensor([3, 7, 1, 12])
    idx = torch.arange(16)
    batch = d.forget_T[idx]

    def loss(p: torch.Tensor) -> float:
        logits = model(input_ids=torch.cat([p.expand(len(batch), -1), batch], 1)).logits[:, len(p):]
        return A.answer_loss(logits, batch).item()

    onehot = torch.nn.functional.one_hot(current, emb.shape[0]).float().requires_grad_()
    ctx = (onehot @ emb).detach().requires_grad_()
    A.answer_loss(Prepended(model, onehot @ emb)(input_ids=batch).logits, batch).backward()
    A.answer_loss(Prepended(model, ctx)(input_ids=batch).logits, batch).backward()
    torch.testing.assert_close(onehot.grad, ctx.grad @ emb.detach().t(), rtol=1e-4, atol=1e-6)
    gen, allowed, lowered = torch.Generator().manual_seed(0), torch.ones(emb.shape[0], dtype=torch.bool), 0
    for _ in range(6):
        new, before, after = gcg.step(model, A, d, current, idx, spec, allowed, gen)
        assert before == pytest.approx(loss(current), rel=1e-5) and after == pytest.approx(loss(new), rel=1e-5)
        assert after <= before and (torch.equal(new, current) or (new != current).sum() == 1)
        lowered += after < before
        current = new
    assert lowered >= 1
