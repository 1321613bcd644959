"""What the families that put something before each question share (``few_shot``, ``prefix``,
``soft_prompt``): a wrapper that prepends a context — token ids or input embeddings — to every
row the model is given and returns the logits of the row's own positions, so that a setting's
scoring and losses run unchanged on the wrapped model; weights frozen while a context is
optimised; and the rows of T, without their padding, that a context is made of."""

from __future__ import annotations

import contextlib
import copy
from types import SimpleNamespace
from typing import Iterator

import torch

from trainables import compute


class Prepended(torch.nn.Module):
    """``model`` with ``context`` before every row: token ids (k,) or input embeddings (k, d).

    ``forward(input_ids, attention_mask=None)`` runs the model on [context, row] (the context
    attended everywhere) and returns an object whose ``logits`` are the row's positions only,
    (B, L, V): what a setting's ``score`` and ``answer_loss`` read. The context is an attribute,
    not a parameter: ``parameters()`` lists the model's weights only.

    Without gradients (scoring) the context runs through the model once: its keys and values
    are kept and every batch of rows attends to them, so scoring n rows costs one pass over the
    context, not n (``context_flops``). With gradients (a soft prompt or prefix being optimised)
    every call runs [context, row] whole."""

    def __init__(self, model: torch.nn.Module, context: torch.Tensor):
        super().__init__()
        self.model = model
        self.context = context
        self._kv: tuple | None = None  # ((device, dtype, version), the context's key-value cache)

    def _context_cache(self, dev, dtype):
        """The context's key-value cache, computed again only when the device, the dtype or the
        context itself changed (a soft prompt is updated in place between evaluations: its
        tensor's version counter moves)."""
        key = (dev, dtype, self.context._version)
        if self._kv is None or self._kv[0] != key:
            alone = torch.zeros(1, 0, dtype=torch.long, device=dev)  # the context and no row
            self._kv = (key, self.model(**self._joined(alone), use_cache=True).past_key_values)
        return self._kv[1]

    def _joined(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """The model's input for [context, row] on every row: token ids (one sequence, as a
        tokenizer would give it) or input embeddings."""
        b, dev = input_ids.shape[0], input_ids.device
        if self.context.dtype == torch.long:
            return {"input_ids": torch.cat([self.context.to(dev).expand(b, -1), input_ids], 1)}
        rows = self.model.get_input_embeddings()(input_ids)
        return {"inputs_embeds": torch.cat([self.context.to(dev, rows.dtype).expand(b, -1, -1), rows], 1)}

    @property
    def config(self):
        return self.model.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> SimpleNamespace:
        b, k = input_ids.shape[0], self.context.shape[0]
        check_room(self.model, k, input_ids.shape[1])
        dev = input_ids.device
        kept = None if torch.is_grad_enabled() else self._context_cache(dev, self.model.get_input_embeddings().weight.dtype)
        if kept is not None:  # None: the model keeps no cache (gradient checkpointing in training mode)
            cache = copy.deepcopy(kept)  # the forward appends the rows to it
            cache.batch_repeat_interleave(b)
            out = self.model(input_ids=input_ids, attention_mask=_mask(attention_mask, b, k, dev), past_key_values=cache)
            return SimpleNamespace(logits=out.logits)
        out = self.model(**self._joined(input_ids), attention_mask=_mask(attention_mask, b, k, dev))
        return SimpleNamespace(logits=out.logits[:, k:])


def context_flops(model: torch.nn.Module, k: int, row_tokens: int) -> float:
    """What a context of ``k`` positions adds to scoring ``row_tokens`` row tokens with its keys
    and values kept (``Prepended`` without gradients): one forward pass over it (2·N per token),
    and each row token's attention to its k keys and values in every layer (4·d·k)."""
    cfg = model.config  # hidden_size / num_hidden_layers: GPT-2's config maps them to n_embd / n_layer
    n = sum(p.numel() for p in model.parameters())
    return compute.forward_flops(n, k) + 4.0 * cfg.num_hidden_layers * cfg.hidden_size * k * row_tokens


def _mask(mask: torch.Tensor | None, b: int, k: int, dev) -> torch.Tensor | None:
    return None if mask is None else torch.cat([torch.ones(b, k, dtype=mask.dtype, device=dev), mask], 1)


def learned_positions(model: torch.nn.Module) -> int | None:
    """How many absolute positions ``model`` learned (GPT-2's ``n_positions``); None for a
    rotary model, which has no position table."""
    return getattr(model.config, "n_positions", None)


def row_width(d) -> int:
    """The widest row a setting's data puts through the model (T, V, retain evaluation)."""
    return max(x.ids.shape[1] if hasattr(x, "ids") else x.shape[1] for x in (d.forget_T, d.forget_V, d.retain_eval))


def check_room(model: torch.nn.Module, k: int, width: int) -> None:
    """Raise ValueError where ``k`` context positions before rows of ``width`` exceed the
    absolute positions a model learned."""
    n = learned_positions(model)
    if n is not None and k + width > n:
        raise ValueError(f"a context of {k} tokens before rows of {width} needs {k + width} positions; "
                         f"the model learned {n} (config n_positions)")


def real_tokens(row: torch.Tensor, pad_id: int | None) -> torch.Tensor:
    """A right-padded row without its trailing padding (every token where ``pad_id`` is None)."""
    if pad_id is None:
        return row
    real = (row != pad_id).nonzero()
    return row[: int(real[-1]) + 1] if len(real) else row[:0]


def token_pool(tokens: torch.Tensor, pad_id: int | None) -> torch.Tensor:
    """The distinct token ids of ``tokens`` (T's rows), padding aside: where a context's first
    tokens are drawn from (nothing of V)."""
    ids = torch.unique(tokens)
    return ids if pad_id is None else ids[ids != pad_id]


@contextlib.contextmanager
def frozen(model: torch.nn.Module) -> Iterator[None]:
    """The model's weights need no gradient during the block (only the context is optimised:
    no weight gradients are computed or kept); their ``requires_grad`` as it was after."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
