"""Pieces shared by several methods."""

from __future__ import annotations

import copy

import torch

from trainables.models import freeze


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DDP wrapper (or the model itself)."""
    return getattr(model, "module", model)


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen, evaluation-mode copy of ``model`` (the reference policy / activations)."""
    return freeze(copy.deepcopy(unwrap(model)))


def hidden_states(model: torch.nn.Module, tokens: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Every layer's hidden states (the embeddings' first) for a loss that reads no logits: the
    vocabulary projection runs on the last position only (``logits_to_keep=1``), not on every
    one; at a 128 k vocabulary it is the largest matrix product of a small model's forward."""
    return model(input_ids=tokens, output_hidden_states=True, logits_to_keep=1).hidden_states


def no_setup(model, params, seed):
    return None


def all_parameters(model, params):
    return None
