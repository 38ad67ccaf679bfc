"""Secrets atex-ci takes from its own environment, and keeping them from the tests it runs.

A test on a local slot runs on the controller's host, as the controller's
user, as its descendant. Leaving a token in the controller's environment
would hand it over three ways: children inherit the environment (git,
ansible-playbook, anything started without an explicit one);
``/proc/<controller>/environ`` shows the block the process was started with,
which ``os.environ`` changes never touch (unsetenv only drops a pointer); and
a process of the same user may read the controller's memory through
``/proc/<controller>/mem`` or ptrace.

``take`` therefore, for each secret, removes it from ``os.environ`` and the C
environment (nothing started later inherits it), overwrites its entry in
that original block with NUL bytes (``/proc/<pid>/environ`` no longer shows
it) and marks the process not dumpable (``prctl(PR_SET_DUMPABLE, 0)``: its
``/proc`` files belong to root and only a process with CAP_SYS_PTRACE may
read its memory or environment). What remains is documented in
docs/test-limits.md: a test running as root can still read the controller's
memory, and the processes that started atex-ci keep their own copy.

The CLI takes every secret before any command runs, so no test can start
first; the names live here, not with the parts that use them, for that
reason. Parts that need a secret ask ``get``.
"""

from __future__ import annotations

import os
import sys

#: The Testing Farm API token (read by provision/testingfarm.py).
TESTING_FARM_API_TOKEN = "TESTING_FARM_API_TOKEN"

#: Every variable the controller reads a secret from, taken at start-up.
#: ``--secret NAME`` adds NAME when the command line is read.
SECRETS = (TESTING_FARM_API_TOKEN,)

# prctl(2) option that sets the "dumpable" attribute.
_PR_SET_DUMPABLE = 4

_taken: dict[str, str] = {}


def take(names: tuple[str, ...] | list[str] = SECRETS) -> None:
    """Move each of ``names`` that is set out of this process's environment.

    Safe to call more than once; a name set again in ``os.environ`` since
    (the Python API) is taken again.
    """
    found = False
    for name in names:
        value = os.environ.pop(name, None)  # os.environ.pop also unsets it in C
        if value is None:
            continue
        _taken[name] = value
        found = True
        _scrub_initial_block(name, value)
    if found:
        _not_dumpable()


def get(name: str) -> str | None:
    """The secret ``name``: from the environment if it is set there (the
    Python API), else the value ``take`` moved out of it, else None."""
    return os.environ.get(name, _taken.get(name))


def _scrub_initial_block(name: str, value: str) -> None:
    """Overwrite ``name=value`` with NUL bytes in the environment block the
    kernel shows as /proc/self/environ (the memory between env_start and
    env_end of /proc/self/stat, on this process's own stack)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        # Fields after the command name (which may hold spaces): env_start
        # and env_end are fields 50 and 51 of proc(5), here at 47 and 48.
        fields = stat[stat.rindex(b")") + 2 :].split()
        start, end = int(fields[47]), int(fields[48])
    except (OSError, ValueError, IndexError):
        return
    if not 0 < start < end:
        return
    import ctypes

    block = ctypes.string_at(start, end - start)
    entry = name.encode() + b"=" + os.fsencode(value)
    position = block.find(entry)
    while position != -1:
        after = position + len(entry)
        whole = (position == 0 or block[position - 1] == 0) and (
            after == len(block) or block[after] == 0
        )
        if whole:  # not the tail of another variable's value
            ctypes.memset(start + position, 0, len(entry))
        position = block.find(entry, after)


def _not_dumpable() -> None:
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, AttributeError):
        return


__all__ = ["SECRETS", "TESTING_FARM_API_TOKEN", "get", "take"]
