"""The base of every config model: a mistake is refused, not coerced.

Unknown keys, ``true``/``false`` where a number belongs (pydantic's lax mode reads them as 1 and
0) and non-finite numbers (``.inf``, ``.nan``: a learning rate or a bound no run can use) are
errors that name their field.
"""

from __future__ import annotations

import types
import typing

from pydantic import BaseModel, ConfigDict, model_validator


def _numeric(annotation) -> bool:
    """True if a field of this type takes a number (int or float, optionally None)."""
    if annotation in (int, float):
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_numeric(a) for a in typing.get_args(annotation))
    return False


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, data):
        if isinstance(data, dict):
            for name, value in data.items():
                field = cls.model_fields.get(name)
                if isinstance(value, bool) and field is not None and _numeric(field.annotation):
                    raise ValueError(f"{name}: must be a number, not {str(value).lower()}")
        return data
