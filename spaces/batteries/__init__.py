"""Fixed attack batteries: the papers' hand-picked attack grids as named, reproducible lists of
points of the attack space (``spaces/attack.py``), run instead of or beside the search. Each
battery is ``battery(steps, setting) -> points``: ``steps`` None is the paper's budget, a number
overrides it (``attack.battery_steps``).

One module per battery, discovered (``_``-prefixed helpers aside): its docstring cites the paper
and states the departures; ``battery(steps, setting)`` gives its points. Adding a battery is
adding a file here.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Callable

BATTERIES: dict[str, Callable[[int | None, str], list[dict]]] = {
    name: importlib.import_module(f"{__name__}.{name}").battery
    for _, name, _ in sorted(pkgutil.iter_modules(__path__)) if not name.startswith("_")
}
