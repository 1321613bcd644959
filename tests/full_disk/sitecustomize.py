"""Fault injection for tests/test_end_to_end.py's full-disk search: with this folder on
PYTHONPATH (which the driver hands to its Ray workers) and ``TAMPER_SEARCH_TEST_SPACE`` naming a
file, every process's cache commit of an unlearned model fails with ENOSPC until that file exists
(space freed), after writing half of its commit marker: a disk that fills up at a stage commit."""

import builtins
import errno
import os
import sys

SPACE = os.environ.get("TAMPER_SEARCH_TEST_SPACE")

if SPACE:
    _import = builtins.__import__

    def _patch_cache(name, globals=None, locals=None, fromlist=(), level=0):
        module = _import(name, globals, locals, fromlist, level)
        cache = sys.modules.get("search.cache")
        loaded = cache is not None and not getattr(cache.__spec__, "_initializing", False)
        if loaded and not getattr(cache, "_full_disk", False):
            cache._full_disk = True
            commit = cache.commit

            def full(cache_dir, key, staged, result, recipe=None):
                if key.startswith("unlearn-") and not os.path.exists(SPACE):
                    (staged / cache.RESULT_FILE).write_text('{"metri')  # the disk fills up mid-file
                    raise OSError(errno.ENOSPC, "No space left on device", str(staged / cache.RESULT_FILE))
                return commit(cache_dir, key, staged, result, recipe)

            cache.commit = full
        return module

    builtins.__import__ = _patch_cache
