"""The code's layers, read from its imports (no module runs): ``spaces/`` imports nothing of the
others, ``trainables/`` nothing of ``search/`` or ``analysis/``; ``search/`` and ``analysis/``
name no setting, unlearning method or attack family (they reach them through the registries,
so a plug-in touches neither); no import cycle among the modules; no module name shared across
``search/`` and ``trainables/``."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("spaces", "trainables", "search", "analysis")


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Each module of the packages → the project modules it imports (at any depth of its code)."""
    modules = {_module(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    out = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        out[name] = {m for m in found if m in modules}
    return out


def _top_level_imports(name: str) -> set[str]:
    """The project modules a module imports when it is imported (not inside functions)."""
    path = ROOT / Path(*name.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return found


def test_no_layer_imports_one_above_it():
    """spaces/ (what is searched) and trainables/ (what runs) are two bottom layers that know
    nothing of each other: the configuration sections that join them (``search/*_config.py``)
    and everything else in search/ sit above both, analysis/ on top."""
    above = {"spaces": ("trainables", "search", "analysis"), "trainables": ("spaces", "search", "analysis")}
    for module, imported in _imports().items():
        for target in imported:
            assert not target.startswith(above.get(module.split(".")[0], ())), f"{module} imports {target}"


def test_search_and_analysis_name_no_setting_method_or_family():
    plugins = ("trainables.settings.", "trainables.methods.", "trainables.families.")
    for module, imported in _imports().items():
        if module.startswith(("search", "analysis")):
            named = {t for t in imported if t.startswith(plugins) and not t.split(".")[-1].startswith("_")}
            assert not named, f"{module} imports {named}: reach it through its registry"


def test_no_import_cycle():
    graph = _imports()
    modules = set(graph)
    top = {m: {t for t in _top_level_imports(m) if t in modules and t != m} for m in modules}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(top[m]):
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " → ".join([*path[path.index(t):], t]))
            if t not in state:
                visit(t, [*path, t])
        state[m] = 2

    for m in sorted(modules):
        if m not in state:
            visit(m, [m])


def test_no_module_name_is_shared_by_search_and_trainables():
    # a module file or a package: search/families.py beside trainables/families/ misleads as much
    names = lambda pkg: ({p.stem for p in (ROOT / pkg).glob("*.py") if p.stem != "__init__"}  # noqa: E731
                         | {p.parent.name for p in (ROOT / pkg).glob("*/__init__.py")})
    assert not names("search") & names("trainables")
