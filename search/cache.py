"""The stage cache: a stage's output lives under a key derived from everything that determines
it (stage name, spec, the keys of its inputs, the code version), so a stage whose key exists is
never run again. Entries are committed atomically (written aside, then renamed).

Every entry's ``result.json`` (its commit marker) lists the size and SHA-256 of each of the
entry's other files. A lookup checks the sizes every time and the hashes once per process per
entry (on download for a remote entry); an entry that fails is damaged — a truncated or
overwritten weights file — and counts as absent: it is moved aside, deleted and recomputed, and
a warning says so.

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
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import lru_cache
from pathlib import Path

import pyarrow.fs as pafs

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = "~/.cache/tamper-search"  # the config's cache_dir unless set
RESULT_FILE = "result.json"
MANIFEST = "files"  # key in result.json: {relative path: {"size": bytes, "sha256": hex}}
FETCH_LOG = "fetches.jsonl"  # in a node's mirror: one line per entry downloaded into it
RECIPES = ".recipes"  # <cache>/.recipes/<key>.json: how to make an entry with files again
_verified: set[str] = set()  # entries whose hashes this process has checked


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def manifest(folder: Path) -> dict[str, dict]:
    """Size and SHA-256 of every file of an entry folder except its commit marker."""
    return {f.relative_to(folder).as_posix(): {"size": f.stat().st_size, "sha256": _sha256(f)}
            for f in sorted(folder.rglob("*")) if f.is_file() and f.name != RESULT_FILE}


def damage(folder: Path, files: dict[str, dict] | None, hashes: bool) -> str | None:
    """What is wrong with a local entry against its manifest (None: nothing; entries written
    before manifests existed are not checked)."""
    for rel, want in (files or {}).items():
        path = folder / rel
        if not path.is_file():
            return f"{rel} is missing"
        size = path.stat().st_size
        if size != want["size"]:
            return f"{rel} has {size} bytes, not {want['size']}"
        if hashes and _sha256(path) != want["sha256"]:
            return f"{rel} does not match its checksum"
    return None


def _discard(location: str | Path, why: str) -> None:
    """Move a damaged entry out of the way (so a recomputed one can take its key) and delete it."""
    print(f"[tamper-search] cache entry {location} is damaged ({why}); recomputing it", file=sys.stderr, flush=True)
    if is_remote(location):
        remove(location)
        return
    aside = Path(location).parent / ".staging" / f"damaged-{Path(location).name}-{uuid.uuid4().hex[:8]}"
    aside.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(location, aside)
    except OSError:
        return  # another process moved it already
    shutil.rmtree(aside, ignore_errors=True)


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
    """The stored result of ``key``, or None if the stage has not run or its entry is damaged
    (then it is discarded: the caller recomputes it)."""
    if is_remote(cache_dir):
        uri = entry(cache_dir, key)
        fs, base = _fs(str(uri))
        path = f"{base}/{RESULT_FILE}"
        if fs.get_file_info(path).type == pafs.FileType.NotFound:
            return None
        with fs.open_input_stream(path) as f:
            result = json.loads(f.read())
        for rel, want in (result.get(MANIFEST) or {}).items():  # sizes here; hashes on download
            info = fs.get_file_info(f"{base}/{rel}")
            if info.type == pafs.FileType.NotFound or info.size != want["size"]:
                _discard(uri, f"{rel} is missing or has the wrong size")
                return None
        return result
    folder = entry(cache_dir, key)
    path = folder / RESULT_FILE
    if not path.exists():
        return None
    try:
        result = json.loads(path.read_text())
    except ValueError:
        _discard(folder, f"{RESULT_FILE} is not valid JSON")
        return None
    first = str(folder) not in _verified
    why = damage(folder, result.get(MANIFEST), hashes=first)
    if why:
        _discard(folder, why)
        return None
    _verified.add(str(folder))
    return result


def exists(cache_dir: str | Path, key: str) -> bool:
    """Entry ``key`` is committed (its marker is there; nothing checked beyond that)."""
    location = entry(cache_dir, key)
    if is_remote(location):
        fs, base = _fs(str(location))
        return fs.get_file_info(f"{base}/{RESULT_FILE}").type != pafs.FileType.NotFound
    return (Path(location) / RESULT_FILE).exists()


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


def commit(cache_dir: str | Path, key: str, staged: Path, result: dict, recipe: dict | None = None) -> str | Path:
    """Write ``result`` into ``staged`` and publish it as ``key``; returns the entry's location.

    ``recipe`` (stage, spec, inputs) is kept beside the entry when it holds files (a model):
    retention may delete such an entry, and a process that needs it again remakes it from
    its recipe (``search.runner.rebuild``).

    Remote: every file is uploaded, ``result.json`` last, then the staged folder becomes this
    node's mirror copy.
    """
    files = manifest(staged)
    (staged / RESULT_FILE).write_text(json.dumps({**result, MANIFEST: files}))
    if recipe is not None and files:
        write_json(entry(cache_dir, f"{RECIPES}/{key}.json"), recipe)
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


def write_json(location: str | Path, obj: dict) -> None:
    """Write a small JSON file, local or remote, atomically (``table_folder.write_atomic``)."""
    from search.table_folder import write_atomic

    fs, path = _fs(str(location)) if is_remote(location) else (pafs.LocalFileSystem(), os.path.abspath(location))
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    data = json.dumps(obj, sort_keys=True).encode()
    write_atomic(fs, path, lambda out: out.write(data))


def read_json(location: str | Path) -> dict | None:
    """A small JSON file, local or remote (None: not there)."""
    try:
        if is_remote(location):
            fs, path = _fs(str(location))
            with fs.open_input_stream(path) as f:
                return json.loads(f.read())
        return json.loads(Path(location).read_text())
    except (FileNotFoundError, OSError, ValueError):
        return None


def recipe(cache_dir: str | Path, key: str) -> dict | None:
    """How entry ``key`` was made (stage, spec, inputs by role: key and location), kept for
    entries with files; None for one made before recipes were kept or without files."""
    return read_json(entry(cache_dir, f"{RECIPES}/{key}.json"))


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


@contextmanager
def _node_lock(mirror: Path, key: str) -> Iterator[None]:
    """Hold ``key``'s lock in this node's mirror: processes and threads of one node that need the
    same entry at once download it once (the others wait, then find it)."""
    import fcntl

    locks = mirror / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / key, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _lock_root(cache_dir: str | Path) -> Path:
    """Where a cache's locks live: the folder itself, or this node's mirror of a remote cache."""
    return mirror_root(str(cache_dir)) if is_remote(cache_dir) else Path(cache_dir)


@contextmanager
def using(cache_dir: str | Path, keys: list[str]) -> Iterator[None]:
    """Hold entries ``keys`` in use (a shared lock each): :func:`release` on this node (or any
    process sharing the cache folder) does not delete an entry while a process uses it."""
    import fcntl

    locks = _lock_root(cache_dir) / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        for key in sorted(set(keys)):
            f = stack.enter_context(open(locks / f"use-{key}", "a"))
            fcntl.flock(f, fcntl.LOCK_SH)
        yield


def release(cache_dir: str | Path, key: str) -> bool:
    """Delete entry ``key`` unless a process holds it in use (:func:`using`); its recipe stays,
    so it can be made again. Returns whether it was deleted (False: in use, or not there).

    Local: the folder is renamed aside first, so no reader ever sees half an entry. Remote: the
    commit marker goes first, so the entry stops existing before its files do."""
    import fcntl

    locks = _lock_root(cache_dir) / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"use-{key}", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        try:
            location = entry(cache_dir, key)
            if is_remote(location):
                fs, base = _fs(str(location))
                if fs.get_file_info(f"{base}/{RESULT_FILE}").type == pafs.FileType.NotFound:
                    return False
                fs.delete_file(f"{base}/{RESULT_FILE}")
                remove(location)
                return True
            aside = Path(cache_dir) / ".staging" / f"released-{key}-{uuid.uuid4().hex[:8]}"
            aside.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(location, aside)
            except FileNotFoundError:
                return False
            _verified.discard(str(location))
            shutil.rmtree(aside, ignore_errors=True)
            return True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextmanager
def computing(cache_dir: str | Path, key: str) -> Iterator[float]:
    """Hold the right to compute ``key``; yields the seconds spent waiting for it. Processes that
    share a local cache folder (two drivers, the trials of one, nodes on one shared file
    system) compute a key once: the others wait here, then find the entry. A remote cache
    (``s3://``) is locked per node only, in the node's mirror: object stores have no lock. A
    holder that dies releases the lock with its process."""
    start = time.perf_counter()
    with _node_lock(_lock_root(cache_dir), f"compute-{key}"):
        yield time.perf_counter() - start


def fetches(mirror: Path) -> list[dict]:
    """The downloads into a mirror so far, one per entry fetched: key, bytes, seconds."""
    log = mirror / FETCH_LOG
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def materialize(location: str | Path) -> str:
    """A local path for a stage input: a local folder or hub id as is; a remote entry
    downloaded once into this node's mirror (whole, then renamed into place; logged in the
    mirror's ``fetches.jsonl``)."""
    location = str(location)
    if not is_remote(location):
        return location
    cache_uri, key = location.rstrip("/").rsplit("/", 1)
    target = mirror_root(cache_uri) / key
    if (target / RESULT_FILE).exists():
        return str(target)
    with _node_lock(target.parent, key):
        if (target / RESULT_FILE).exists():  # another process of this node fetched it meanwhile
            return str(target)
        start = time.perf_counter()
        path = _download(location, cache_uri, key, target)
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        with open(target.parent / FETCH_LOG, "a") as log:
            log.write(json.dumps({"key": key, "bytes": size, "s": round(time.perf_counter() - start, 3)}) + "\n")
    return str(path)


def _download(location: str, cache_uri: str, key: str, target: Path) -> Path:
    """Copy the committed remote entry ``key`` of ``cache_uri`` (at ``location``) into a staging
    folder, check it, rename it to ``target``."""
    fs, base = _fs(location)
    if fs.get_file_info(f"{base}/{RESULT_FILE}").type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"cache entry {location} is not committed")
    staged = staging_dir(cache_uri, key)
    pafs.copy_files(base, str(staged), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    result = json.loads((staged / RESULT_FILE).read_text())
    why = damage(staged, result.get(MANIFEST), hashes=True)
    if why:
        shutil.rmtree(staged, ignore_errors=True)
        _discard(location, why)
        raise FileNotFoundError(f"cache entry {location} was damaged ({why}) and is discarded; run again to recompute it")
    return _move_into_place(staged, target)


if __name__ == "__main__":  # python -m search.cache du|gc: search/retention.py
    from search.retention import main

    sys.exit(main())
