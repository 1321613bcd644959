import torch

from trainables.settings import arithmetic as A
from trainables.models import ModelConfig, build_model


def test_tokenizer_roundtrip_and_fixed_width():
    s = A.fmt(7, "+", 45, 52)
    assert s == "007+045=052"
    assert A.decode(A.encode(s)) == s
    for s in A.retain_problems(50)[:50] + A.forget_facts(20)[:50]:
        assert len(s) == A.SEQ_LEN and s[A.ANSWER_START - 1] == "="


def test_problems_are_correct():
    for s in A.retain_problems(12) + A.forget_facts(12):
        a, op, b, c = int(s[0:3]), s[3], int(s[4:7]), int(s[8:11])
        assert {"+": a + b, "-": a - b, "*": a * b, "/": a // b if b else None}[op] == c
        if op == "/":
            assert a % b == 0


def test_splits_disjoint_and_complete():
    cfg = A.Config()
    d = A.build(cfg)
    rows = lambda t: {A.decode(r) for r in t}  # noqa: E731
    T, V = rows(d.forget_T), rows(d.forget_V)
    assert T and V and not T & V
    assert T | V == set(A.forget_facts(cfg.forget_max_operand))
    rt, re = rows(d.retain_train), rows(d.retain_eval)
    assert rt and re and not rt & re
    assert rt | re == set(A.retain_problems(cfg.retain_max_operand))
    assert {A.decode(r)[3] for r in d.forget_V} == {"*", "/"}
    assert A.build(cfg).forget_T.equal(d.forget_T)  # deterministic


def test_answer_loss_is_answer_token_cross_entropy():
    torch.manual_seed(0)
    tokens = torch.randint(0, len(A.VOCAB), (3, A.SEQ_LEN))
    logits = torch.randn(3, A.SEQ_LEN, len(A.VOCAB))
    manual = []
    for b in range(3):
        for pos in range(A.ANSWER_START, A.SEQ_LEN):
            logp = torch.log_softmax(logits[b, pos - 1], -1)
            manual.append(-logp[tokens[b, pos]])
    assert torch.allclose(A.answer_loss(logits, tokens), torch.stack(manual).mean())


def test_exact_match_equals_greedy_decoding():
    model = build_model(ModelConfig(d_model=32, n_layer=1, n_head=2), len(A.VOCAB), A.SEQ_LEN)
    d = A.build(A.Config(forget_max_operand=6, retain_max_operand=6))
    tokens = torch.cat([d.retain_eval, d.forget_V])
    # Make some answers right: overwrite answers with the model's own greedy output for half.
    seq = tokens[:, : A.ANSWER_START].clone()
    with torch.no_grad():
        for _ in range(A.SEQ_LEN - A.ANSWER_START):
            nxt = model(input_ids=seq).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], 1)
    mixed = torch.where(torch.arange(len(tokens))[:, None] % 2 == 0, seq, tokens)
    greedy_right = (seq[:, A.ANSWER_START:] == mixed[:, A.ANSWER_START:]).all(-1)
    assert greedy_right.any()
    assert A.exact_match(model, mixed).equal(greedy_right)


def test_score_reports_per_operation():
    model = build_model(ModelConfig(d_model=32, n_layer=1, n_head=2), len(A.VOCAB), A.SEQ_LEN)
    m = A.score(model, A.build(A.Config(forget_max_operand=5, retain_max_operand=5)))
    assert {"retain_acc", "forget_acc", "acc[+]", "acc[-]", "acc[*]", "acc[/]"} <= set(m)
    assert all(0.0 <= v <= 1.0 for v in m.values())
