"""The base of every config model: a mistake is refused, not coerced.

Unknown keys, ``true``/``false`` where a number belongs (pydantic's lax mode reads them as 1 and
0) and non-finite numbers (``.inf``, ``.nan``: a learning rate or a bound no run can use) are
errors that name their field.
"""

from __future__ import annotations

import re
import types
import typing

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator


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


def format_error(err: ValidationError, tags: tuple[str, ...] = ()) -> str:
    """One ``<field.path>: <problem>`` per mistake, joined by ``; ``. ``tags``: discriminator
    values of a tagged union, which pydantic puts in the path and the user never wrote."""
    lines = []
    for e in err.errors():
        loc = [p for i, p in enumerate(e["loc"]) if not (i == 1 and p in tags)]
        where = ".".join(str(p) for p in loc) or "config"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        named = re.match(r"^([A-Za-z_][\w.\[\]]*): (.*)$", msg, re.S)
        if named and loc:  # a nested model's validator names its own field: setting.forget_corpus
            where, msg = f"{where}.{named.group(1)}", named.group(2)
        lines.append(f"{where}: {msg}" if e["loc"] else msg)
    return "; ".join(lines)
