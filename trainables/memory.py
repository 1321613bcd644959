"""Peak accelerator memory of one stage, from the model's shapes and what the stage holds —
before anything runs (``python search/run.py --plan``).

    peak = weights + frozen copies + optimizer state + extra copies of the trained parameters
           + max(activations + the loss's transient tensors,   # the start of the backward pass
                 gradients + the optimizer step's temporaries)  # its end

* weights: every parameter in the parameter dtype; frozen copies: a teacher (UNDO), a reference
  (TAR, NPO), RMU's frozen model. With FSDP over ``shards`` GPUs, weights, gradients and
  optimizer state are split (a frozen copy is not sharded by this project, so it is not split).
* optimizer state: per trained parameter, ``OPTIMIZER_STATES`` tensors of its dtype (LoRA
  adapters are float32: peft up-casts them beside a bf16 base). TAR adds its inner AdamW (2)
  and the accumulated tamper-resistance gradient (1).
* activations: what autograd saves, per decoder layer and token, counted as float32 elements
  and parameter-dtype elements per model dimension (``LAYER_ELEMENTS``: measured by counting
  the bytes autograd saves for small models of each family in float32 and bf16, then fitted
  exactly; ``tests/test_memory.py`` re-measures them). With activation checkpointing a layer
  keeps only its input, plus one layer's activations while it is recomputed.
* the loss's transient tensors: next-token logits and their float32 copies (cross-entropy:
  logits, float32 copy, log-softmax, its gradient; distillation: the teacher's too).

What it leaves out: the CUDA context and kernels' workspaces (about 0.5–1 GiB per GPU), the
caching allocator's fragmentation, and evaluation (no gradients: smaller than training). The
estimate is checked on the CPU against ``torch.distributed._tools.mem_tracker.MemTracker``'s
peak (tensor-level accounting, as ``torch.cuda.max_memory_allocated``) in
``tests/test_memory.py``; ``bench/paper_scale.py`` prints it beside the measured GPU peak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

GiB = 2**30
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# state tensors per trained parameter (schedule-free AdamW: z and the second moment)
OPTIMIZER_STATES = {"adamw": 2, "adam": 2, "adamw_schedule_free": 2, "sgd": 0, "sgd_momentum": 1,
                    "sgd_nesterov": 1, "adagrad": 1}
# Per decoder layer and token, (float32 elements, parameter-dtype elements) per model dimension:
# hidden, intermediate (MLP), q (heads × head_dim), kv (kv heads × head_dim), scores (heads ×
# sequence length: attention probabilities that eager attention saves; SDPA saves none).
LAYER_ELEMENTS = {
    "llama": {"hidden": (2, 4), "intermediate": (0, 4), "q": (0, 2), "kv": (0, 2)},
    "mistral": {"hidden": (2, 4), "intermediate": (0, 4), "q": (0, 2), "kv": (0, 2)},
    "gemma2": {"hidden": (8, 2), "intermediate": (0, 4), "q": (0, 4), "scores": (2, 0)},
    "gpt2": {"hidden": (0, 10), "intermediate": (0, 5)},
}


# Bytes per next-token logit alive at the loss's peak, whatever the parameter dtype: cross-entropy
# keeps a float32 copy, its log-softmax and their gradient; distillation the student's and the
# teacher's log-softmax too; RMU's loss reads hidden states, the logits are only computed.
PER_LOGIT = {"ce": lambda b: 12, "distill": lambda b: 20 + 2 * b, "hidden": lambda b: 4}


@dataclass(frozen=True)
class Dims:
    """The shapes of a causal LM that its memory depends on."""

    model_type: str
    n_params: int
    hidden: int
    intermediate: int
    heads: int
    q: int
    kv: int
    layers: int
    vocab: int
    eager: bool  # attention probabilities saved (eager attention)
    softcap: bool  # final-logit soft-capping (Gemma 2): two more logits-sized tensors


def dims(mc, n_params: int | None = None) -> Dims:
    """``Dims`` of a transformers config (``n_params``: counted on the meta device if not given)."""
    kind = mc.model_type
    if kind not in LAYER_ELEMENTS:
        raise ValueError(f"memory: no activation model for model_type {kind!r} (known: {sorted(LAYER_ELEMENTS)})")
    if kind == "gpt2":
        hidden, heads, layers = mc.n_embd, mc.n_head, mc.n_layer
        inter, head_dim, kv_heads = mc.n_inner or 4 * hidden, hidden // heads, heads
    else:
        hidden, heads, layers, inter = mc.hidden_size, mc.num_attention_heads, mc.num_hidden_layers, mc.intermediate_size
        head_dim = getattr(mc, "head_dim", None) or hidden // heads
        kv_heads = getattr(mc, "num_key_value_heads", None) or heads
    if n_params is None:
        n_params = count_params(mc)
    attn = getattr(mc, "_attn_implementation", None) or ("eager" if kind == "gemma2" else "sdpa")
    return Dims(kind, n_params, hidden, inter, heads, heads * head_dim, kv_heads * head_dim, layers,
                mc.vocab_size, eager=attn == "eager" or kind == "gemma2",
                softcap=bool(getattr(mc, "final_logit_softcapping", None)))


def count_params(mc) -> int:
    """Parameters of a transformers config's model, built on the meta device (no memory)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(mc)
    return sum(p.numel() for p in model.parameters())


def layer_bytes_per_token(d: Dims, seq: int, dtype_bytes: int) -> float:
    """Bytes autograd saves per decoder layer and token."""
    size = {"hidden": d.hidden, "intermediate": d.intermediate, "q": d.q, "kv": d.kv,
            "scores": d.heads * seq if d.eager else 0}
    return sum(size[k] * (f32 * 4 + low * dtype_bytes) for k, (f32, low) in LAYER_ELEMENTS[d.model_type].items())


def lora_bytes_per_token(d: Dims, r: int, dtype_bytes: int) -> float:
    """What LoRA adapters on every linear layer (``targets: all``) add per layer and token: each
    adapter's rank-r float32 intermediate and, below float32, the float32 copy of its input that
    peft makes to meet its float32 adapter weights, less the base layers' saved inputs that a
    frozen weight no longer needs (about half a copy's bytes, as measured)."""
    if d.model_type == "gpt2":  # c_attn, attn.c_proj, c_fc, mlp.c_proj
        inputs, targets = 3 * d.hidden + d.intermediate, 4
    else:  # q, k, v, o, gate, up, down
        inputs, targets = 5 * d.hidden + d.q + d.intermediate, 7
    return targets * r * 4 + inputs * (4 - dtype_bytes)


@dataclass(frozen=True)
class Work:
    """What one stage holds on one GPU besides the model: the parameters it trains, their
    optimizer, frozen copies, and the forward passes whose activations are alive at once."""

    trained: int  # trained parameters (all of them, RMU's three projections, LoRA's adapters)
    trained_bytes: int | None = None  # their element size (None: the parameter dtype's)
    optimizer: str = "adamw"
    frozen_copies: int = 0  # full frozen copies of the model on the device
    extra_trained_copies: int = 0  # TAR: inner AdamW state (2) + accumulated gradient (1)
    sequences: int = 1  # sequences whose activations are alive at the backward (RMU: forget + retain)
    through_layers: int | None = None  # layers whose activations are saved (RMU: up to ℓ; None: all)
    loss: str = "ce"  # ce | distill | hidden (RMU: no logits kept)
    checkpointing: bool = False
    lora_r: int = 0  # LoRA rank (activations of the adapters: small, counted)
    notes: list[str] = field(default_factory=list)


def estimate(d: Dims, w: Work, seq: int, dtype: str = "bfloat16", shards: int = 1) -> dict[str, float]:
    """Peak bytes on one GPU, by part (``peak`` is the total), for ``w`` on a model of ``d``
    with sequences of ``seq`` tokens; ``shards``: GPUs an FSDP stage is split over (1: DDP or
    one GPU)."""
    b = DTYPE_BYTES[dtype]
    tb = w.trained_bytes or b
    weights = d.n_params * b / shards
    frozen = w.frozen_copies * d.n_params * b
    opt = OPTIMIZER_STATES[w.optimizer] * w.trained * tb / shards
    extra = w.extra_trained_copies * w.trained * tb / shards
    grads = w.trained * tb / shards
    tokens = w.sequences * seq
    layers = d.layers if w.through_layers is None else w.through_layers
    per_layer = layer_bytes_per_token(d, seq, b) + (lora_bytes_per_token(d, w.lora_r, b) if w.lora_r else 0)
    base = tokens * d.hidden * (4 + b)  # the embeddings' output and the final norm's input
    logits_tokens = seq * (w.sequences if w.loss != "hidden" else 1)
    logits = logits_tokens * d.vocab * (PER_LOGIT[w.loss](b) + (b if d.softcap else 0))
    if w.checkpointing:  # each layer keeps its input; one layer's activations while recomputed,
        # after the loss's tensors are gone
        acts = tokens * layers * d.hidden * b + base
        forward_peak = acts + max(logits, tokens * per_layer)
    else:
        acts = tokens * layers * per_layer + base
        forward_peak = acts + logits
    step_temp = w.trained * tb / shards  # a foreach optimizer step's temporaries: about one copy
    dynamic = max(forward_peak, grads + step_temp)
    out = {"weights": weights, "frozen": frozen, "optimizer": opt, "extra": extra, "gradients": grads,
           "activations": acts, "logits": logits, "step_temporaries": step_temp}
    out["peak"] = weights + frozen + opt + extra + dynamic
    return out


def gpus_needed(d: Dims, w: Work, seq: int, dtype: str, gpu_bytes: float, limit: int = 1024) -> int | None:
    """The fewest GPUs of ``gpu_bytes`` an FSDP split of ``w`` fits (None: not within ``limit``;
    activations, logits and frozen copies are per GPU, so more GPUs stop helping)."""
    last = None
    for n in range(1, limit + 1):
        peak = estimate(d, w, seq, dtype, shards=n)["peak"]
        if peak <= gpu_bytes:
            return n
        if last is not None and math.isclose(peak, last):
            return None
        last = peak
    return None
