"""RMU (Representation Misdirection for Unlearning), from the WMDP paper.

loss = mean ‖h_ℓ(forget) − c·u‖² + α · mean ‖h_ℓ(retain) − h_ℓ^frozen(retain)‖²

h_ℓ is the output of decoder layer ℓ at every token, means over tokens and hidden dimensions
(as ``mse_loss`` in the authors' ``rmu/unlearn.py``); u is drawn once, uniform in [0, 1)^d, then
unit-normalised, so ‖c·u‖ = c; h^frozen comes from a frozen copy of the model before unlearning.
Only the MLP output projections (``down_proj``, or the architecture's equivalent) of layers
ℓ−2 … ℓ are trained.

Reference: Li et al. 2024, "The WMDP Benchmark: Measuring and Reducing Malicious Use With
Unlearning", code ``rmu/unlearn.py`` (Zephyr-7B defaults: ℓ = 7, c = 6.5, α = 1200, lr 5e-5,
150 batches of 4). The arithmetic defaults below are scaled to 0.4 M-parameter models.
"""

from __future__ import annotations

from types import ModuleType

import torch
from pydantic import Field

from trainables.methods._shared import frozen_copy, unwrap
from trainables.strict import Strict

CITATION = "Li et al. 2024, The WMDP Benchmark (RMU), rmu/unlearn.py"
LOSS = (
    "mean‖h_ℓ(f) − c·u‖² + α·mean‖h_ℓ(r) − h_ℓ^frozen(r)‖²; only the MLP output projections of "
    "layers ℓ−2…ℓ train"
)
DEFAULT_LOOP = {"lr": 1e-2, "steps": 300}
LAYER_FIELDS = ("layer",)  # checked against the model's decoder layers when the config loads

# Where decoder layers live, and the MLP output projection inside each, per architecture family.
LAYER_PATHS = ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers")
MLP_OUT = ("mlp.down_proj", "mlp.c_proj", "mlp.dense_4h_to_h", "mlp.fc2")


class Params(Strict):
    layer: int = Field(-1, description="ℓ; negative counts from the last layer")
    c: float = Field(250.0, gt=0, description="steering coefficient: ‖c·u‖ = c")
    alpha: float = Field(10.0, ge=0, description="retain weight")
    layers_path: str | None = None  # e.g. "model.layers"; None: the first of LAYER_PATHS found
    mlp_out: str | None = None  # e.g. "mlp.down_proj"; None: the first of MLP_OUT found


def _get(module: torch.nn.Module, dotted: str) -> torch.nn.Module | None:
    for part in dotted.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


def decoder_layers(model: torch.nn.Module, params: Params) -> torch.nn.ModuleList:
    """The model's decoder layers, found by module path."""
    model = unwrap(model)
    for path in ([params.layers_path] if params.layers_path else LAYER_PATHS):
        layers = _get(model, path)
        if isinstance(layers, torch.nn.ModuleList):
            return layers
    raise ValueError(f"RMU: no decoder layers at {params.layers_path or LAYER_PATHS}; set layers_path")


def layer_index(model: torch.nn.Module, params: Params) -> int:
    n = len(decoder_layers(model, params))
    idx = params.layer % n if params.layer < 0 else params.layer
    if not 0 <= idx < n:
        raise ValueError(f"RMU: layer {params.layer} out of range for {n} layers")
    return idx


def trainable(model: torch.nn.Module, params: Params) -> list[torch.nn.Parameter]:
    """The MLP output projection weights of layers ℓ−2 … ℓ (all that RMU updates)."""
    layers = decoder_layers(model, params)
    ell = layer_index(model, params)
    out = []
    for i in range(max(0, ell - 2), ell + 1):
        for path in ([params.mlp_out] if params.mlp_out else MLP_OUT):
            proj = _get(layers[i], path)
            if proj is not None:
                out.append(proj.weight)
                break
        else:
            raise ValueError(f"RMU: layer {i} has no {params.mlp_out or MLP_OUT}; set mlp_out")
    return out


def memory(model: torch.nn.Module, params: Params) -> dict:
    """For the memory estimate: a frozen copy; activations up to layer ℓ; no logits kept."""
    return {"frozen_copies": 1, "through_layers": layer_index(model, params) + 1, "loss": "hidden"}


def control_vector(hidden_size: int, c: float, seed: int) -> torch.Tensor:
    """c·u with u uniform in [0, 1)^d, unit-normalised (drawn once per run)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(hidden_size, generator=g)
    return c * u / u.norm()


def layer_output(model: torch.nn.Module, layers: torch.nn.ModuleList, ell: int, tokens: torch.Tensor) -> torch.Tensor:
    """The output hidden state of decoder layer ℓ, via a forward hook (B, L, d)."""
    seen = {}

    def hook(module, args, output):
        seen["h"] = output[0] if isinstance(output, tuple) else output

    handle = layers[ell].register_forward_hook(hook)
    try:
        model(input_ids=tokens)
    finally:
        handle.remove()
    return seen["h"]


def setup(model: torch.nn.Module, params: Params, seed: int) -> dict:
    """The frozen model (for retain activations) and the control vector."""
    base = unwrap(model)
    hidden = base.config.hidden_size
    device = next(base.parameters()).device
    return {"frozen": frozen_copy(base), "cu": control_vector(hidden, params.c, seed).to(device)}


def loss(model, forget: torch.Tensor, retain: torch.Tensor, params: Params, setting: ModuleType, state: dict) -> torch.Tensor:
    """The RMU forget term plus α times the retain term."""
    base = unwrap(model)
    ell = layer_index(base, params)
    h_f = layer_output(model, decoder_layers(base, params), ell, forget)
    h_r = layer_output(model, decoder_layers(base, params), ell, retain)
    with torch.no_grad():
        frozen = state["frozen"]
        h_r_frozen = layer_output(frozen, decoder_layers(frozen, params), ell, retain)
    cu = state["cu"].to(h_f.device)
    forget_term = torch.nn.functional.mse_loss(h_f, cu.expand_as(h_f))
    retain_term = torch.nn.functional.mse_loss(h_r, h_r_frozen)
    return forget_term + params.alpha * retain_term
