"""The benchmarks' own checks, on the tests' tiny model: a benchmark that a GPU session runs
once must not be found broken then."""

import torch

from bench import attack_population as pop


def test_a_lora_population_trains_each_member_as_if_alone():
    """P LoRA attacks batched over one frozen base give, step by step, the losses each member
    gets alone with torch's AdamW and clipping (float32, 3 steps, learning rates 1e-3 to 1e-2)."""
    base, vocab, seq = pop.base_model("tiny", torch.device("cpu"), 0)
    batches = torch.randint(vocab, (3, 8, seq), generator=torch.Generator().manual_seed(0))
    assert pop.check_lora_population(base, batches, pop.per_example_loss("tiny")) < 1e-5


def test_a_lora_population_member_sees_only_its_own_rows():
    """A member's adapter output depends on its own rows alone: changing member 1's input leaves
    members 0 and 2 unchanged."""
    base, vocab, seq = pop.base_model("tiny", torch.device("cpu"), 0)
    model = pop.with_lora_population(base, 3)
    with torch.no_grad():
        for p in pop.adapters(model):
            p.normal_()  # B = 0 at initialisation would hide any mixing
    x = torch.randint(vocab, (3, 4, seq), generator=torch.Generator().manual_seed(1))
    y = x.clone()
    y[1] = (y[1] + 1) % vocab
    out_x, out_y = (model(input_ids=t.reshape(-1, seq)).logits.view(3, 4, seq, -1) for t in (x, y))
    assert torch.equal(out_x[0], out_y[0]) and torch.equal(out_x[2], out_y[2])
    assert not torch.allclose(out_x[1], out_y[1])


def test_the_population_benchmark_runs(monkeypatch, capsys):
    threads = str(torch.get_num_threads())  # main sets torch's threads: leave them as they are
    monkeypatch.setattr("sys.argv", ["attack_population.py", "--model", "tiny", "--P", "2", "--steps", "1",
                                     "--batch", "8", "--threads", threads])
    assert pop.main() == 0
    out = capsys.readouterr().out
    assert "| full | tiny | 2 |" in out and "| lora | tiny | 2 |" in out
