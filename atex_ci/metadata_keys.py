"""The keys tmt knows in a test and in a plan, and the warning for one it does not.

A misspelt key (``durration: 1m``) is not an error for tmt: it warns that the
key is not in its schema and goes on with the default. atex-ci does the same,
and also names the key the author most likely meant. The lists are tmt 1.78's
documented keys of its L1 (test) and L2 (plan) metadata; a key starting with
``extra-`` is free for the user's own data, as in tmt.

Pure: data in, one line of text per unknown key out. ``discover.py`` calls it
for every selected test and plan and logs the lines as warnings.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

#: Keys every fmf object of tmt may have (tests, plans, stories).
_CORE_KEYS = frozenset(
    {
        "summary", "description", "author", "contact", "enabled", "order", "id", "tag",
        "tier", "link", "adjust",
    }
)  # fmt: skip

#: A test's keys (tmt's L1 metadata).
TEST_KEYS = _CORE_KEYS | {
    "test", "path", "framework", "manual", "require", "recommend", "environment",
    "duration", "result", "restart-on-exit-code", "restart-max-count", "restart-with-reboot",
    "check", "component", "tty",
}  # fmt: skip

#: A plan's keys (tmt's L2 metadata: its steps and the rest).
PLAN_KEYS = _CORE_KEYS | {
    "discover", "provision", "prepare", "execute", "report", "finish", "cleanup",
    "environment", "environment-file", "context", "gate", "plan", "ansible",
}  # fmt: skip

#: Keys with this prefix are the user's own (tmt's schemas allow them).
EXTRA_PREFIX = "extra-"

#: How close a known key must be to be suggested (difflib's ratio, 0..1):
#: catches a doubled, dropped or swapped letter, not an unrelated word.
SUGGESTION_CUTOFF = 0.75


def unknown_keys(data: Mapping[str, Any], known: Iterable[str]) -> list[str]:
    """The keys of ``data`` that are neither ``known`` nor ``extra-...``, in order."""
    known = frozenset(known)
    return [
        key
        for key in data
        if isinstance(key, str) and key not in known and not key.startswith(EXTRA_PREFIX)
    ]


def likely_meant(key: str, known: Iterable[str]) -> str | None:
    """The known key ``key`` is most likely a typo of, if any is close enough."""
    matches = difflib.get_close_matches(key, sorted(known), n=1, cutoff=SUGGESTION_CUTOFF)
    return matches[0] if matches else None


def key_warnings(kind: str, name: str, source: str, data: Mapping[str, Any]) -> list[str]:
    """One line per unknown key of the test or plan ``name`` (``kind``:
    "test" or "plan") defined in the file ``source``."""
    known = TEST_KEYS if kind == "test" else PLAN_KEYS
    lines = []
    for key in unknown_keys(data, known):
        guess = likely_meant(key, known)
        hint = (
            f"; did you mean '{guess}'?" if guess else f" (your own keys start with {EXTRA_PREFIX})"
        )
        lines.append(f"{source}: {kind} {name}: unknown key '{key}' is ignored{hint}")
    return lines


__all__ = ["EXTRA_PREFIX", "PLAN_KEYS", "TEST_KEYS", "key_warnings", "likely_meant", "unknown_keys"]
