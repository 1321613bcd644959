"""One table as a folder of Parquet files that grows by appending, so that what a finished trial
costs the driver does not grow with the trials before it.

A folder ``<table>.parquet/`` holds files ``L<level>-<first>-<last>.parquet``. Level 0 is one
append (a trial's rows); ``first``..``last`` are the append numbers a file covers. Once
``FAN_IN`` files of a level below ``TOP`` exist, they are merged into one file of the next level
that covers their range. Files at ``TOP`` are never merged again. So each row is rewritten at
most ``TOP`` times, and no merge reads more than ``FAN_IN ** TOP`` appends, however large the
table grows.

A merged file is written, atomically, before its inputs are deleted. After a crash, a file whose
range lies inside a higher level's file is a leftover, and so is a hidden half-written file
(``.<name>.tmp-<id>``) of a writer that was killed: readers skip both and the next append deletes
them (one driver writes a folder at a time).

Every file has the table's one schema, because readers that list the folder (pandas,
``pyarrow.dataset``, DuckDB, polars) take the schema from a single file. A new column, or a type
that widens (null → int64 → float64), rewrites the folder's files once.
"""

from __future__ import annotations

import errno
import re
import uuid
from typing import Callable, Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from search.disk import StorageFull

FAN_IN = 16
TOP = 2
_NAME = re.compile(r"^L(\d+)-(\d+)-(\d+)\.parquet$")
_ASIDE = re.compile(r"^\..+\.tmp-[0-9a-f]{8}$")


def write_atomic(fs: pafs.FileSystem, path: str, write: Callable) -> None:
    """Write ``path`` through ``write(stream)`` aside, then move it into place: a reader sees the
    old file or the new one, never half of one. A full disk raises :class:`StorageFull` naming
    ``path``, and leaves nothing behind. The file aside is hidden (``.<name>.tmp-<id>``) because
    readers that list a folder (pandas, ``pyarrow.dataset``, DuckDB) skip names that start with a
    dot: one that a killed writer leaves behind is never read as a table file."""
    folder, slash, name = path.rpartition("/")
    tmp = f"{folder}{slash}.{name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with fs.open_output_stream(tmp) as out:
            write(out)
    except BaseException as e:
        try:
            if fs.get_file_info(tmp).type != pafs.FileType.NotFound:
                fs.delete_file(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and not isinstance(e, StorageFull) and e.errno == errno.ENOSPC:
            raise StorageFull(path) from e
        raise
    if isinstance(fs, pafs.LocalFileSystem):
        fs.move(tmp, path)  # rename(2)
    else:  # object stores publish an object whole on close; no rename needed
        fs.copy_file(tmp, path)
        fs.delete_file(tmp)


def _listing(fs: pafs.FileSystem, folder: str) -> tuple[list[tuple[int, int, int, str]], list[str]]:
    """(live files as (level, first, last, path) in append order, leftover paths)."""
    infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    found, aside = [], [i.path for i in infos if i.is_file and _ASIDE.match(i.base_name)]
    for info in infos:
        m = _NAME.match(info.base_name)
        if info.is_file and m:
            found.append((int(m[1]), int(m[2]), int(m[3]), info.path))
    inside = lambda a, b: b[0] > a[0] and b[1] <= a[1] and a[2] <= b[2]  # noqa: E731  (a inside b)
    leftovers = [a for a in found if any(inside(a, b) for b in found)]
    live = sorted((a for a in found if a not in leftovers), key=lambda f: f[1])
    return live, [a[3] for a in leftovers] + aside


def paths(fs: pafs.FileSystem, folder: str) -> list[str]:
    """The live files of a table folder, in append order."""
    return [f[3] for f in _listing(fs, folder)[0]]


def schema(fs: pafs.FileSystem, folder: str) -> pa.Schema | None:
    """The table's schema (every live file has it), or None for an empty folder."""
    live = paths(fs, folder)
    return pq.read_schema(live[0], filesystem=fs) if live else None


def read(fs: pafs.FileSystem, folder: str, columns: list[str] | None = None,
         filter: ds.Expression | None = None, dictionary: bool = False) -> pa.Table | None:
    """The table (its live files; ``columns`` and ``filter`` pushed down), or None if empty.
    ``dictionary``: string columns come dictionary-encoded, as Parquet stores them (no string is
    copied out; pandas makes them categorical)."""
    for attempt in range(5):
        live = paths(fs, folder)
        if not live:
            return None
        try:
            schema, fmt = pq.read_schema(live[0], filesystem=fs), ds.ParquetFileFormat()
            if dictionary:
                strings = [f.name for f in schema if pa.types.is_string(f.type)]
                fmt = ds.ParquetFileFormat(read_options={"dictionary_columns": strings})
                schema = pa.schema([f.with_type(pa.dictionary(pa.int32(), pa.string())) if f.name in strings else f
                                    for f in schema])
            dataset = ds.dataset(live, filesystem=fs, format=fmt, schema=schema)
            return dataset.to_table(columns=columns, filter=filter)
        except FileNotFoundError:  # a merge removed a file between the listing and the read
            if attempt == 4:
                raise
    return None


def unify(old: pa.Schema | None, new: pa.Schema, fixed: Iterable[str]) -> pa.Schema:
    """The schema that holds both: ``fixed`` columns first in their order, then the others
    sorted; a null column takes the other's type, integers widen to floats."""
    merged = new if old is None else pa.unify_schemas([old, new], promote_options="permissive")
    fixed = [f for f in fixed if f in merged.names]
    return pa.schema([merged.field(n) for n in [*fixed, *sorted(set(merged.names) - set(fixed))]])


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` in ``schema``: its columns cast and ordered, the missing ones null."""
    cols = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(len(table), f.type)
            for f in schema]
    return pa.Table.from_arrays(cols, schema=schema)


def _write(fs: pafs.FileSystem, path: str, table: pa.Table) -> None:
    write_atomic(fs, path, lambda out: pq.write_table(table, out))


def rewrite(fs: pafs.FileSystem, folder: str, fn: Callable[[pa.Table], pa.Table]) -> None:
    """Replace every live file's rows by ``fn(rows)`` (same names, each file atomically)."""
    for path in paths(fs, folder):
        _write(fs, path, fn(pq.read_table(path, filesystem=fs)))


def append(fs: pafs.FileSystem, folder: str, table: pa.Table, fixed: Iterable[str] = ()) -> None:
    """Add ``table``'s rows as a new file (unifying the schema first where it grows), then merge
    a level that has reached ``FAN_IN`` files."""
    fs.create_dir(folder, recursive=True)
    live, leftovers = _listing(fs, folder)
    for path in leftovers:  # a merge that crashed after writing its output
        fs.delete_file(path)
    old = pq.read_schema(live[0][3], filesystem=fs) if live else None
    target = unify(old, table.schema, fixed)
    if old is not None and not target.equals(old):
        rewrite(fs, folder, lambda t: conform(t, target))
    n = max((f[2] for f in live), default=0) + 1
    path = f"{folder}/L0-{n:09d}-{n:09d}.parquet"
    _write(fs, path, conform(table, target))
    _compact(fs, folder, [*live, (0, n, n, path)])


def _compact(fs: pafs.FileSystem, folder: str, live: list[tuple[int, int, int, str]]) -> None:
    """Merge the oldest ``FAN_IN`` files of every level below ``TOP`` that has that many.
    ``live``: the folder's live files as listed (kept up to date here, not listed again)."""
    for level in range(TOP):
        at = sorted((f for f in live if f[0] == level), key=lambda f: f[1])
        while len(at) >= FAN_IN:
            group, at = at[:FAN_IN], at[FAN_IN:]
            merged = pa.concat_tables(pq.read_table(f[3], filesystem=fs) for f in group)
            out = (level + 1, group[0][1], group[-1][2], f"{folder}/L{level + 1}-{group[0][1]:09d}-{group[-1][2]:09d}.parquet")
            _write(fs, out[3], merged)
            for f in group:
                fs.delete_file(f[3])
            live = [f for f in live if f not in group] + [out]


def remove(fs: pafs.FileSystem, folder: str, column: str, values: set[str]) -> int:
    """Delete the rows whose ``column`` is in ``values`` from every live file that has them;
    return how many went. Reads one column of each file to find them."""
    gone = 0
    keys = pa.array(sorted(values), type=pa.string())
    for path in paths(fs, folder):
        hit = pc.is_in(pq.read_table(path, columns=[column], filesystem=fs).column(column), value_set=keys)
        n = pc.sum(hit).as_py() or 0
        if n:
            t = pq.read_table(path, filesystem=fs)
            _write(fs, path, t.filter(pc.invert(pc.is_in(t.column(column), value_set=keys))))
            gone += n
    return gone
