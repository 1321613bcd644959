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


def no_setup(model, params, seed):
    return None


def all_parameters(model, params):
    return None
