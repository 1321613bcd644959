"""The table of unlearning methods (``docs/methods.md``), generated from the registry: each
method's loss, defaults, searched space and paper, as its two files declare them
(``trainables/methods/<method>.py``, ``spaces/<method>.py``). ``tests/test_readme.py`` checks
that the committed page is what this prints, so a new method shows up in it or fails the suite.

    python -m search.methods_table > docs/methods.md
"""

from __future__ import annotations

from typing import Any

from spaces.dims import Choice, Dim
from search.defender_config import DEFENDER_SPACES
from trainables.methods import METHODS

HEADER = """# Unlearning methods

One file per method in `trainables/methods/` (its loss, defaults and paper) and one search space
per method in `spaces/`, both found by the method's name: `defender.method: <name>` picks it. This
page is generated from them by `python -m search.methods_table > docs/methods.md` (a test fails
when they disagree). Defaults are calibrated on the arithmetic reference model (loop: AdamW, batch
64, constant lr); [defences](defences.md) has what they reach, UNDO, TAR and safeguards. f: a
forget batch, r: a retain batch.
"""


def number(v: Any) -> str:
    """A value as written in a config: ``1e-3``, ``150``, ``0.1``."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, float) and v and (abs(v) < 0.05 or abs(v) >= 1e4):
        mantissa, exp = f"{v:.0e}".split("e")
        return f"{mantissa}e{int(exp)}" if float(f"{v:.0e}") == v else f"{v:g}"
    return f"{v:g}"


def dim_text(name: str, dim: Dim) -> str:
    """``lr 1e-4…3e-3 (log)``, ``kind: full | lora``."""
    if isinstance(dim, Choice):
        return f"{name}: {' / '.join(map(str, dim.values))}"
    return f"{name} {number(dim.low)}…{number(dim.high)}" + (" (log)" if dim.log else "")


def row(name: str) -> str:
    """One method's line of the table."""
    m = METHODS[name]
    params = {k: v for k, v in m.Params().model_dump().items() if v is not None}
    defaults = ", ".join(f"{k} {number(v)}" for k, v in {**params, **m.DEFAULT_LOOP}.items())
    searched = ", ".join(dim_text(k, d) for k, d in DEFENDER_SPACES[name].items())
    cells = [f"`{name}`", m.LOSS, defaults, searched, m.CITATION]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def page() -> str:
    """The whole page."""
    lines = [HEADER, "| `method:` | loss | defaults | searched | paper |", "|---|---|---|---|---|"]
    return "\n".join([*lines, *(row(n) for n in METHODS)]) + "\n"


if __name__ == "__main__":
    print(page(), end="")
