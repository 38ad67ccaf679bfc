"""Judging a run's failures against a baseline and a known-failures list, and the verdict.

This module owns the classification of each failed test (``new``, ``still
failing``, ``known``), what is fixed (failed in the baseline and passes now; a
known-failures entry whose tests pass), which entries have expired, the
known-failures file format and its bounded parsing, the exit code that
``report --fail-on`` derives from the classification, and ``report``'s gating
options (``options()``, declared here for cli.py; ``report_settings``).

It is a pure pass over final results: the reporters show the classification,
JUnit keeps every failure a failure (the classification is added beside it).
A test is judged as a whole, by its ``model.TestId`` with every instance
taken together (``TestId.any_instance``): it fails when any of its final
results (its own, a sub-result, any instance's) is ``fail`` or ``error``.
"""

from __future__ import annotations

import datetime
import enum
import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import untrusted_yaml
from .errors import ConfigError
from .model import Result, TestId
from .recorder import final_results

if TYPE_CHECKING:
    import click

# A waiver list is written by people: a few hundred entries at most. The caps
# keep a generated or hostile file from costing more than a moment.
KNOWN_FAILURES_MAX_BYTES = 1024 * 1024
KNOWN_FAILURES_MAX_ENTRIES = 10_000
# Each text field is shown in reports; longer is not a reason, it is a log.
FIELD_MAX_CHARS = 1000

ENTRY_KEYS = ("name", "platform", "reason", "link", "expires")

# A test is judged whole: sub-results and instances of it count as one
# (a TestId whose instance is None).
GateKey = TestId


class Classification(enum.StrEnum):
    """What a failed test is, judged against the baseline and the known failures."""

    NEW = "new"
    STILL_FAILING = "still failing"
    KNOWN = "known"


class FailOn(enum.StrEnum):
    """Which failures make ``report`` exit 1."""

    ANY = "any"
    NEW = "new"


@dataclass(frozen=True)
class KnownFailure:
    """One entry of a known-failures file: a name pattern, optionally a platform pattern."""

    name: str
    reason: str
    platform: str | None = None
    link: str | None = None
    expires: datetime.date | None = None

    def matches(self, platform: str, test: str) -> bool:
        """Whether this entry covers ``test`` on ``platform`` (shell-style patterns)."""
        if self.platform is not None and not fnmatch.fnmatchcase(platform, self.platform):
            return False
        return fnmatch.fnmatchcase(test, self.name)

    def expired(self, today: datetime.date) -> bool:
        """An entry holds through its expiry date and no longer after it."""
        return self.expires is not None and self.expires < today

    def describe(self) -> str:
        """One line naming the entry: pattern, platform, reason, link, expiry."""
        where = f" on {self.platform}" if self.platform else ""
        link = f" ({self.link})" if self.link else ""
        until = f", expires {self.expires.isoformat()}" if self.expires else ""
        return f"{self.name}{where}: {self.reason}{link}{until}"


@dataclass
class Judgement:
    """The classification of one run's failures and what it says to remove."""

    # Failed tests by key, with their classification, in result order.
    failed: dict[GateKey, Classification] = field(default_factory=dict)
    # The entry each known failure matched.
    known_by: dict[GateKey, KnownFailure] = field(default_factory=dict)
    # Failed in the baseline, no longer failing here.
    fixed: list[GateKey] = field(default_factory=list)
    # Entries whose tests all passed here: "fixed: remove the entry".
    entries_fixed: list[tuple[KnownFailure, list[GateKey]]] = field(default_factory=list)
    # Entries past their expiry date: they matched nothing.
    expired: list[KnownFailure] = field(default_factory=list)
    has_baseline: bool = False

    def classification(self, result: Result) -> Classification | None:
        """The classification of the test ``result`` belongs to; None if it did not fail."""
        return self.failed.get(gate_key(result))

    def with_class(self, wanted: Classification) -> list[GateKey]:
        return [key for key, value in self.failed.items() if value is wanted]

    def counts(self) -> dict[str, str]:
        """Tests in each list, as GitHub step outputs name them."""
        return {
            "new-failures": str(len(self.with_class(Classification.NEW))),
            "still-failing": str(len(self.with_class(Classification.STILL_FAILING))),
            "known-failures": str(len(self.with_class(Classification.KNOWN))),
            "fixed": str(len(self.fixed) + len(self.entries_fixed)),
        }

    def exit_code(self, fail_on: FailOn) -> int:
        """1 when a failure counts under ``fail_on``, else 0."""
        if fail_on is FailOn.ANY:
            return 1 if self.failed else 0
        return 1 if self.with_class(Classification.NEW) else 0


def gate_key(result: Result) -> GateKey:
    """The test ``result`` belongs to, as gating compares runs (instances not told apart)."""
    return TestId.of_result(result).any_instance


def failing_tests(final: Iterable[Result]) -> dict[GateKey, bool]:
    """Every test of ``final`` (final results) mapped to whether it failed, in order."""
    tests: dict[GateKey, bool] = {}
    for result in final:
        key = gate_key(result)
        tests[key] = tests.get(key, False) or result.status.is_failure
    return tests


def judge(
    results: Sequence[Result],
    *,
    baseline: Sequence[Result] | None = None,
    known: Sequence[KnownFailure] = (),
    today: datetime.date | None = None,
) -> Judgement:
    """Classify the failed tests of ``results`` (every attempt; final ones are used).

    A failure an active ``known`` entry matches is known; else one that also
    failed in ``baseline`` is still failing; else it is new. Without a
    baseline every failure no entry matches is new.
    """
    today = today or datetime.date.today()
    judgement = Judgement(has_baseline=baseline is not None)
    active = [entry for entry in known if not entry.expired(today)]
    judgement.expired = [entry for entry in known if entry.expired(today)]
    tests = failing_tests(final_results(results))
    before = failing_tests(final_results(baseline)) if baseline is not None else {}
    for key, failed in tests.items():
        entry = next((e for e in active if e.matches(key.platform, key.test)), None)
        if failed and entry is not None:
            judgement.failed[key] = Classification.KNOWN
            judgement.known_by[key] = entry
        elif failed:
            still = before.get(key, False)
            judgement.failed[key] = Classification.STILL_FAILING if still else Classification.NEW
        elif before.get(key, False):
            judgement.fixed.append(key)
    for entry in active:
        covered = [key for key in tests if entry.matches(key.platform, key.test)]
        if covered and not any(tests[key] for key in covered):
            judgement.entries_fixed.append((entry, covered))
    return judgement


# -- the inputs --------------------------------------------------------------------------


def load_baseline(path: Path) -> list[Result]:
    """Every result of the run directory (or collected one) ``path``; ConfigError if none."""
    from .rundir import RunDir

    results, _problems = RunDir.open(path).read_results_checked()
    return results


def _text(entry: dict[str, object], key: str, where: str, required: bool = False) -> str | None:
    value = entry.get(key)
    if value is None:
        if required:
            raise ConfigError(f"{where}: '{key}' is required")
        return None
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ConfigError(f"{where}: '{key}' must be text")
    text = str(value).strip()
    if not text and required:
        raise ConfigError(f"{where}: '{key}' is empty")
    if len(text) > FIELD_MAX_CHARS:
        raise ConfigError(f"{where}: '{key}' is longer than {FIELD_MAX_CHARS} characters")
    return text or None


def _entry(raw: object, where: str) -> KnownFailure:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: an entry must be a mapping with 'name' and 'reason'")
    unknown = sorted(set(raw) - set(ENTRY_KEYS))
    if unknown:
        allowed = ", ".join(ENTRY_KEYS)
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (allowed: {allowed})")
    name = _text(raw, "name", where, required=True)
    reason = _text(raw, "reason", where, required=True)
    assert name is not None and reason is not None
    expires_text = _text(raw, "expires", where)
    expires = None
    if expires_text is not None:
        try:
            expires = datetime.date.fromisoformat(expires_text[:10])
        except ValueError:
            raise ConfigError(f"{where}: 'expires' must be a date, YYYY-MM-DD") from None
    return KnownFailure(
        name=name,
        reason=reason,
        platform=_text(raw, "platform", where),
        link=_text(raw, "link", where),
        expires=expires,
    )


def parse_known_failures(document: object, source: str) -> list[KnownFailure]:
    """The entries of a loaded known-failures document; ConfigError naming the first problem.

    The document is a list of entries, or a mapping whose ``known-failures``
    key holds that list.
    """
    if isinstance(document, dict) and set(document) == {"known-failures"}:
        document = document["known-failures"]
    if document is None:
        return []
    if not isinstance(document, list):
        raise ConfigError(f"{source}: expected a list of entries (name, reason, ...)")
    if len(document) > KNOWN_FAILURES_MAX_ENTRIES:
        raise ConfigError(f"{source}: more than {KNOWN_FAILURES_MAX_ENTRIES} entries")
    return [_entry(raw, f"{source}: entry {n}") for n, raw in enumerate(document, 1)]


def load_known_failures(path: Path) -> list[KnownFailure]:
    """Read the known-failures file ``path`` within limits; ConfigError (one line) if bad."""
    try:
        document = untrusted_yaml.read_file(path, max_bytes=KNOWN_FAILURES_MAX_BYTES)
    except OSError as exc:
        raise ConfigError(f"cannot read known failures {path}: {exc.strerror or exc}") from None
    except untrusted_yaml.UntrustedYAMLError as exc:
        raise ConfigError(f"known failures {path}: {exc}") from None
    return parse_known_failures(document, f"known failures {path}")


# -- what the reports list ----------------------------------------------------------------

# Rank of a failure in the reports: new first, known last.
ORDER = {Classification.NEW: 0, Classification.STILL_FAILING: 1, Classification.KNOWN: 2}


def failure_rank(judgement: Judgement | None, result: Result) -> int:
    """Where a failed test goes in a report's list of failures (new ones first)."""
    if judgement is None:
        return 0
    classification = judgement.classification(result)
    return ORDER[classification] if classification is not None else len(ORDER)


def _where(key: GateKey) -> str:
    from .report.text import display_name

    return f"{display_name(key.test)} · {display_name(key.platform)}"


def _entry_line(entry: KnownFailure) -> str:
    from .report.text import display_name, display_text

    return display_text(f"{display_name(entry.name)}{entry.describe()[len(entry.name) :]}")


def report_lists(judgement: Judgement) -> list[tuple[str, list[str]]]:
    """The lists every report shows, as (heading, lines of plain display text).

    New, known and fixed are always listed (empty ones say so); still
    failing, entries to remove and expired entries when there are any.
    """
    known = [
        f"{_where(key)}: {_entry_line(judgement.known_by[key])}"
        for key in judgement.with_class(Classification.KNOWN)
    ]
    lists = [("New failures", [_where(k) for k in judgement.with_class(Classification.NEW)])]
    still = [_where(k) for k in judgement.with_class(Classification.STILL_FAILING)]
    if still:
        lists.append(("Still failing (failed in the baseline too)", still))
    lists.append(("Known failures", known))
    fixed = [f"{_where(k)}: fixed since the baseline" for k in judgement.fixed]
    fixed += [
        f"{_entry_line(entry)}: fixed: remove the entry ({len(keys)} test(s) pass)"
        for entry, keys in judgement.entries_fixed
    ]
    lists.append(("Fixed", fixed))
    if judgement.expired:
        expired = [
            f"{_entry_line(entry)}: expired, no longer matches" for entry in judgement.expired
        ]
        lists.append(("Expired known-failure entries", expired))
    return lists


def options() -> list[click.Option]:
    """``report``'s gating options (--baseline, --known-failures, --fail-on), as
    click parameters in the order ``report --help`` shows them."""
    import click

    return [
        click.Option(
            ["--baseline"],
            type=click.Path(file_okay=False, exists=True, path_type=Path),
            help="An earlier run directory (or a collected one): each failure is new or still "
            "failing, and what failed there and passes here is fixed.",
        ),
        click.Option(
            ["--known-failures"],
            type=click.Path(dir_okay=False, exists=True, path_type=Path),
            help="YAML list of known failures (name, platform, reason, link, expires): "
            "matching failures are known.",
        ),
        click.Option(
            ["--fail-on"],
            type=click.Choice([FailOn.NEW.value, FailOn.ANY.value]),
            help="Exit 1 when a new failure (not known, not failing in --baseline) or any "
            "failure is reported (default: new with --baseline or --known-failures, else "
            "exit 0).",
        ),
    ]


def report_settings(values: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``report_run`` that the values of ``options()``
    (as click passes them) ask for."""
    fail_on: str | None = values["fail_on"]
    return {
        "baseline": values["baseline"],
        "known_failures": values["known_failures"],
        "fail_on": FailOn(fail_on) if fail_on else None,
    }
