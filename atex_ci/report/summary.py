"""What every reporter agrees on: which results count, how many of each, and the output tail.

This module owns, for all reports (JUnit, Markdown, HTML, GitHub):

* final-attempt selection (``final_results``, defined in ``atex_ci.recorder``
  and re-exported here): a rerun replaces its test's earlier attempts, so a
  report never mixes attempts of one test;
* counting (``totals``, ``count_line``, ``pass_rate``, ``time_in_tests``,
  ``wall_clock``), in one unit: a result (a test's own or a sub-result);
* reading the tail of a test's captured ``output.txt`` (``read_output``,
  ``read_output_tail``), decoded leniently and with ANSI escape sequences
  removed, so no reporter ever reads a whole multi-gigabyte log;
* human formatting of durations (``format_duration``, defined in
  ``atex_ci.duration`` and re-exported here).

Nothing here knows about XML or Markdown; each format's escaping lives in its
own module.
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..duration import format_duration  # noqa: F401  (re-exported for the reports)
from ..model import Reason, Result, Status, TestId

# Which results count is the recorder's; reporters import it from here too.
from ..recorder import final_results  # noqa: F401
from ..rundir import ARTIFACTS

OUTPUT_FILE = "output.txt"

# Enough for any reporter's tail without reading a huge log: a Markdown
# summary shows 50 lines, JUnit system-out at most 64 KiB (see junit.py).
DEFAULT_TAIL_BYTES = 64 * 1024
DEFAULT_TAIL_LINES = 50

TOTAL = "total"

# ANSI/ECMA-48 escape sequences as terminals and colouring tools emit them:
# CSI (ESC [ ... final byte), OSC (ESC ] ... BEL or ESC \), other two-byte
# escapes (ESC + one byte in @-_ or a charset designator), the 8-bit CSI
# (U+009B) form, and finally any ESC left over (an unterminated sequence).
_ANSI = re.compile(
    r"""
    \x1b\[ [0-?]* [ -/]* [@-~]          # CSI: colours, cursor movement
    | \x1b\] .*? (?:\x07|\x1b\\)        # OSC: window titles, hyperlinks
    | \x1b [()*+] [0-~]                 # charset designation
    | \x1b [@-Z\\-_]                    # other Fe escapes
    | \x9b [0-?]* [ -/]* [@-~]          # 8-bit CSI
    | \x1b                              # a stray or truncated ESC
    """,
    re.VERBOSE | re.DOTALL,
)


def strip_ansi(text: str) -> str:
    """``text`` without ANSI escape sequences (colours, cursor movement, titles)."""
    return _ANSI.sub("", text)


# -- which results count -------------------------------------------------------------


def own_results(results: Iterable[Result]) -> list[Result]:
    """Each test's own result (``name`` None), in order."""
    return [r for r in results if r.name is None]


def flaky_attempts(results: Iterable[Result]) -> dict[TestId, list[Result]]:
    """Tests that failed on an earlier attempt and did not fail on their final one.

    Maps the test key to the own results of its earlier failed attempts (in
    attempt order). An attempt that ended in an infrastructure error or an
    interruption does not make a test flaky: the test did not get to fail.
    """
    results = list(results)
    latest: dict[TestId, int] = {}
    for result in results:
        key = TestId.of_result(result)
        latest[key] = max(latest.get(key, result.attempt), result.attempt)
    final: dict[TestId, Result] = {}
    failed: dict[TestId, dict[int, Result]] = {}
    for result in results:
        if result.name is not None:
            continue
        key = TestId.of_result(result)
        if result.attempt == latest[key]:
            final[key] = result
        if result.status.is_failure and result.reason not in (Reason.INFRA, Reason.INTERRUPTED):
            failed.setdefault(key, {})[result.attempt] = result
    flaky: dict[TestId, list[Result]] = {}
    for key, attempts in failed.items():
        last = final.get(key)
        if last is None or last.status.is_failure:  # no own result in the final attempt
            continue
        earlier = [attempts[n] for n in sorted(attempts) if n < last.attempt]
        if earlier:
            flaky[key] = earlier
    return flaky


def report_duration(result: Result, own: Result | None) -> float | None:
    """The time a report shows for ``result``; None when it has none of its own.

    A sub-result that carries exactly its test's duration inherited it (the
    executor records one duration per test run): reporting it again would
    count the test's time twice, so it has none.
    """
    duration = result.duration
    if duration is None or duration != duration or duration < 0:
        return None
    if result.name is not None and own is not None and own.duration == duration:
        return None
    return duration


def totals(results: Iterable[Result]) -> dict[str, int]:
    """How many results have each status, plus ``"total"``.

    Every ``Status`` is a key (zero included), in the enum's order, followed
    by ``TOTAL``. ``Status`` is a ``str`` enum, so ``totals(r)[Status.FAIL]``
    and ``totals(r)["fail"]`` are the same entry. Pass final results (see
    ``final_results``) to count each test once.
    """
    counts: dict[str, int] = dict.fromkeys(Status, 0)
    for result in results:
        counts[result.status] += 1
    counts[TOTAL] = sum(counts.values())
    return counts


def _plural(count: int, unit: str) -> str:
    return f"{count} {unit}" if count == 1 else f"{count} {unit}s"


def counted(final: Sequence[Result]) -> str:
    """What every count in every report counts, said once: ``14 results of 12
    tests (2 of them sub-results)``. The unit is a result: a test's own result
    and each of its sub-results count once each (JUnit's default testcases,
    the Markdown and HTML totals, the last line of ``run``); a test with
    sub-results only (tmt's custom results without ``/``) has no own result."""
    tests = len({TestId.of_result(r) for r in final})
    subs = sum(r.name is not None for r in final)
    results, of_tests = _plural(len(final), "result"), _plural(tests, "test")
    return f"{results} of {of_tests} ({subs} of them sub-results)"


def count_line(final: Sequence[Result]) -> str:
    """``14 results of 12 tests (2 of them sub-results): 12 pass, 1 fail, 1 error``, statuses
    in the enum's order, those with none left out."""
    counts = totals(final)
    statuses = ", ".join(f"{counts[s]} {s}" for s in Status if counts[s])
    return f"{counted(final)}: {statuses}" if final else "no results"


def pass_rate(counts: dict[str, int]) -> float | None:
    """Share of results that ran and did not fail or error (0.0 to 1.0).

    Skipped results did not run and are left out of both sides; pass, warn
    and info count as passed. None when nothing ran.
    """
    ran = counts[TOTAL] - counts[Status.SKIP]
    if ran <= 0:
        return None
    return (ran - counts[Status.FAIL] - counts[Status.ERROR]) / ran


def time_in_tests(results: Iterable[Result]) -> float:
    """Seconds spent in tests, summed over tests (machines run in parallel).

    A test's own result (``name`` None) carries its duration; sub-results are
    parts of it and are only summed for a test that has no own result.
    """
    own: dict[tuple[str, str, str, int], float] = {}
    parts: dict[tuple[str, str, str, int], float] = {}
    for result in results:
        key = (result.platform, result.plan, result.test, result.attempt)
        seconds = result.duration or 0.0
        if result.name is None:
            own[key] = own.get(key, 0.0) + seconds
        else:
            parts[key] = parts.get(key, 0.0) + seconds
    return sum(own.values()) + sum(v for k, v in parts.items() if k not in own)


def _parse_time(stamp: str | None) -> datetime.datetime | None:
    if not stamp:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(stamp)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed


def wall_clock(results: Iterable[Result]) -> float | None:
    """Seconds from the earliest ``start`` to the latest ``end``; None if unknown."""
    starts: list[datetime.datetime] = []
    ends: list[datetime.datetime] = []
    for result in results:
        start, end = _parse_time(result.start), _parse_time(result.end)
        if start is not None:
            starts.append(start)
        if end is not None:
            ends.append(end)
    if not starts or not ends:
        return None
    return max(0.0, (max(ends) - min(starts)).total_seconds())


def failures(results: Sequence[Result]) -> list[Result]:
    """The results that make the run unsuccessful (fail and error), in order."""
    return [r for r in results if r.status.is_failure]


# -- output tail ---------------------------------------------------------------------


@dataclass(frozen=True)
class OutputTail:
    """The end of one result's ``output.txt``.

    ``path`` is relative to RUN/artifacts (as in ``Result.files``); ``size``
    is the whole file's size in bytes; ``truncated`` says the text leaves out
    the start of the file (a line or byte limit was hit).
    """

    text: str
    path: str
    size: int
    truncated: bool


def output_path(result: Result) -> str | None:
    """The result's ``output.txt`` as listed in ``files``, or None."""
    for name in result.files:
        if Path(name).name == OUTPUT_FILE:
            return name
    return None


def read_output(
    rundir_path: Path,
    result: Result,
    max_lines: int | None = DEFAULT_TAIL_LINES,
    max_bytes: int = DEFAULT_TAIL_BYTES,
) -> OutputTail | None:
    """Read the last ``max_lines`` lines (at most ``max_bytes`` bytes) of the output.

    Only the last ``max_bytes`` of the file are read, so a huge log costs no
    more than a small one. When that cuts a line, the partial first line is
    dropped. Bytes are decoded as UTF-8 with ``errors="replace"`` and ANSI
    escape sequences are removed; CRLF becomes LF. Returns None when the
    result lists no ``output.txt``, the file is missing or unreadable, or its
    listed path points outside RUN/artifacts.
    """
    found = _output_file(rundir_path, result)
    if found is None:
        return None
    relative, path = found
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            offset = max(0, size - max_bytes)
            f.seek(offset)
            data = f.read(max_bytes)
    except OSError:
        return None

    truncated = offset > 0
    if truncated:
        newline = data.find(b"\n")
        if 0 <= newline < len(data) - 1:
            data = data[newline + 1 :]
    text = _decode(data)
    if max_lines is not None:
        lines = text.splitlines(keepends=True)
        if len(lines) > max_lines:
            text = "".join(lines[-max_lines:]) if max_lines > 0 else ""
            truncated = True
    return OutputTail(text=text, path=relative, size=size, truncated=truncated)


def _output_file(rundir_path: Path, result: Result) -> tuple[str, Path] | None:
    """The result's output as listed (relative to RUN/artifacts) and its path,
    or None when it lists none or the path leads outside RUN/artifacts (links
    resolved)."""
    relative = output_path(result)
    if relative is None:
        return None
    artifacts = (Path(rundir_path) / ARTIFACTS).resolve()
    path = (artifacts / relative).resolve()
    return (relative, path) if path.is_relative_to(artifacts) else None


def _decode(data: bytes) -> str:
    """Output bytes as report text: invalid UTF-8 as U+FFFD, no ANSI sequences, LF."""
    return strip_ansi(data.decode("utf-8", errors="replace")).replace("\r\n", "\n")


def read_output_excerpt(
    rundir_path: Path, result: Result, head_bytes: int, tail_bytes: int
) -> OutputTail | None:
    """The first ``head_bytes`` and last ``tail_bytes`` of the result's output.

    At most ``head_bytes + tail_bytes`` are read, whatever the file's size.
    When the file is longer, the text says how many bytes were left out
    between the two and names the full log. Decoded as in ``read_output``
    (invalid UTF-8 as U+FFFD, ANSI sequences removed); a character cut at
    either edge shows as U+FFFD. None under the same conditions as
    ``read_output``.
    """
    found = _output_file(rundir_path, result)
    if found is None:
        return None
    relative, path = found
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size <= head_bytes + tail_bytes:
                head, tail = f.read(head_bytes + tail_bytes), b""
            else:
                head = f.read(head_bytes)
                f.seek(size - tail_bytes)
                tail = f.read(tail_bytes)
    except OSError:
        return None

    if not tail:
        return OutputTail(text=_decode(head), path=relative, size=size, truncated=False)
    left_out = size - len(head) - len(tail)
    marker = (
        f"\n[atex-ci: {left_out} bytes of output left out here; "
        f"the full log is artifacts/{relative}]\n"
    )
    return OutputTail(
        text=_decode(head) + marker + _decode(tail), path=relative, size=size, truncated=True
    )


def read_output_tail(
    rundir_path: Path,
    result: Result,
    max_lines: int | None = DEFAULT_TAIL_LINES,
    max_bytes: int = DEFAULT_TAIL_BYTES,
) -> str:
    """The text of ``read_output``: the tail of the result's output, "" if there is none."""
    tail = read_output(rundir_path, result, max_lines=max_lines, max_bytes=max_bytes)
    return tail.text if tail is not None else ""


# -- machines ------------------------------------------------------------------------


@dataclass
class MachineUsage:
    """One machine's time in a run, from events.jsonl.

    ``tests`` holds ``(start, end, test, status)`` per test run on it, in
    seconds since ``origin`` (the run's first event); ``begin``/``end`` are
    when the machine was first and last seen. Busy time is the sum of test
    intervals; the rest of ``end - begin`` the machine sat idle. ``note``
    says why it went out of use mid-run (lost, discarded) and what replaced
    it; "" when it did not.
    """

    machine: str
    begin: float
    end: float
    tests: list[tuple[float, float, str, str | None]]
    note: str = ""

    @property
    def busy(self) -> float:
        return sum(end - start for start, end, _test, _status in self.tests)

    @property
    def span(self) -> float:
        return max(0.0, self.end - self.begin)

    @property
    def utilisation(self) -> float | None:
        return self.busy / self.span if self.span > 0 else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


#: Characters of an event's text kept in a machine's note (events are untrusted).
MAX_NOTE_TEXT = 200


def machine_usage(events: Iterable[dict[str, object]]) -> tuple[list[MachineUsage], float | None]:
    """Per-machine busy intervals from the run's events, and the origin time (epoch seconds).

    Events come from a run directory anyone may have written: an event whose
    fields have the wrong type is ignored, a ``test_started`` without a
    ``test_finished`` ends at the machine's last event.
    """
    usage: dict[str, MachineUsage] = {}
    open_tests: dict[str, tuple[float, str]] = {}
    origin: float | None = None
    for event in events:
        stamp = _parse_time(_text(event.get("time")))
        machine = _text(event.get("machine"))
        if stamp is None or machine is None:
            continue
        seconds = stamp.timestamp()
        if origin is None:
            origin = seconds
        moment = seconds - origin
        entry = usage.setdefault(machine, MachineUsage(machine, moment, moment, []))
        entry.begin = min(entry.begin, moment)
        entry.end = max(entry.end, moment)
        kind = event.get("event")
        test = _text(event.get("test")) or "?"
        if kind == "test_started":
            open_tests[machine] = (moment, test)
        elif kind == "test_finished":
            start, started_test = open_tests.pop(machine, (moment, test))
            entry.tests.append((start, moment, started_test, _text(event.get("status"))))
        elif kind == "machine_broken":
            entry.note = "out of use: " + (_text(event.get("note")) or "?")[:MAX_NOTE_TEXT]
        elif kind == "machine_replaced":
            replacement = (_text(event.get("replacement")) or "?")[:MAX_NOTE_TEXT]
            entry.note = (entry.note + "; " if entry.note else "") + "replaced by " + replacement
    for machine, (start, test) in open_tests.items():
        entry = usage[machine]
        entry.tests.append((start, entry.end, test, None))
    return list(usage.values()), origin
