"""The configuration reference (``docs/configuration.md``), generated from the config models.

Every section of ``ExperimentConfig`` (``search/config.py``) and of the sections below it, one
table each: a field's name, type, default, and what it means — the comment written above the
field (or after it, on its line) in the model's source, since that is where this code base says
what a field is for. ``tests/test_readme.py`` checks that the committed page is what this
prints, so a new or changed field shows up in the page or fails the suite.

    python -m search.config_reference > docs/configuration.md
"""

from __future__ import annotations

import ast
import inspect
import io
import json
import textwrap
import tokenize
import types
import typing

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from search.config import ExperimentConfig

HEADER = """# Configuration reference

Every key of an experiment config (`configs/*.yaml`, `--set KEY=VALUE`), section by section.
Generated from the config models by `python -m search.config_reference > docs/configuration.md`;
a test fails when this page and the models disagree. `--set` takes a dotted path
(`attack.budget=8`, `defender.params.lr=1e-3`); a mistake exits 2 with one line naming the key.
"""


def field_comments(cls: type) -> dict[str, str]:
    """Each field of ``cls`` → the comment lines directly above its line in the source, then the
    comment at the end of its line, joined."""
    source = textwrap.dedent(inspect.getsource(cls))
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    lines = source.splitlines()
    out = {}
    (node,) = ast.parse(source).body
    for stmt in node.body:
        if not isinstance(stmt, ast.AnnAssign) or not isinstance(stmt.target, ast.Name):
            continue
        above, n = [], stmt.lineno - 1
        while n >= 1 and n in comments and lines[n - 1].lstrip().startswith("#"):
            above.insert(0, comments[n])
            n -= 1
        trailing = [comments[n] for n in range(stmt.lineno, stmt.end_lineno + 1)
                    if n in comments and not lines[n - 1].lstrip().startswith("#")]
        # tool pragmas (``type: ignore``, ``noqa``) are not meanings
        kept = [c for c in above + trailing if not c.startswith(("type: ignore", "noqa"))]
        out[stmt.target.id] = " ".join(kept)
    return out


def type_name(ann) -> str:
    """A field's type as a reader says it: ``int``, ``float or null``, ``tpe | nsga2``."""
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Literal:
        return " \\| ".join(str(a) for a in args)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        named = list(dict.fromkeys(type_name(a) for a in args if a is not type(None)))
        return " or ".join(named) + (" or null" if type(None) in args else "")
    if origin in (list, tuple):
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict or ann is dict:
        return "mapping"
    if inspect.isclass(ann) and issubclass(ann, BaseModel):
        return "section"
    return getattr(ann, "__name__", str(ann))


def default_text(field) -> str:
    """A field's default as it would be written in YAML (a section's: see its table)."""
    if field.default is PydanticUndefined:
        return "required" if field.default_factory is None else repr(field.default_factory())
    value = field.default
    if isinstance(value, BaseModel):
        return "(section)"
    if value is None:
        return "null"
    if isinstance(value, list) and value and all(isinstance(v, BaseModel) for v in value):
        return "[" + ", ".join(json.dumps(v.model_dump(exclude_none=True)) for v in value) + "]"
    if isinstance(value, bool):
        return str(value).lower()
    return f"`{value}`" if isinstance(value, str) else str(value).replace("|", "\\|")


def models_in(ann) -> list[type]:
    """The config models a field's annotation names (through Optional, unions, lists)."""
    if inspect.isclass(ann) and issubclass(ann, BaseModel):
        return [ann]
    return [m for arg in typing.get_args(ann) for m in models_in(arg)]


def sections(cls: type = ExperimentConfig, path: str = "", seen: set | None = None) -> list[tuple[str, type]]:
    """(dotted path, model) of ``cls`` and of every section below it, depth first, each model at
    its first place only; a setting's alternatives (``arithmetic``, ``wmdp``) each under ``setting``."""
    seen = set() if seen is None else seen
    seen.add(cls)
    out = [(path, cls)]
    for name, field in cls.model_fields.items():
        for sub in models_in(field.annotation):
            if sub not in seen:
                out += sections(sub, f"{path}.{name}".lstrip("."), seen)
    return out


def page() -> str:
    """The whole reference page."""
    parts = [HEADER]
    documented = {cls: path for path, cls in sections() if path}
    for path, cls in sections():
        doc = inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0].replace("\n", " ")
        name = getattr(cls.model_fields.get("name"), "default", None) if path == "setting" else None
        title = f"`{path}`" + (f" (`name: {name}`)" if name else "") if path else "top level"
        parts += [f"## {title} — `{cls.__module__}.{cls.__name__}`", "", doc, "",
                  "| key | type | default | meaning |", "|---|---|---|---|"]
        comments = field_comments(cls)
        for key, field in cls.model_fields.items():
            meaning = comments.get(key, "").replace("|", "\\|")
            where = list(dict.fromkeys(f"`{documented[c]}`" for c in models_in(field.annotation) if c in documented))
            if where:
                meaning = f"section: see {' / '.join(where)}" + (f"; {meaning}" if meaning else "")
            parts.append(f"| `{key}` | {type_name(field.annotation)} | {default_text(field)} | {meaning} |")
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


if __name__ == "__main__":
    print(page(), end="")
