"""The keys tmt knows in a test and in a plan, the keys atex-ci reads beyond
them, and the warning for one nobody knows.

A misspelt key (``durration: 1m``) is not an error for tmt: it warns that the
key is not in its schema and goes on with the default. atex-ci does the same,
and also names the key the author most likely meant. The lists are tmt 1.78's
documented keys of its L1 (test) and L2 (plan) metadata; a key starting with
``extra-`` is free for the user's own data, as in tmt.

Two facts of a test steer the default scheduler, spelt as upstream ATEX spells
them: ``extra-priority`` (a number; higher runs earlier) and the ``destructive``
tag (the machine is not reused after the test). A near miss of
``extra-priority`` is warned about like any misspelt key, and so is a priority
that is not a number.

Pure: data in, one line of text per unknown key out. ``discover.py`` calls it
for every selected test and plan and logs the lines as warnings.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from numbers import Real
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

#: A test's priority in the queue: a number, 0 when absent; higher runs
#: earlier (upstream ATEX's key, so a tree steers both the same way).
PRIORITY_KEY = "extra-priority"

#: The tag of a test that leaves its machine unfit for any other test (it
#: hardens or breaks the system on purpose); upstream ATEX's tag.
DESTRUCTIVE_TAG = "destructive"

#: Keys of a test that atex-ci reads beyond tmt's (a near miss is warned about).
ATEX_TEST_KEYS = frozenset({PRIORITY_KEY})

#: What a test key that is neither tmt's nor atex-ci's was most likely meant
#: to say (too far from the right spelling for a close match to find it).
TEST_KEY_HINTS = {
    "priority": f"did you mean '{PRIORITY_KEY}'?",
    "destructive": f"a destructive test is tagged: tag: [{DESTRUCTIVE_TAG}]",
}

#: How close an ``extra-`` key must be to one of ATEX_TEST_KEYS to be taken
#: for a typo of it: stricter than SUGGESTION_CUTOFF, because ``extra-`` keys
#: are free for the user's own data ("extra-prio" may well mean something else).
EXTRA_SUGGESTION_CUTOFF = 0.9

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


def _number(value: object) -> float | None:
    """``value`` as a priority, or None if it is not a number (a YAML boolean,
    a string, NaN)."""
    if isinstance(value, bool) or not isinstance(value, Real) or value != value:
        return None
    return float(value)


def priority(data: Mapping[str, Any], key: str = PRIORITY_KEY) -> float:
    """The test's priority under ``key`` (0 when absent or not a number)."""
    return _number(data.get(key, 0)) or 0.0


def is_destructive(data: Mapping[str, Any], tag: str = DESTRUCTIVE_TAG) -> bool:
    """Whether the test carries ``tag`` (fmf's ``tag`` is a string or a list)."""
    tags = data.get("tag")
    return tags == tag if isinstance(tags, str) else isinstance(tags, list) and tag in tags


def _extra_typos(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(key, meant) for ``extra-`` keys that look like a misspelt ATEX_TEST_KEYS key."""
    typos = []
    for key in data:
        if not isinstance(key, str) or not key.startswith(EXTRA_PREFIX) or key in ATEX_TEST_KEYS:
            continue
        if any(key.startswith(known) for known in ATEX_TEST_KEYS):
            continue  # the user's own extension of it (extra-priority-note)
        meant = difflib.get_close_matches(
            key, sorted(ATEX_TEST_KEYS), n=1, cutoff=EXTRA_SUGGESTION_CUTOFF
        )
        if meant:
            typos.append((key, meant[0]))
    return typos


def key_warnings(kind: str, name: str, source: str, data: Mapping[str, Any]) -> list[str]:
    """One line per unknown key of the test or plan ``name`` (``kind``:
    "test" or "plan") defined in the file ``source``, and per test key atex-ci
    reads whose value it cannot use."""
    known = TEST_KEYS | ATEX_TEST_KEYS if kind == "test" else PLAN_KEYS
    where = f"{source}: {kind} {name}"
    lines = []
    for key in unknown_keys(data, known):
        guess = likely_meant(key, known)
        if kind == "test" and key in TEST_KEY_HINTS:
            hint = f"; {TEST_KEY_HINTS[key]}"
        elif guess:
            hint = f"; did you mean '{guess}'?"
        else:
            hint = f" (your own keys start with {EXTRA_PREFIX})"
        lines.append(f"{where}: unknown key '{key}' is ignored{hint}")
    if kind != "test":
        return lines
    for key, meant in _extra_typos(data):
        lines.append(f"{where}: key '{key}' means nothing to atex-ci; did you mean '{meant}'?")
    value = data.get(PRIORITY_KEY)
    if value is not None and _number(value) is None:
        lines.append(
            f"{where}: '{PRIORITY_KEY}' must be a number (higher runs earlier), "
            f"not {value!r}; the test keeps priority 0"
        )
    return lines


__all__ = [
    "ATEX_TEST_KEYS",
    "DESTRUCTIVE_TAG",
    "EXTRA_PREFIX",
    "PLAN_KEYS",
    "PRIORITY_KEY",
    "TEST_KEYS",
    "is_destructive",
    "key_warnings",
    "likely_meant",
    "priority",
    "unknown_keys",
]
