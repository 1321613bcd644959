"""The memory estimate (trainables/memory.py, --plan, --require-fit): its parts against hand
computations for a tiny model, its activation model against the bytes autograd saves, and its
peak against a tensor-level measurement of real training steps on the CPU (torch's MemTracker,
the accounting ``torch.cuda.max_memory_allocated`` does on a GPU)."""

import copy

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from search import config
from search.run import main
from tests.conftest import ROOT
from tests.test_config import _one_line_error
from trainables import architectures, memory, models

GPT2 = dict(n_embd=32, n_head=2, n_layer=1, n_positions=16, vocab_size=40, resid_pdrop=0.0, embd_pdrop=0.0,
            attn_pdrop=0.0, bos_token_id=None, eos_token_id=None)


def _tiny(kind: str, layers: int = 1, vocab: int = 256, hidden: int = 64, inter: int = 160):
    if kind == "gpt2":
        return AutoConfig.for_model("gpt2", **{**GPT2, "n_embd": hidden, "n_inner": 4 * hidden, "n_head": 4,
                                               "n_layer": layers, "vocab_size": vocab, "n_positions": 128})
    mc = architectures.config({"llama": "llama-3-8b", "gemma2": "gemma-2-2b"}[kind])
    mc.update(dict(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers, vocab_size=vocab,
                   num_attention_heads=4, num_key_value_heads=2, head_dim=hidden // 4))
    if kind == "gemma2":
        mc.update(dict(query_pre_attn_scalar=hidden // 4))
    return mc


def test_parts_equal_hand_computations_for_a_tiny_model():
    mc = AutoConfig.for_model("gpt2", **GPT2)
    h, v, p, inner = 32, 40, 16, 128
    layer = 2 * h + (h * 3 * h + 3 * h) + (h * h + h) + 2 * h + (h * inner + inner) + (inner * h + h)
    n = v * h + p * h + layer + 2 * h  # tied output head
    d = memory.dims(mc)
    assert d.n_params == n and d.intermediate == inner and d.layers == 1
    full = memory.estimate(d, memory.Work(trained=n, sequences=8, checkpointing=True), seq=16, dtype="float32")
    assert full["weights"] == n * 4 and full["optimizer"] == 2 * n * 4 and full["gradients"] == n * 4
    assert full["frozen"] == 0 and full["extra"] == 0
    tokens = 8 * 16
    assert full["activations"] == tokens * 1 * h * 4 + tokens * h * (4 + 4)  # layer inputs + embeddings / final norm
    assert full["logits"] == tokens * v * 12
    one_layer = tokens * (10 * h + 5 * inner) * 4  # gpt2: 10 hidden and 5 MLP elements per token, float32
    assert full["peak"] == full["weights"] + full["optimizer"] + max(
        full["activations"] + max(full["logits"], one_layer), full["gradients"] + n * 4)
    # FSDP over 4 GPUs splits weights, gradients and optimizer state, not a frozen copy or activations
    tar = memory.Work(trained=n, frozen_copies=1, extra_trained_copies=3, sequences=8)
    split = memory.estimate(d, tar, seq=16, dtype="bfloat16", shards=4)
    assert split["weights"] == n * 2 / 4 and split["frozen"] == n * 2 and split["extra"] == 3 * n * 2 / 4
    # LoRA r 4 on every linear layer: r·(in + out) per adapter, float32 beside a bf16 base
    from trainables.attack import memory_work

    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(mc)
    spec = {"setting": {}, "load": {"dtype": "bfloat16", "gradient_checkpointing": False}, "seed": 0,
            "loop": {"batch_size": 8}, "lora": {"r": 4, "alpha": 8.0, "dropout": 0.0, "targets": "all"}}
    w = memory_work(spec, meta)
    assert w.trained == 4 * ((h + 3 * h) + (h + h) + (h + inner) + (inner + h)) and w.trained_bytes == 4


@pytest.mark.parametrize("kind", ["llama", "gemma2", "gpt2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_layer_elements_are_what_autograd_saves(kind, dtype):
    """A decoder layer's saved bytes per token, counted through saved-tensor hooks (one layer
    more, the difference), are what LAYER_ELEMENTS says (a few bytes of norm statistics aside)."""
    def saved(layers: int) -> int:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(_tiny(kind, layers)).to(dtype)
        params = {q.data_ptr() for q in model.parameters()}
        seen = {}

        def pack(t):
            if t.data_ptr() not in params:
                seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(input_ids=torch.randint(256, (2, 32)))
        return sum(seen.values())

    got = (saved(2) - saved(1)) / 64
    d = memory.dims(_tiny(kind), 0)
    want = memory.layer_bytes_per_token(d, 32, 4 if dtype == torch.float32 else 2)
    assert want <= got <= want + 32, (got, want)


def _measured_peak(kind: str, stage: str, dtype: torch.dtype, gc: bool) -> tuple[float, float]:
    """(MemTracker's peak of two training steps, the estimate) for a small model on the CPU."""
    from torch.distributed._tools.mem_tracker import MemTracker

    from bench.paper_scale import LORA, run_stage

    class Tracker(MemTracker):  # frozen parameters (LoRA's base) get no gradient hooks
        def _track_module_params_and_buffers(self, module, install_grad_hooks=True):
            return super()._track_module_params_and_buffers(
                module, install_grad_hooks and all(p.requires_grad for p in module.parameters()))

    torch.manual_seed(0)
    model = models._runtime(AutoModelForCausalLM.from_config(_tiny(kind, 2, 2048, 128, 344)).to(dtype), gc)
    d = memory.dims(model.config, sum(p.numel() for p in model.parameters()))
    n, batch, seq = d.n_params, 4, 128
    if stage == "lora":
        from trainables.lora import add_lora

        adapters = sum(p.numel() for p in add_lora(copy.deepcopy(model), **LORA).parameters() if p.requires_grad)
        work = memory.Work(trained=adapters, trained_bytes=4, sequences=batch, checkpointing=gc, lora_r=LORA["r"])
    elif stage == "distill":
        work = memory.Work(trained=n, frozen_copies=1, sequences=batch, loss="distill", checkpointing=gc)
    else:
        work = memory.Work(trained=n, sequences=batch, checkpointing=gc)
    tracker = Tracker()
    tracker.track_external(model)
    with tracker:
        run_stage(model, stage, batch, seq, 2, lambda s: tracker.reset_mod_stats() if s else None)
    peak = tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]
    name = "float32" if dtype == torch.float32 else "bfloat16"
    return peak, memory.estimate(d, work, seq, name)["peak"]


@pytest.mark.parametrize("kind, stage, dtype, gc", [
    ("llama", "full", torch.bfloat16, False), ("llama", "full", torch.bfloat16, True),
    ("gemma2", "full", torch.float32, True), ("llama", "lora", torch.bfloat16, True),
    ("gpt2", "lora", torch.float32, False), ("llama", "distill", torch.bfloat16, True),
    ("gemma2", "distill", torch.float32, False),
])
def test_peak_estimate_is_within_10_percent_of_the_measured_peak(kind, stage, dtype, gc):
    measured, estimated = _measured_peak(kind, stage, dtype, gc)
    assert 0.9 <= estimated / measured <= 1.1, (estimated, measured)


def test_plan_prints_memory_and_require_fit_refuses_what_does_not_fit(tmp_path, capsys):
    corpus = tmp_path / "bio.jsonl"
    corpus.write_text('{"text": "x"}\n')
    base = ["--config", str(ROOT / "configs" / "tar_llama3_8b.yaml"), "--set", f"setting.forget_corpus=[{{path: {corpus}, field: text}}]",
            "--storage", str(tmp_path / "s")]
    assert main([*base, "--plan", "--set", "scaling.gpu_memory_gib=141"]) == 0
    out = capsys.readouterr().out
    assert "memory per GPU" in out and "| tar (on random_mapping) |" in out
    code = main([*base, "--plan", "--require-fit", "--set", "scaling.gpu_memory_gib=80"])
    _one_line_error(code, capsys.readouterr().err, "scaling.gpu_memory_gib")
    code = main([*base, "--require-fit", "--set", "scaling.gpu_memory_gib=null"])  # a run: refused before any work
    _one_line_error(code, capsys.readouterr().err, "--require-fit: set scaling.gpu_memory_gib")
    assert not (tmp_path / "s").exists()
    with pytest.raises(config.ConfigError, match="gpu_memory_gib"):
        config.load(None, ["scaling.gpu_memory_gib=0"])
