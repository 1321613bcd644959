"""Random mapping: TAR's initial safeguard. Forget-token hidden states are pulled toward fixed
random vectors (one per token id), retain keeps its next-token likelihood.

loss = mean over layers ℓ and forget positions t of (1 − |cos(h_ℓ,t, r[x_t])|) + λ·CE(retain)

r is a (vocab × hidden) table of standard-normal vectors drawn once per run from the seed;
x_t is the input token at position t. |cos| (not cos) as in the authors' code: a hidden state
anti-aligned with its random vector is scrambled just as well.

Reference: Tamirisa et al. 2024, "Tamper-Resistant Safeguards for Open-Weight LLMs" (TAR),
code ``modules/objectives.py::random_vector_cosine_obj``. Differences, and why: the positions
are the setting's answer positions (the only ones a setting trains and scores; on arithmetic
every other position holds operand digits shared with retain problems), and the layers are the
decoder layers' outputs without the embedding output (a token's embedding is the same in forget
and retain text, so mapping it only fights the retain term).
"""

from __future__ import annotations

from types import ModuleType

import torch
import torch.nn.functional as F
from pydantic import Field

from trainables.methods._shared import all_parameters as trainable  # noqa: F401
from trainables.methods._shared import hidden_states, unwrap
from trainables.strict import Strict

CITATION = "Tamirisa et al. 2024, Tamper-Resistant Safeguards for Open-Weight LLMs (TAR), random mapping"
LOSS = (
    "mean over layers and f's answer positions of 1 − |cos(h, r[token])| (r: fixed random vector "
    "per token id) + λ·CE(r)"
)
DEFAULT_LOOP = {"lr": 1e-3, "steps": 150}


class Params(Strict):
    lam: float = Field(1.0, ge=0, description="retain weight (TAR: 1)")


def random_table(vocab_size: int, hidden_size: int, seed: int) -> torch.Tensor:
    """The fixed random vector of every token id, standard normal, drawn once from ``seed``."""
    return torch.randn(vocab_size, hidden_size, generator=torch.Generator().manual_seed(seed))


def cosine_loss(hidden: list[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    """Mean over layers of mean over positions of 1 − |cos(h, r)|; ``hidden`` is a list of
    (B, P, d) states, ``targets`` the (B, P, d) random vectors of those positions' tokens."""
    per_layer = [(1 - F.cosine_similarity(h.float(), targets, dim=-1).abs()).mean() for h in hidden]
    return torch.stack(per_layer).mean()


def setup(model: torch.nn.Module, params: Params, seed: int) -> dict:
    base = unwrap(model)
    table = random_table(base.config.vocab_size, base.config.hidden_size, seed)
    return {"table": table.to(next(base.parameters()).device)}


def loss(model, forget: torch.Tensor, retain: torch.Tensor, params: Params, setting: ModuleType, state: dict) -> torch.Tensor:
    """The cosine term on the forget batch's answer positions plus λ·CE(retain)."""
    hidden = [setting.answer_logits(h) for h in hidden_states(model, forget)[1:]]  # same slice as the logits
    targets = state["table"][setting.answer_logits(forget)]
    return cosine_loss(hidden, targets) + params.lam * setting.answer_loss(model(input_ids=retain).logits, retain)
