"""JUnit XML report: our adapter over the ``junit-xml`` library.

The library builds the elements; this adapter owns what it gets wrong or
leaves to the caller:

* **XML-illegal characters.** Every string that goes in (names, messages,
  output) is cleaned first: ANSI escape sequences are removed entirely, lone
  surrogates become U+FFFD, and NUL, other C0 controls (except tab, LF, CR)
  and U+FFFE/U+FFFF are dropped. The library alone would write a lone
  surrogate as ``&#55296;``, which no strict parser accepts.
* **A failure stays a failure.** junit-xml silently drops a failure or error
  whose message and output are both empty (and then does not count it), so
  every failure and error gets a non-empty message (the note, or e.g.
  ``"fail (exit code 1)"``).
* **Counters.** ``tests``, ``failures``, ``errors`` and ``skipped`` on each
  ``<testsuite>`` and on ``<testsuites>`` are recomputed from the testcases
  actually written (the library leaves ``skipped`` off ``<testsuites>``).
* **Time** is written in seconds with millisecond precision (``12.346``) on
  every testcase, and summed in whole milliseconds for suites, so the totals
  add up exactly.
* **Huge output.** ``<system-out>`` gets at most the last
  ``SYSTEM_OUT_MAX_BYTES`` of the test's ``output.txt``, behind a note that
  says it was truncated and where the full log is.

Layout: one ``<testsuite>`` per platform (named ``<suite_name>/<platform>``);
each result of the final attempt is one ``<testcase>`` whose ``name`` is the
result's full name (test + "/" + sub-result) and ``classname`` its plan (the
platform when there is no plan). Status mapping: fail -> ``<failure
type="fail">``, error -> ``<error type="<reason>">`` (timeout, infra, test,
interrupted; "error" when unknown), skip -> ``<skipped>``, pass/warn/info ->
passed, with warn/info and the note stated in ``<system-out>``. Every
testcase carries the tmt status in a ``status`` attribute.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from junit_xml import TestCase, TestSuite, to_xml_report_string

from ..model import Result, Status
from .summary import final_results, read_output, strip_ansi

# CI viewers (Jenkins, GitHub test-report actions) load the whole file into
# memory and show system-out inline; 64 KiB is several screens of log per
# failure, keeps a report with a thousand failures well under 100 MB, and the
# full log stays in the artifacts anyway.
SYSTEM_OUT_MAX_BYTES = 64 * 1024

DEFAULT_SUITE_NAME = "atex-ci"

# XML 1.0 Char production: tab, LF, CR, U+0020-U+D7FF, U+E000-U+FFFD,
# U+10000-U+10FFFF. Surrogates are matched apart to replace them visibly.
_SURROGATE = re.compile("[\ud800-\udfff]")
_XML_ILLEGAL = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def clean_xml_text(text: str) -> str:
    """``text`` made safe for XML 1.0: ANSI sequences and illegal characters removed.

    Lone surrogates (from undecodable bytes) become U+FFFD so the reader sees
    that something was there; every other illegal character is dropped.
    """
    text = strip_ansi(text)
    text = _SURROGATE.sub("\ufffd", text)
    return _XML_ILLEGAL.sub("", text)


def _milliseconds(seconds: float | None) -> int:
    if seconds is None or seconds != seconds or seconds <= 0:  # None, NaN, negative
        return 0
    return round(seconds * 1000)


def _format_ms(ms: int) -> str:
    return f"{ms // 1000}.{ms % 1000:03d}"


def _message(result: Result) -> str:
    """The failure/error/skip message; never empty, or junit-xml would drop the element."""
    note = clean_xml_text(result.note or "").strip()
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
    """Body of a failure/error element: where and how it happened."""
    lines = [f"status: {result.status}"]
    if result.reason:
        lines.append(f"reason: {result.reason}")
    if result.exit_code is not None:
        lines.append(f"exit code: {result.exit_code}")
    lines.append(f"platform: {result.platform}")
    if result.machine:
        lines.append(f"machine: {result.machine}")
    lines.append(f"attempt: {result.attempt}")
    return clean_xml_text("\n".join(lines))


def _system_out(result: Result, rundir_path: Path | None) -> str | None:
    parts: list[str] = []
    if result.status in (Status.WARN, Status.INFO):
        note = f": {result.note}" if result.note else ""
        parts.append(f"[atex-ci: status {result.status}, counted as passed{note}]\n")
    if result.status.is_failure and rundir_path is not None:
        tail = read_output(rundir_path, result, max_lines=None, max_bytes=SYSTEM_OUT_MAX_BYTES)
        if tail is not None:
            if tail.truncated:
                parts.append(
                    f"[atex-ci: output truncated; the end of {tail.size} bytes is shown, "
                    f"the full log is artifacts/{tail.path}]\n"
                )
            parts.append(tail.text)
    text = clean_xml_text("".join(parts))
    return text or None


def _test_case(result: Result, rundir_path: Path | None) -> TestCase:
    case = TestCase(
        name=clean_xml_text(result.full_name) or "(unnamed)",
        classname=clean_xml_text(result.plan or result.platform) or None,
        # time is written by _finish with millisecond precision: junit-xml
        # prints six decimals and leaves the attribute out for 0.
        elapsed_sec=None,
        stdout=_system_out(result, rundir_path),
        timestamp=clean_xml_text(result.start) if result.start else None,
        status=str(result.status),
    )
    if result.status is Status.FAIL:
        case.add_failure_info(
            message=_message(result), output=_details(result), failure_type="fail"
        )
    elif result.status is Status.ERROR:
        case.add_error_info(
            message=_message(result),
            output=_details(result),
            error_type=str(result.reason) if result.reason else "error",
        )
    elif result.status is Status.SKIP:
        case.add_skipped_info(message=_message(result))
    return case


def _group_by_platform(results: Sequence[Result]) -> dict[str, list[Result]]:
    groups: dict[str, list[Result]] = {}
    for result in results:
        groups.setdefault(result.platform, []).append(result)
    return groups


def _finish(root: ET.Element, suites: list[list[Result]], suite_name: str) -> None:
    """Write times and counters that match the testcases actually in the tree."""
    grand = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    grand_ms = 0
    for suite_el, suite_results in zip(root.findall("testsuite"), suites, strict=True):
        cases = suite_el.findall("testcase")
        if len(cases) != len(suite_results):
            raise RuntimeError("junit-xml wrote a different number of testcases than given")
        suite_ms = 0
        for case_el, result in zip(cases, suite_results, strict=True):
            ms = _milliseconds(result.duration)
            case_el.set("time", _format_ms(ms))
            suite_ms += ms
        counts = {
            "tests": len(cases),
            "failures": sum(1 for c in cases if c.find("failure") is not None),
            "errors": sum(1 for c in cases if c.find("error") is not None),
            "skipped": sum(1 for c in cases if c.find("skipped") is not None),
        }
        for key, value in counts.items():
            suite_el.set(key, str(value))
            grand[key] += value
        suite_el.set("time", _format_ms(suite_ms))
        grand_ms += suite_ms
    root.set("name", clean_xml_text(suite_name))
    for key, value in grand.items():
        root.set(key, str(value))
    root.set("time", _format_ms(grand_ms))


def junit_xml(
    results: Sequence[Result],
    *,
    rundir_path: Path | None = None,
    suite_name: str = DEFAULT_SUITE_NAME,
) -> str:
    """The JUnit XML document for ``results`` (UTF-8 text with an XML declaration).

    Only each test's final attempt is reported (``summary.final_results``).
    With ``rundir_path``, failures and errors get the tail of their
    ``output.txt`` in ``<system-out>``. An empty ``results`` gives one empty
    ``<testsuite>`` named ``suite_name`` (tests="0").
    """
    final = final_results(results)
    groups = _group_by_platform(final)
    suites: list[TestSuite] = []
    for platform, group in groups.items():
        starts = [r.start for r in group if r.start]
        suites.append(
            TestSuite(
                name=clean_xml_text(f"{suite_name}/{platform}"),
                test_cases=[_test_case(r, rundir_path) for r in group],
                timestamp=clean_xml_text(min(starts)) if starts else None,
                properties={"platform": clean_xml_text(platform)},
            )
        )
    if not suites:
        suites.append(TestSuite(name=clean_xml_text(suite_name), test_cases=[]))

    raw = to_xml_report_string(suites, prettyprint=False)
    # Parsing back is strict: anything illegal that slipped through fails here,
    # in our code, not in the CI system that reads the report.
    root = ET.fromstring(raw)
    _finish(root, list(groups.values()) or [[]], suite_name)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, "unicode") + "\n"


def write_junit(
    results: Sequence[Result],
    path: Path,
    *,
    rundir_path: Path | None = None,
    suite_name: str = DEFAULT_SUITE_NAME,
) -> None:
    """Write ``junit_xml(results, ...)`` to ``path`` as UTF-8."""
    Path(path).write_text(
        junit_xml(results, rundir_path=rundir_path, suite_name=suite_name), encoding="utf-8"
    )
