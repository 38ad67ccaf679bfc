"""JUnit XML report: our adapter over the ``junit-xml`` library.

The library builds each ``<testcase>`` element; this adapter owns what it
gets wrong or leaves to the caller, so that the file reads the same in every
consumer (Jenkins, the GitHub test-report actions) and validates against the
common JUnit schema (Jenkins' junit-10.xsd):

* **Identity.** ``(classname, name)`` is unique in the file: classname is
  ``<platform>:<plan>`` and name the result's full name (test + sub-result),
  both spelled by ``text.display_name`` (control characters escaped, never
  deleted, so names that differ only in one stay apart); the classname holds
  no ``.`` (``CLASSNAME_DOT``), which readers take for a package separator. Two results that
  still collide (test ``/a/b`` and sub-result ``b`` of test ``/a``) get
  `` (2)``, `` (3)`` appended in order; a test its plan selects more than
  once gets `` #<serial number>``.
* **Caps.** The ``message`` attribute is one line of at most
  ``MESSAGE_MAX_CHARS``; a failure body holds at most ``NOTE_MAX_CHARS`` of
  the note (head and tail); ``<system-out>`` of a failure holds the head and
  tail of ``output.txt`` (``OUTPUT_HEAD_BYTES`` + ``OUTPUT_TAIL_BYTES``) with
  the path of the full log, and the whole file copies at most
  ``OUTPUT_BUDGET_BYTES`` of output (later failures name their log only).
* **A failure stays a failure.** junit-xml drops a failure whose message and
  output are both empty; every failure and error gets a message.
* **Counters equal the testcases** on every ``<testsuite>`` and on
  ``<testsuites>``; ``time`` of a suite is the sum of its testcases' times
  (whole milliseconds). A sub-result has its own duration or none (see
  ``summary.report_duration``), so a test's time is never counted twice.
* **Flaky tests** (failed or errored on an earlier attempt, passed on the
  final one) are passed testcases with one ``<flakyFailure>`` per such attempt
  (its ``type`` says ``fail`` or the error's reason) and a line in
  ``<system-out>``.
* **Streaming.** Testcases are written one at a time to a temporary file
  renamed into place, so memory does not grow with the output copied, and a
  reader never sees half a report.

Sub-results: by default (``subresults="testcases"``) every result is a
testcase, so JUnit counts equal the Markdown totals. With
``subresults="fold"`` each test is one testcase (its own result) and its
sub-results, before or after it in results.jsonl, are listed in its
``<system-out>``; a test with sub-results only (tmt's custom results without
a ``/`` entry) keeps them as testcases, as tmt reports them.
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from junit_xml import TestCase, TestSuite

from ..model import Result, Status, TestId
from ..rundir import replacing
from .summary import (
    final_results,
    flaky_attempts,
    output_path,
    read_output_excerpt,
    report_duration,
)
from .text import cap_line, cap_middle, display_name, display_text

# A message is a title: consumers show it in one line (annotations, tables).
MESSAGE_MAX_CHARS = 200
# A failure body says what happened; the full note stays in results.jsonl.
NOTE_MAX_CHARS = 16 * 1024
# CI viewers load the whole file and show system-out inline: the head shows
# how the test started, the tail why it ended; the full log is in artifacts/.
OUTPUT_HEAD_BYTES = 8 * 1024
OUTPUT_TAIL_BYTES = 56 * 1024
# A run with thousands of failures must still give a file consumers can load.
OUTPUT_BUDGET_BYTES = 32 * 1024 * 1024
# Back-compatible name of the per-test output cap.
SYSTEM_OUT_MAX_BYTES = OUTPUT_HEAD_BYTES + OUTPUT_TAIL_BYTES

DEFAULT_SUITE_NAME = "atex-ci"
SUBRESULT_MODES = ("testcases", "fold")

# Attributes junit-10.xsd allows on a testcase; junit-xml writes a few more.
_TESTCASE_ATTRIBUTES = ("name", "classname", "time")


@dataclass
class JUnitCounts:
    """What the written file counts: its ``<testsuites>`` attributes, and flaky tests."""

    tests: int = 0
    failures: int = 0
    errors: int = 0
    skipped: int = 0
    flaky: int = 0
    milliseconds: int = 0


@dataclass
class _Case:
    result: Result
    classname: str
    name: str
    ms: int
    earlier: list[Result] = field(default_factory=list)
    folded: list[Result] = field(default_factory=list)


def _milliseconds(seconds: float | None) -> int:
    if seconds is None or seconds != seconds or seconds <= 0:  # None, NaN, negative
        return 0
    return round(seconds * 1000)


def _format_ms(ms: int) -> str:
    return f"{ms // 1000}.{ms % 1000:03d}"


# Readers take a classname for a dotted Java class: GitHub's
# mikepenz/action-junit-report shows only the text after its last ".", Jenkins
# splits package from class there. So a classname holds no "." at all: each
# is written as ONE DOT LEADER (which reads as one), and that character itself
# as an escape (names are spelled with backslashes doubled, so it stays
# injective).
CLASSNAME_DOT = "\u2024"


def classname_of(result: Result) -> str:
    """``<platform>:<plan>`` (the platform alone without a plan), names as every
    report spells them, without a ``.`` (``rhel-9\u20244:/plans``, see ``CLASSNAME_DOT``)."""
    platform = display_name(result.platform)
    text = f"{platform}:{display_name(result.plan)}" if result.plan else platform
    return text.replace(CLASSNAME_DOT, "\\u2024").replace(".", CLASSNAME_DOT)


def testcase_name(result: Result, repeated: bool = False) -> str:
    """The full name, plus `` #<instance>`` for a test its plan selects more than once.

    Only a repeated test gets the suffix, so a testcase keeps its name from
    run to run (consumers track a test's history by name) when tests are
    added or removed around it.
    """
    name = display_name(result.full_name) or "(unnamed)"
    instance = result.serial_number
    return f"{name} #{instance}" if repeated and instance is not None else name


def _message(result: Result) -> str:
    """The failure/error/skip message: one short line, never empty."""
    note = cap_line(
        display_text(cap_middle(result.note or "", 4 * MESSAGE_MAX_CHARS)), MESSAGE_MAX_CHARS
    )
    if note:
        return note
    if result.status is Status.ERROR:
        message = f"error ({result.reason})" if result.reason else "error"
    else:
        message = str(result.status)
    if result.exit_code is not None and result.status is not Status.SKIP:
        message += f", exit code {result.exit_code}"
    return message


def _details(result: Result) -> str:
    """Body of a failure/error element: where and how it happened, and the note."""
    lines = [f"status: {result.status}"]
    if result.reason:
        lines.append(f"reason: {result.reason}")
    if result.exit_code is not None:
        lines.append(f"exit code: {result.exit_code}")
    lines.append(f"platform: {display_name(result.platform)}")
    if result.machine:
        lines.append(f"machine: {display_name(result.machine)}")
    lines.append(f"attempt: {result.attempt}")
    if result.note:
        lines.append("note:")
        lines.append(display_text(cap_middle(result.note, NOTE_MAX_CHARS)))
    return "\n".join(lines)


class _OutputBudget:
    def __init__(self, total: int) -> None:
        self.left = total


def _system_out(case: _Case, rundir_path: Path | None, budget: _OutputBudget) -> str | None:
    result = case.result
    parts: list[str] = []
    if result.status in (Status.WARN, Status.INFO):
        note = f": {_message(result)}" if result.note else ""
        parts.append(f"[atex-ci: status {result.status}, counted as passed{note}]\n")
    for earlier in case.earlier:
        parts.append(
            f"[atex-ci: flaky: attempt {earlier.attempt} ended {earlier.status}"
            f"{f' ({earlier.reason})' if earlier.reason else ''}: {_message(earlier)}; "
            f"attempt {result.attempt} {result.status}]\n"
        )
    for sub in case.folded:
        parts.append(
            f"[atex-ci: sub-result {display_name(sub.name or '')}: {sub.status}"
            f"{f' - {_message(sub)}' if sub.note else ''}]\n"
        )
    if result.status.is_failure and rundir_path is not None:
        if budget.left >= SYSTEM_OUT_MAX_BYTES:
            excerpt = read_output_excerpt(rundir_path, result, OUTPUT_HEAD_BYTES, OUTPUT_TAIL_BYTES)
            if excerpt is not None:
                budget.left -= min(excerpt.size, SYSTEM_OUT_MAX_BYTES)
                parts.append(display_text(excerpt.text))
        else:
            relative = output_path(result)
            if relative is not None:
                parts.append(
                    "[atex-ci: output not copied (the report's output budget is spent); "
                    f"the full log is artifacts/{display_name(relative)}]\n"
                )
    return "".join(parts) or None


def _flaky_element(earlier: Result) -> ET.Element:
    # <flakyFailure> for an error too: readers such as action-junit-report
    # count only that element as a retry; ``type`` and the body say error.
    element = ET.Element(
        "flakyFailure",
        {"message": _message(earlier), "type": str(earlier.reason or earlier.status)},
    )
    element.text = _details(earlier)
    return element


def _case_element(case: _Case, rundir_path: Path | None, budget: _OutputBudget) -> ET.Element:
    result = case.result
    test_case = TestCase(
        name=case.name,
        classname=case.classname,
        elapsed_sec=None,
        stdout=_system_out(case, rundir_path, budget),
    )
    if result.status is Status.FAIL:
        test_case.add_failure_info(
            message=_message(result), output=_details(result), failure_type="fail"
        )
    elif result.status is Status.ERROR:
        test_case.add_error_info(
            message=_message(result),
            output=_details(result),
            error_type=str(result.reason) if result.reason else "error",
        )
    elif result.status is Status.SKIP:
        test_case.add_skipped_info(message=_message(result))
    suite = TestSuite("", [test_case]).build_xml_doc()
    element = suite.find("testcase")
    assert element is not None
    for key in list(element.attrib):
        if key not in _TESTCASE_ATTRIBUTES:
            del element.attrib[key]
    element.set("time", _format_ms(case.ms))
    for earlier in case.earlier:
        element.insert(0, _flaky_element(earlier))
    return element


def _plan_cases(results: Sequence[Result], subresults: str) -> dict[str, list[_Case]]:
    """The testcases to write, grouped by platform, with unique (classname, name)."""
    if subresults not in SUBRESULT_MODES:
        raise ValueError(f"subresults must be one of {SUBRESULT_MODES}, not {subresults!r}")
    final = final_results(results)
    flaky = flaky_attempts(results)
    own: dict[TestId, Result] = {TestId.of_result(r): r for r in final if r.name is None}
    groups: dict[str, list[_Case]] = {}
    parents: dict[TestId, _Case] = {}
    seen: set[tuple[str, str]] = set()
    instances: dict[tuple[str, str], set[object]] = {}
    for result in final:
        base = (classname_of(result), testcase_name(result))
        instances.setdefault(base, set()).add(result.serial_number)
    # Folded sub-results, attached once every test's own case exists: a test
    # reports its sub-results before its own result ends it (the order
    # tmt-report-result gives), or after; both fold.
    folded: dict[TestId, list[Result]] = {}
    for result in final:
        key = TestId.of_result(result)
        parent = own.get(key)
        if subresults == "fold" and result.name is not None and parent is not None:
            folded.setdefault(key, []).append(result)
            continue
        classname = classname_of(result)
        repeated = len(instances[(classname, testcase_name(result))]) > 1
        name = testcase_name(result, repeated)
        unique, n = name, 1
        while (classname, unique) in seen:
            n += 1
            unique = f"{name} ({n})"
        seen.add((classname, unique))
        case = _Case(
            result=result,
            classname=classname,
            name=unique,
            ms=_milliseconds(report_duration(result, parent)),
            earlier=flaky.get(key, []) if result.name is None else [],
        )
        if result.name is None:
            parents[key] = case
        groups.setdefault(result.platform, []).append(case)
    for key, subs in folded.items():
        parents[key].folded.extend(subs)
    return groups


def _counts(cases: Iterable[_Case]) -> JUnitCounts:
    counts = JUnitCounts()
    for case in cases:
        counts.tests += 1
        status = case.result.status
        counts.failures += status is Status.FAIL
        counts.errors += status is Status.ERROR
        counts.skipped += status is Status.SKIP
        counts.flaky += bool(case.earlier)
        counts.milliseconds += case.ms
    return counts


def _open_tag(element: ET.Element) -> str:
    """``<tag attr="...">`` of ``element`` (its children written apart)."""
    text = ET.tostring(element, "unicode", short_empty_elements=False)
    return text[: text.rindex("</")]


def _write(
    out: IO[str],
    results: Sequence[Result],
    rundir_path: Path | None,
    suite_name: str,
    subresults: str,
) -> JUnitCounts:
    groups = _plan_cases(results, subresults)
    grand = _counts(case for cases in groups.values() for case in cases)
    root = ET.Element(
        "testsuites",
        {
            "name": display_name(suite_name),
            "tests": str(grand.tests),
            "failures": str(grand.failures),
            "errors": str(grand.errors),
            "time": _format_ms(grand.milliseconds),
        },
    )
    out.write('<?xml version="1.0" encoding="UTF-8"?>\n')
    out.write(_open_tag(root) + "\n")
    budget = _OutputBudget(OUTPUT_BUDGET_BYTES)
    if not groups:
        out.write(
            f'  <testsuite name="{_attr(display_name(suite_name))}" tests="0" failures="0" '
            'errors="0" skipped="0" time="0.000" />\n'
        )
    for platform, cases in groups.items():
        counts = _counts(cases)
        starts = sorted(c.result.start for c in cases if c.result.start)
        suite = TestSuite(
            name=display_name(f"{suite_name}/{platform}"),
            test_cases=[],
            timestamp=display_name(starts[0]) if starts else None,
            properties={"platform": display_name(platform)},
        ).build_xml_doc()
        for key, value in (
            ("tests", counts.tests),
            ("failures", counts.failures),
            ("errors", counts.errors),
            ("skipped", counts.skipped),
        ):
            suite.set(key, str(value))
        suite.set("time", _format_ms(counts.milliseconds))
        suite.attrib.pop("disabled", None)
        properties = suite.find("properties")
        if properties is not None:
            suite.remove(properties)
        out.write("  " + _open_tag(suite) + "\n")
        if properties is not None:
            ET.indent(properties, space="  ", level=2)
            out.write("    " + ET.tostring(properties, "unicode") + "\n")
        for case in cases:
            element = _case_element(case, rundir_path, budget)
            ET.indent(element, space="  ", level=2)
            out.write("    " + ET.tostring(element, "unicode") + "\n")
        out.write("  </testsuite>\n")
    out.write("</testsuites>\n")
    return grand


def _attr(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")


def junit_xml(
    results: Sequence[Result],
    *,
    rundir_path: Path | None = None,
    suite_name: str = DEFAULT_SUITE_NAME,
    subresults: str = "testcases",
) -> str:
    """The JUnit XML document for ``results`` as text (see ``write_junit``)."""
    out = io.StringIO()
    _write(out, results, rundir_path, suite_name, subresults)
    return out.getvalue()


def write_junit(
    results: Sequence[Result],
    path: Path,
    *,
    rundir_path: Path | None = None,
    suite_name: str = DEFAULT_SUITE_NAME,
    subresults: str = "testcases",
) -> JUnitCounts:
    """Write the JUnit XML report of ``results`` to ``path`` (UTF-8); return its counts.

    Only each test's final attempt is reported (``summary.final_results``).
    With ``rundir_path``, failures and errors get the head and tail of their
    ``output.txt`` in ``<system-out>``. An empty ``results`` gives one empty
    ``<testsuite>`` named ``suite_name`` (tests="0"). The file is written to
    a temporary file beside ``path`` and renamed, so ``path`` is either the
    old report or the whole new one; raises OSError if it cannot be written.
    """
    path = Path(path)
    with replacing(path) as out:
        counts = _write(out, results, rundir_path, suite_name, subresults)
    return counts
