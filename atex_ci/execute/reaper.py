"""Finding and ending every process a run started on a machine.

Each process atex-ci starts on a machine carries ``ATEX_CI_OWNER`` in its
environment (see ``remote/reap.sh``): ``"<work dir>#plan;"`` for prepare and
finish scripts, ``"<work dir>#<serial>-<attempt>;"`` for a test. The variable
is inherited through fork, exec, new process groups and ``setsid``, so the
processes are found again from the machine itself, by any later command:
nothing depends on the memory of a controller that may have been killed.

This module only builds the values and the bash commands; callers run them
with their transport (or locally, for local slots).
"""

from __future__ import annotations

import shlex
from functools import cache
from pathlib import Path

#: The environment variable that marks a run's processes on a machine.
OWNER_VARIABLE = "ATEX_CI_OWNER"

_REAP_SH = Path(__file__).parent / "remote" / "reap.sh"


def run_owner(work_dir: str) -> str:
    """The prefix shared by every process of one run on one machine."""
    return f"{work_dir.rstrip('/')}#"


def test_prefix(work_dir: str, serial: int) -> str:
    """What every attempt's ``test_owner`` of one test starts with."""
    return f"{run_owner(work_dir)}{serial}-"


def test_owner(work_dir: str, serial: int, attempt: int) -> str:
    """The value for one test's processes (a run_owner prefix, ended by ``;``)."""
    return f"{test_prefix(work_dir, serial)}{attempt};"


def phase_owner(work_dir: str) -> str:
    """The value for a plan's prepare and finish scripts."""
    return f"{run_owner(work_dir)}plan;"


@cache
def _reap_function() -> str:
    return _REAP_SH.read_text()


def reap_command(prefix: str) -> str:
    """A bash command that SIGKILLs every process whose owner starts with ``prefix``.

    Self-contained (the function travels with it), so it works after the work
    directory is gone; its status is 0, and more commands may follow it.
    """
    return f"{_reap_function()}\natex_reap {shlex.quote(prefix)}"


__all__ = [
    "OWNER_VARIABLE",
    "phase_owner",
    "reap_command",
    "run_owner",
    "test_owner",
    "test_prefix",
]
