"""Where a model or dataset comes from: a hub id (``cais/wmdp``, ``google/gemma-2-2b``) or a
local path. Config checks and loaders ask the same question, so it is answered once."""

from __future__ import annotations

import os
from pathlib import Path

LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")


def is_local(path: str) -> bool:
    """True for a local file or folder (exists, or is written like a path or a data file);
    False for a hub id such as ``cais/wmdp``."""
    p = os.path.expanduser(path)
    return (os.path.exists(p) or path.startswith(("/", "./", "../", "~"))
            or path.endswith(LOCAL_SUFFIXES))


def missing(path: str) -> bool:
    """True for a local path (not a hub id) that does not exist."""
    return is_local(path) and not Path(os.path.expanduser(path)).exists()
