"""The fenced blocks of README.md and docs/*.md, read from the files, for the tests that run them
as written.

Every fenced block is preceded by a marker line ``<!-- readme-test: KIND -->`` saying how it is
tested (``tests/test_readme.py`` refuses a block without one, so a new block cannot go
untested): ``quickstart``, ``analysis``, ``ray-job`` and ``python`` run; ``cloud`` cannot run
here and is validated; ``usage`` is checked against ``--help``, ``layout`` against the tree;
``output`` and ``diagram`` are not commands.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
MARK = re.compile(r"^\s*<!-- readme-test: ([a-z-]+) -->\s*$")
FENCE = re.compile(r"^(\s*)```(\w*)\s*$")


@dataclass(frozen=True)
class Block:
    kind: str | None  # the marker's kind (None: unmarked)
    path: Path  # the file it is in
    lang: str
    text: str  # the block's lines, the fence's indentation removed
    line: int  # 1-based line of the opening fence


def blocks(path: Path | None = None) -> list[Block]:
    """Every fenced block of ``path`` (None: README.md, then every page of docs/) with the
    marker on the line before it (if any)."""
    if path is None:
        return [b for p in (README, *DOCS) for b in blocks(p)]
    lines = path.read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, lang, start = len(m.group(1)), m.group(2), i
        i += 1
        body = []
        while not FENCE.match(lines[i]):
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        mark = MARK.match(lines[start - 1]) if start else None
        out.append(Block(mark.group(1) if mark else None, path, lang, "\n".join(body) + "\n", start + 1))
        i += 1
    return out


def of_kind(kind: str) -> list[Block]:
    return [b for b in blocks() if b.kind == kind]


def commands(text: str) -> list[str]:
    """The shell commands of a block: comments and blank lines dropped, ``\\`` continuations
    joined."""
    out, cur = [], ""
    for line in text.splitlines():
        code = re.sub(r"\s+#.*$", "", line) if not line.lstrip().startswith("#") else ""
        if not code.strip() and not cur:
            continue
        if code.rstrip().endswith("\\"):
            cur += code.rstrip()[:-1] + " "
            continue
        out.append((cur + code).strip())
        cur = ""
    return [c for c in out if c]


def tiny_config(tmp_path: Path) -> Path:
    """configs/quick.yaml shrunk by the test suite's TINY overrides, with storage and cache in
    ``tmp_path`` (what ``TAMPER_SEARCH_CONFIG`` points the README's commands at)."""
    from search.config import apply_override, parse_override
    from tests.conftest import TINY

    raw = yaml.safe_load((ROOT / "configs" / "quick.yaml").read_text())
    # one trial at a time: a second trial actor costs a torch import on 2 busy cores (test_end_to_end.py)
    for text in [*TINY, "search.max_concurrent=1", f"storage={tmp_path / 'results'}", f"cache_dir={tmp_path / 'cache'}"]:
        apply_override(raw, *parse_override(text))
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path
