"""A full disk: one error type for every write that finds no space (a table file, a stage's
cache entry), and how to find it inside the errors Ray and Tune wrap it in."""

from __future__ import annotations

import errno

# what an error from Rust or C code (safetensors, Arrow) says when its write hit ENOSPC
_TEXTS = ("No space left on device", "os error 28", "code: 28")


class StorageFull(OSError):
    """A write found no space left on its device (``filename``: what it was writing)."""

    def __init__(self, path: str):
        super().__init__(errno.ENOSPC, "no space left on device", path)

    def __reduce__(self):  # pickled across Ray processes with its path
        return StorageFull, (self.filename,)


def storage_full(error: BaseException | None, path: str | None = None) -> StorageFull | None:
    """The :class:`StorageFull` behind ``error``: itself, or found along its causes (a Ray task
    error's ``cause``, a Tune error raised while handling one), or made from an ENOSPC error
    (named ``path``, else the error's own file name). None: not a full disk."""
    chain: list[BaseException] = []
    while error is not None and all(error is not e for e in chain):
        chain.append(error)
        error = getattr(error, "cause", None) or error.__cause__ or error.__context__
    for e in reversed(chain):  # the error itself, not a wrapper of it (Ray's carries no path)
        if isinstance(e, StorageFull):
            return e if path is None else StorageFull(path)
    for e in reversed(chain):  # the deepest error that says so names the file best
        if isinstance(e, OSError) and e.errno == errno.ENOSPC or any(t in str(e) for t in _TEXTS):
            return StorageFull(path or getattr(e, "filename", None) or "?")
    return None
