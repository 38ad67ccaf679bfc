"""Exceptions a user can hit, each carrying the exit code the CLI returns.

Exit codes: 0 all passed, 1 test failures, 2 usage or configuration error,
3 infrastructure error. The CLI prints ``atex-ci: <message>`` on one line.
"""

from __future__ import annotations

from typing import Any


class AtexError(Exception):
    """A problem to report to the user as one line, without a traceback."""

    exit_code = 2


class ConfigError(AtexError):
    """Bad input: options, fmf metadata, run directory contents."""

    exit_code = 2


class InfraError(AtexError):
    """Machines or connections failed; the tests themselves may be fine."""

    exit_code = 3


class StorageError(InfraError):
    """The run directory cannot be written (disk full, read-only, removed).

    Nothing a test did: the run stops, keeping what is already recorded.
    """


class Interrupted(AtexError):
    """The command was stopped by a signal; exit code 128 + its number, as shells expect
    (130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, signum: int, message: str = "interrupted") -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


def first_atex_error(
    group: BaseExceptionGroup[Any], kind: type[AtexError] = AtexError
) -> AtexError | None:
    """The first error of ``kind`` (a user error) in a group of errors from
    concurrent tasks, depth first."""
    for exc in group.exceptions:
        if isinstance(exc, kind):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = first_atex_error(exc, kind)
            if found is not None:
                return found
    return None
