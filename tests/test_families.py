"""Attack families beyond fine-tuning that change weights (trainables/families/): quantization
against a by-hand reference and QLoRA's NF4 table, pruning masks against brute force, the 4-bit
round-back on a constructed model, composition with a fine-tune, and the cross-family adversary
search's rows and columns. Families on activations and on the context:
tests/test_activation_and_context_families.py."""


import pytest
import torch

from search import config
from search.adversary import adversary_search, informed_start
from search.attack_families import needs_context, training_free
from search.runner import Runner
from search.trial import Context, pretrained, score_columns
from tests.conftest import TINY, tiny_model as _model
from trainables.settings import arithmetic as A
from trainables import models
from trainables.families import FAMILIES, quantize, prune


def _by_hand(w: torch.Tensor, scheme: str, bits: int, group: int) -> torch.Tensor:
    """Round-to-nearest, one group at a time, one weight at a time, in float32."""
    out = torch.empty_like(w)
    rows, cols = w.shape
    g = cols if group == 0 else group
    for r in range(rows):
        for start in range(0, cols, g):
            xs = [w[r, c] for c in range(start, min(start + g, cols))]
            if scheme == "sym":
                qmax = 2 ** (bits - 1) - 1
                s = max(abs(x) for x in xs) / qmax
                s = s if s > 0 else torch.tensor(1.0)
                for i, x in enumerate(xs):
                    out[r, start + i] = min(max(torch.round(x / s), -qmax - 1), qmax) * s
            else:
                qmax = 2**bits - 1
                lo, hi = min(xs), max(xs)
                s = (hi - lo) / qmax
                s = s if s > 0 else torch.tensor(1.0)
                z = torch.round(-lo / s)
                for i, x in enumerate(xs):
                    out[r, start + i] = (min(max(torch.round(x / s) + z, 0), qmax) - z) * s
    return out


@pytest.mark.parametrize("scheme", ["sym", "asym"])
@pytest.mark.parametrize("bits,group", [(2, 32), (4, 32), (4, 0), (8, 16), (3, 7)])
def test_round_to_nearest_equals_the_by_hand_reference_bit_for_bit(scheme, bits, group):
    w = torch.randn(3, 40, generator=torch.Generator().manual_seed(bits * 100 + group))
    w[1, :16] = 0.0  # an all-zero group stays zero
    got = quantize.quantize_tensor(w, scheme, bits, group)
    assert torch.equal(got, _by_hand(w, scheme, bits, group))
    g = 40 if group == 0 else group
    for r in range(3):  # at most 2^bits levels in every group
        for start in range(0, 40, g):
            assert len(torch.unique(got[r, start:start + g])) <= 2**bits


def test_nf4_levels_are_qlora_s_table_and_every_weight_takes_its_nearest():
    # QLoRA (Dettmers et al. 2023) builds NF4 from quantiles of N(0, 1): bitsandbytes'
    # create_normal_map(offset=0.9677083, use_extra_value=True), normalised to [-1, 1]
    normal = torch.distributions.Normal(0.0, 1.0)
    pos = normal.icdf(torch.linspace(0.9677083, 0.5, 9, dtype=torch.float64)[:-1])
    neg = -normal.icdf(torch.linspace(0.9677083, 0.5, 8, dtype=torch.float64)[:-1])
    levels = torch.sort(torch.cat([pos, torch.zeros(1, dtype=torch.float64), neg])).values
    levels = levels / levels.abs().max()
    assert len(quantize.NF4) == 16 and quantize.NF4 == tuple(sorted(quantize.NF4))
    assert torch.allclose(torch.tensor(quantize.NF4, dtype=torch.float64), levels, atol=1e-6)
    w = torch.randn(4, 64, generator=torch.Generator().manual_seed(1))
    got = quantize.quantize_tensor(w, "nf4", 4, 32)
    table = torch.tensor(quantize.NF4)
    for r in range(4):
        for start in (0, 32):
            x = w[r, start:start + 32]
            absmax = x.abs().max()
            nearest = table[(x[:, None] / absmax - table).abs().argmin(-1)]
            assert torch.equal(got[r, start:start + 32], nearest * absmax)


def test_quantization_leaves_the_head_embeddings_and_norms_and_restores_every_weight():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    names = {n for n, _, _ in quantize.quantized_weights(model)}
    assert names and all(".h." in n for n in names)  # attention and MLP projections, no lm_head
    spec = quantize.Spec(setting={"name": "arithmetic"}, scheme="sym", bits=2, group=8)
    with quantize.applied(model, spec):
        changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
        assert changed == {f"{n}.weight" for n in names}
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_a_lora_wrapped_model_lists_each_base_weight_once_in_its_layout_and_prunes(arch):
    """A fine-tune with LoRA adapters, then a transform (``then``): peft wraps each adapted layer
    in a module of its own, also named ``Linear``, that shows its base layer's weight. Each base
    weight is listed once, in its own layout (GPT-2's Conv1D transposed), adapters not at all;
    importance pruning (which hooks every listed layer's input) runs and zeroes its sparsity."""
    from trainables.lora import add_lora

    plain = {n: (w.shape, t) for n, w, t in quantize.quantized_weights(_model(arch))}
    model = add_lora(_model(arch), r=4, alpha=8.0, dropout=0.0, targets="all")
    listed = quantize.quantized_weights(model)
    assert len({id(w) for _, w, _ in listed}) == len(listed) == len(plain)
    assert sorted((w.shape, t) for _, w, t in listed) == sorted(plain.values())
    spec = prune.Spec(setting={"name": "arithmetic"}, score="importance", structure="unstructured", sparsity=0.25,
                      calibration=16)
    with prune.applied(model, spec, A.build(A.Config())):
        for _, w, transposed in listed:
            w_oi = w.t() if transposed else w
            assert ((w_oi == 0).sum(1) == round(0.25 * w_oi.shape[1])).all()


def _brute_force_lowest(scores: torch.Tensor, fraction: float) -> torch.Tensor:
    mask = torch.zeros_like(scores, dtype=torch.bool)
    k = round(fraction * scores.shape[1])
    for r in range(scores.shape[0]):
        order = sorted(range(scores.shape[1]), key=lambda j: (float(scores[r, j]), j))
        for j in order[:k]:
            mask[r, j] = True
    return mask


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5, 0.03])
def test_pruning_masks_equal_brute_force_and_hit_the_sparsity_exactly(fraction):
    scores = torch.randn(6, 40, generator=torch.Generator().manual_seed(3))
    scores[0, :10] = 0.5  # ties: the lower index goes first
    got = prune.lowest(scores, fraction)
    assert torch.equal(got, _brute_force_lowest(scores, fraction))
    assert (got.sum(1) == round(fraction * 40)).all()


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("score,structure", [("magnitude", "unstructured"), ("wanda", "unstructured"),
                                             ("importance", "neuron"), ("magnitude", "neuron")])
def test_pruning_zeroes_exactly_the_sparsity_and_reads_no_scoring_facts(arch, score, structure, monkeypatch):
    model = _model(arch)
    d = A.build(A.Config())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []
    original = prune.input_norms
    monkeypatch.setattr(prune, "input_norms", lambda m, n, rows, pad: seen.append(rows) or original(m, n, rows, pad))
    spec = prune.Spec(setting={"name": "arithmetic"}, score=score, structure=structure, sparsity=0.25, calibration=32)
    layers = prune.quantized_weights(model) if structure == "unstructured" else prune.mlp_outputs(model)
    with prune.applied(model, spec, d):
        for name, w, transposed in layers:
            w_oi = (w.t() if transposed else w)
            zero_cols = (w_oi == 0).all(0).sum().item()
            if structure == "neuron":  # whole hidden units: round(0.25 · h) of them
                assert zero_cols == round(0.25 * w_oi.shape[1])
            else:
                assert ((w_oi == 0).sum(1) == round(0.25 * w_oi.shape[1])).all()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    facts_V = {tuple(r.tolist()) for r in d.forget_V}
    assert all(tuple(r.tolist()) not in facts_V for rows in seen for r in rows)  # T and retain only


def _own_facts(model: torch.nn.Module, n: int, seed: int) -> torch.Tensor:
    """Rows of the arithmetic format whose answers are ``model``'s own greedy answers: facts the
    model knows by construction."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, len(A.VOCAB), (n, A.SEQ_LEN), generator=g)
    with torch.no_grad():
        for pos in range(A.ANSWER_START, A.SEQ_LEN):
            rows[:, pos] = model(input_ids=rows).logits[:, pos - 1].argmax(-1)
    return rows


def test_unlearning_under_a_quarter_of_a_4bit_step_rounds_back_under_4bit_not_8bit():
    """Zhang et al.'s failure, built: the reference sits on the 4-bit grid; the "unlearning"
    moves every quantized weight by at most 0.24 of its group's 4-bit step (projected gradient
    ascent on its facts' loss; a group's extreme weights unmoved, so the scales stay). 4-bit quantization rounds it back; 8-bit
    (steps 18× finer) keeps the damage."""
    model = _model(seed=2)
    four = quantize.Spec(setting={"name": "arithmetic"}, scheme="sym", bits=4, group=16)
    eight = quantize.Spec(setting={"name": "arithmetic"}, scheme="sym", bits=8, group=16)
    with torch.no_grad():
        for _, w, t in quantize.quantized_weights(model):
            w.mul_(4.0)  # linear layers that matter beside the (never quantized) embeddings
            w.copy_(quantize.quantize_tensor(w.t(), "sym", 4, 16).t() if t else quantize.quantize_tensor(w, "sym", 4, 16))
    facts = _own_facts(model, 128, 0)
    assert A.exact_match(model, facts).float().mean().item() == 1.0
    layers = quantize.quantized_weights(model)
    box = {}  # per weight: the largest move (0.24 of a 4-bit step; 0 at a group's extremes)
    for name, w, t in layers:
        x = (w.t() if t else w).detach().reshape(w.shape[1] if t else w.shape[0], -1, 16)
        absmax = x.abs().amax(-1, keepdim=True)
        bound = (0.24 * absmax / 7 * (x.abs() < absmax)).reshape(x.shape[0], -1)
        box[name] = bound.t() if t else bound
    origin = [w.detach().clone() for _, w, _ in layers]
    for _ in range(8):  # projected sign-gradient ascent on the facts' loss, inside the box
        loss = A.answer_loss(model(input_ids=facts).logits, facts)
        grads = torch.autograd.grad(loss, [w for _, w, _ in layers])
        with torch.no_grad():
            for (name, w, _), grad, w0 in zip(layers, grads, origin):
                w.add_(0.3 * box[name] * grad.sign())
                w.copy_(torch.maximum(torch.minimum(w, w0 + box[name]), w0 - box[name]))
    unlearned = A.exact_match(model, facts).float().mean().item()
    with quantize.applied(model, four):
        back4 = A.exact_match(model, facts).float().mean().item()
    with quantize.applied(model, eight):
        back8 = A.exact_match(model, facts).float().mean().item()
    assert unlearned <= 0.25 and back4 >= 0.9 and back8 <= unlearned + 0.1, (unlearned, back4, back8)


def test_an_attack_runs_alike_searched_alone_or_across_families_and_tpe_draws_families_the_start_tried(tmp_path):
    """Common random numbers: an attack's seed follows its point, so the fine-tune's informed
    attacks score the same in a fine-tune-only search and in the cross-family one (and its chosen
    attack's re-runs too). TPE then draws only families the informed start tried: at budget 4
    steer's informed point does not fit in half the run budget, so no steer attack runs."""
    sets = [*TINY, "attack.budget=4", "attack.prior=2", f"cache_dir={tmp_path / 'cache'}"]
    cross_cfg = config.load(None, [*sets, "attack.families=null"])
    alone_cfg = config.load(None, [*sets, "attack.families=[finetune]"])
    runner = Runner(tmp_path / "cache", "local")
    ref = pretrained(Context(cross_cfg, "e", str(tmp_path / "e"), runner), "reference")
    cross = adversary_search(runner, cross_cfg, ref, "t", "e", 400)
    alone = adversary_search(runner, alone_cfg, ref, "t", "e", 400)

    def prior_scores(out):
        rows = [r for r in out.attacks if r["attack.source"] == "search" and r["attack.family"] == "finetune"]
        return [(r["attack.lr"], r["attack.data"], r["forget_acc_sel_max"], r["forget_acc_rep_at_best"]) for r in rows[:2]]

    assert prior_scores(cross) == prior_scores(alone)
    searched = [r for r in cross.attacks if r["attack.source"] == "search"]
    assert len(searched) == 4 + sum(training_free(r["attack.family"]) for r in searched[:-2])
    assert "steer" not in {r["attack.family"] for r in cross.attacks}
    assert {r["attack.family"] for r in searched} <= {"finetune", *(f for f in FAMILIES if training_free(f))}


def test_cross_family_search_runs_training_free_families_first_and_reports_each(tmp_path):
    cfg = config.load(None, [*TINY, "attack.families=null", f"cache_dir={tmp_path / 'cache'}"])
    # default: every family the model takes (a fresh GPT-2 has no position before a question)
    assert cfg.attack.families == sorted(f for f in FAMILIES if not needs_context(f))
    assert config.load(None, [*TINY, "attack.families=null", "model.arch=llama"]).attack.families == sorted(FAMILIES)
    runner = Runner(tmp_path / "cache", "local")
    ref = pretrained(Context(cfg, "e", str(tmp_path / "e"), runner), "reference")
    start = informed_start(cfg, None, ref.key)
    free = [p for p in start if training_free(p["family"])]
    assert start[: len(free)] == free and {p["family"] for p in free} == {"quantize", "prune", "ablate"}
    # a trained family's informed point comes after the fine-tune's, only while the counted points
    # stay within half the run budget (budget 2: the fine-tune's prior already takes that half)
    assert "steer" not in {p["family"] for p in start} and start[-1]["family"] == "finetune"
    wide = config.load(None, [*TINY, "attack.families=null", "attack.budget=8", "attack.prior=2"])
    counted = [p["family"] for p in informed_start(wide, None, ref.key) if not training_free(p["family"])]
    assert counted == ["finetune", "finetune", "steer"]
    llama = config.load(None, [*TINY, "attack.families=null", "attack.budget=8", "attack.prior=2", "model.arch=llama"])
    counted = [p["family"] for p in informed_start(llama, None, ref.key) if not training_free(p["family"])]
    assert counted == ["finetune", "finetune", "prefix", "soft_prompt"]  # 4 of 8: steer is TPE's to draw
    out = adversary_search(runner, cfg, ref, "t", "e", 400)
    searched = [a for a in out.attacks if a["attack.source"] == "search"]
    assert len(searched) == cfg.attack.budget + len(free)  # free points are not counted as runs
    assert {a["attack.family"] for a in searched} >= {"finetune", "quantize", "prune"}
    for a in searched:
        if a["attack.family"] == "quantize":
            assert a["flops"] < 1e-3 * max(b["flops"] for b in searched if b["attack.family"] == "finetune")
            assert a["attack.quantize_bits"] in range(2, 9) and a["attack.lr"] if "attack.lr" in a else True
    cols = score_columns(cfg, ref.result["metrics"], out)
    ran = {a["attack.family"] for a in out.attacks}
    per_family = {f: cols[f"forget_acc_attacked.{f}"] for f in ran}
    assert cols["forget_acc_attacked"] == per_family[next(a["attack.family"] for a in out.attacks
                                                          if a["attack_id"] == out.best_attack_id)]
    assert all(cols[f"forget_acc_attacked.{f}_lo"] <= v <= cols[f"forget_acc_attacked.{f}_hi"] for f, v in per_family.items())


@pytest.mark.parametrize("override,field", [
    ("attack.families=[finetune,gcg]", "families"),
    ("attack.families=[]", "families"),
    ("attack.params.quantize_bits=true", "params.quantize_bits"),
    ("attack.params.family=prune", "params.family"),
    ("attack.space.prune_sparsity=[0.5, 0.1]", "space.prune_sparsity"),
    ("attack.families=[finetune,few_shot]", "attack.families"),  # a fresh GPT-2: no room before a question
    ("attack.params.family=prefix", "attack.params.family"),
    ("verify.families=[soft_prompt]", "verify.families"),
])
def test_bad_family_config_names_the_field(override, field):
    extra = ["attack.families=[finetune]"] if field == "params.family" else []
    with pytest.raises(config.ConfigError, match=field.replace(".", r"\.")):
        config.load(None, [*extra, override])


def test_a_fine_tune_then_quantized_is_scored_quantized_and_its_weights_are_the_fine_tunes(tiny_cfg, tmp_path, monkeypatch):
    """``then: quantize``: every evaluation of the attack scores the fine-tuned model after 2-bit
    quantization (so its scores differ from the plain fine-tune's), and the training itself is
    the same fine-tune: the quantization is undone after each evaluation."""
    from search.adversary import attack_columns, attack_spec
    from trainables import attack

    runner = Runner(tmp_path / "cache", "local")
    ref = pretrained(Context(tiny_cfg, "e", str(tmp_path / "e"), runner), "reference")
    point = {"lr": 3e-3, "steps": 10, "data": "forget"}
    plain = attack_spec(tiny_cfg, point, 0)
    composed = attack_spec(tiny_cfg, {**point, "then": "quantize", "quantize_scheme": "sym", "quantize_bits": 2,
                                      "quantize_group": 0}, 0)
    assert composed.then == {"family": "quantize", "scheme": "sym", "bits": 2, "group": 0} and plain.then is None
    cols = attack_columns(composed, 400, "search")
    assert cols["attack.then"] == "quantize" and cols["attack.quantize_bits"] == 2
    scored = []
    original = quantize.applied

    import contextlib

    @contextlib.contextmanager
    def spy(model, spec, d=None):
        with original(model, spec, d) as m:
            _, w, _ = quantize.quantized_weights(m)[0]
            levels = max(len(torch.unique(row)) for row in w.t())  # GPT-2's Conv1D: (in, out)
            scored.append((spec.bits, levels))
            yield m

    monkeypatch.setattr(quantize, "applied", spy)
    model = models.load(str(ref.path), {})
    a = attack.run(plain, {"model": str(ref.path)}, tmp_path, model=models.load(str(ref.path), {}))
    b = attack.run(composed, {"model": str(ref.path)}, tmp_path, model=model)
    evals = len([s for s, k, _ in b["curve"] if k in ("forget_acc_sel", "retain_acc")])  # along the way; retain once
    assert evals and [b for b, _ in scored] == [2] * evals  # every evaluation, of the model quantized
    assert all(levels <= 4 for _, levels in scored)  # 2 bits per channel: at most 4 levels in a row
    assert len(a["curve"]) == len(b["curve"])
    again = models.load(str(ref.path), {})  # the fine-tune itself is the same: its weights equal the plain run's
    attack.run(plain, {"model": str(ref.path)}, tmp_path, model=again)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), again.parameters()))


def test_the_search_draws_the_composed_family_s_dimensions(tmp_path):
    cfg = config.load(None, [*TINY, "attack.params={then: quantize, kind: full}", "attack.prior=1", "attack.budget=2",
                             f"cache_dir={tmp_path / 'cache'}"])
    runner = Runner(tmp_path / "cache", "local")
    ref = pretrained(Context(cfg, "e", str(tmp_path / "e"), runner), "pure")
    out = adversary_search(runner, cfg, ref, "t", "e", 400)
    searched = [a for a in out.attacks if a["attack.source"] == "search"]
    assert len(searched) == 2 and all(a["attack.then"] == "quantize" for a in searched)
    assert all(a["attack.quantize_scheme"] in ("sym", "asym", "nf4") and 2 <= a["attack.quantize_bits"] <= 8 for a in searched)
