"""Importing asyncssh without compiling a probe program: ``load_asyncssh()``.

``import asyncssh`` imports ``asyncssh.crypto.pq``, which looks for liboqs (for
the sntrup761 key exchange, and ML-KEM when cryptography lacks it) with
``ctypes.util.find_library("oqs")`` and then ``("liboqs")``. On Linux that
asks the dynamic loader's cache (``ldconfig -p``) and, when the library is not
there, compiles and links an empty program with gcc to see whether the linker
finds it: about 50 ms of CPU and five processes for every command that uses
SSH, on every machine without liboqs. asyncssh has no setting to skip it, and
the lookup happens at import of its package, whatever submodule one wants.

While asyncssh is imported, ``load_asyncssh`` answers those two names from the
dynamic loader's cache, and from LD_LIBRARY_PATH when it is set (with ld, as
ctypes does), skipping the gcc probe: a library that the dynamic loader cannot
see is one that nothing on the machine was configured to load. (Its third
lookup, libnettle for the UMAC MACs, is left to ctypes: it is usually in the
loader's cache, so no probe runs for it.) Every other name, and every lookup
after the import, goes to ctypes as before. If ctypes lacks the helpers this
relies on (they are private to it), the import runs unchanged.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
import threading
from collections.abc import Callable
from types import ModuleType

#: The names asyncssh.crypto.pq looks up.
LIBOQS_NAMES = frozenset({"oqs", "liboqs"})

_lock = threading.Lock()


def _loader_lookup(original: Callable[[str], str | None]) -> Callable[[str], str | None] | None:
    """find_library for liboqs without the gcc probe, or None if ctypes has no such parts."""
    from_cache = getattr(ctypes.util, "_findSoname_ldconfig", None)
    from_path = getattr(ctypes.util, "_findLib_ld", None)
    soname = getattr(ctypes.util, "_get_soname", None)
    if not (sys.platform.startswith("linux") and from_cache and from_path and soname):
        return None

    def find_library(name: str) -> str | None:
        if name not in LIBOQS_NAMES:
            return original(name)
        found: str | None = from_cache(name)
        if found is None and os.environ.get("LD_LIBRARY_PATH"):
            found = soname(from_path(name))
        return found

    return find_library


def load_asyncssh() -> ModuleType:
    """The asyncssh module, imported (once) without the compiler probe."""
    module = sys.modules.get("asyncssh")
    if module is not None:
        return module
    with _lock:
        original = ctypes.util.find_library
        lookup = _loader_lookup(original)
        if lookup is not None:
            ctypes.util.find_library = lookup  # type: ignore[assignment]
        try:
            import asyncssh
        finally:
            ctypes.util.find_library = original
    return asyncssh


__all__ = ["LIBOQS_NAMES", "load_asyncssh"]
