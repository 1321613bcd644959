"""The stage cache: a stage's output lives under a key derived from everything that determines
it (stage name, spec, the keys of its inputs, the code version), so a stage whose key exists is
never run again. Entries are committed atomically (written aside, then renamed).

Ray-free: the in-process runner and the Ray Train runner share it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from functools import lru_cache
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
RESULT_FILE = "result.json"


@lru_cache(maxsize=1)
def code_version() -> str:
    """Hash of the training code (every ``trainables/*.py``): any change invalidates the cache."""
    h = hashlib.sha256()
    for path in sorted((PACKAGE_ROOT / "trainables").rglob("*.py")):
        h.update(path.relative_to(PACKAGE_ROOT).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def stage_key(stage: str, spec: dict, input_keys: dict[str, str]) -> str:
    """Content key of a stage run."""
    blob = json.dumps(
        {"stage": stage, "spec": spec, "inputs": input_keys, "code": code_version()},
        sort_keys=True,
    )
    return f"{stage}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def entry(cache_dir: Path, key: str) -> Path:
    """Folder of a cache entry (it may not exist yet)."""
    return Path(cache_dir) / key


def lookup(cache_dir: Path, key: str) -> dict | None:
    """The stored result of ``key``, or None if the stage has not run."""
    path = entry(cache_dir, key) / RESULT_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text())


def staging_dir(cache_dir: Path, key: str) -> Path:
    """A fresh folder beside the cache to write an entry into before committing it."""
    path = Path(cache_dir) / ".staging" / f"{key}-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    return path


def commit(cache_dir: Path, key: str, staged: Path, result: dict) -> Path:
    """Write ``result`` into ``staged`` and move it into place as ``key``.

    If another process committed the same key first, its entry wins and ours is discarded
    (same key, same content).
    """
    (staged / RESULT_FILE).write_text(json.dumps(result))
    target = entry(cache_dir, key)
    try:
        os.rename(staged, target)
    except OSError:
        if not (target / RESULT_FILE).exists():
            raise
        shutil.rmtree(staged, ignore_errors=True)
    return target
