"""The stage cache: a stage's output lives under a key derived from everything that determines
it (stage name, spec, the keys of its inputs, the code version), so a stage whose key exists is
never run again. Entries are committed atomically (written aside, then renamed).

The cache may be a local folder or a storage URI (``s3://``, ``gs://``, through ``pyarrow.fs``):
then an entry is uploaded with its ``result.json`` last (the entry exists once that object
does), and a process that needs one as an input downloads it once into a local mirror on its
node (``materialize``). So a stage computed on one node is reused on every other.

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

import pyarrow.fs as pafs

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


def is_remote(location: str | Path) -> bool:
    """True for a storage URI (``s3://...``), False for a local path."""
    return "://" in str(location)


def _fs(location: str) -> tuple[pafs.FileSystem, str]:
    return pafs.FileSystem.from_uri(location)


def mirror_root(cache_uri: str) -> Path:
    """This node's local copy of a remote cache (``TAMPER_SEARCH_MIRROR`` or ~/.cache)."""
    root = os.environ.get("TAMPER_SEARCH_MIRROR", "~/.cache/tamper-search/mirror")
    return Path(os.path.expanduser(root)) / hashlib.sha256(cache_uri.rstrip("/").encode()).hexdigest()[:12]


def entry(cache_dir: str | Path, key: str) -> str | Path:
    """Location of a cache entry (it may not exist yet): a folder, or a URI."""
    if is_remote(cache_dir):
        return f"{str(cache_dir).rstrip('/')}/{key}"
    return Path(cache_dir) / key


def lookup(cache_dir: str | Path, key: str) -> dict | None:
    """The stored result of ``key``, or None if the stage has not run."""
    if is_remote(cache_dir):
        fs, path = _fs(f"{entry(cache_dir, key)}/{RESULT_FILE}")
        if fs.get_file_info(path).type == pafs.FileType.NotFound:
            return None
        with fs.open_input_stream(path) as f:
            return json.loads(f.read())
    path = entry(cache_dir, key) / RESULT_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text())


def staging_dir(cache_dir: str | Path, key: str) -> Path:
    """A fresh local folder to write an entry into before committing it."""
    root = mirror_root(str(cache_dir)) if is_remote(cache_dir) else Path(cache_dir)
    path = root / ".staging" / f"{key}-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    return path


def _move_into_place(staged: Path, target: Path) -> Path:
    """Rename ``staged`` to ``target``; if another process got there first, keep theirs (same
    key, same content)."""
    try:
        os.rename(staged, target)
    except OSError:
        if not (target / RESULT_FILE).exists():
            raise
        shutil.rmtree(staged, ignore_errors=True)
    return target


def commit(cache_dir: str | Path, key: str, staged: Path, result: dict) -> str | Path:
    """Write ``result`` into ``staged`` and publish it as ``key``; returns the entry's location.

    Remote: every file is uploaded, ``result.json`` last, then the staged folder becomes this
    node's mirror copy.
    """
    (staged / RESULT_FILE).write_text(json.dumps(result))
    if not is_remote(cache_dir):
        return _move_into_place(staged, entry(cache_dir, key))
    uri = entry(cache_dir, key)
    fs, base = _fs(uri)
    local = pafs.LocalFileSystem()
    files = sorted(staged.rglob("*"), key=lambda f: f.name == RESULT_FILE)  # the marker last
    for f in files:
        if f.is_file():
            dest = f"{base}/{f.relative_to(staged).as_posix()}"
            fs.create_dir(dest.rsplit("/", 1)[0], recursive=True)
            pafs.copy_files(str(f), dest, source_filesystem=local, destination_filesystem=fs)
    mirror = mirror_root(str(cache_dir)) / key
    mirror.parent.mkdir(parents=True, exist_ok=True)
    _move_into_place(staged, mirror)
    return uri


def remove(location: str | Path) -> None:
    """Delete a folder, local or remote, if it is there."""
    if not is_remote(location):
        shutil.rmtree(location, ignore_errors=True)
        return
    fs, path = _fs(str(location))
    try:
        fs.delete_dir(path)
    except (OSError, FileNotFoundError):
        pass


def materialize(location: str | Path) -> str:
    """A local path for a stage input: a local folder or hub id as is; a remote entry
    downloaded once into this node's mirror (whole, then renamed into place)."""
    location = str(location)
    if not is_remote(location):
        return location
    cache_uri, key = location.rstrip("/").rsplit("/", 1)
    target = mirror_root(cache_uri) / key
    if (target / RESULT_FILE).exists():
        return str(target)
    fs, base = _fs(location)
    if fs.get_file_info(f"{base}/{RESULT_FILE}").type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"cache entry {location} is not committed")
    staged = staging_dir(cache_uri, key)
    pafs.copy_files(base, str(staged), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    return str(_move_into_place(staged, target))
