"""JUnit XML report: strict parsing, counters, illegal characters, time, truncation."""

from __future__ import annotations

import re
import xml.dom.minidom
import xml.etree.ElementTree as ET
from pathlib import Path

from atex_ci.model import Reason, Result, Status
from atex_ci.report.junit import SYSTEM_OUT_MAX_BYTES, clean_xml_text, junit_xml, write_junit

# Anything outside the XML 1.0 Char production.
XML_ILLEGAL = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def write_output(run: Path, platform: str, test: str, data: bytes, attempt: int = 1) -> str:
    """Create RUN/artifacts/<platform>/<test>/<attempt>/output.txt; return its relative path."""
    relative = f"{platform}/{test.strip('/')}/{attempt}/output.txt"
    path = run / "artifacts" / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return relative


def parse(document: str) -> ET.Element:
    """Parse with both strict stdlib parsers; return the ElementTree root."""
    xml.dom.minidom.parseString(document.encode("utf-8"))
    return ET.fromstring(document.encode("utf-8"))


def cases(root: ET.Element) -> list[ET.Element]:
    return root.findall("./testsuite/testcase")


def count_children(elements: list[ET.Element], tag: str) -> int:
    return sum(1 for e in elements if e.find(tag) is not None)


def assert_counters_match(root: ET.Element) -> None:
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite in root.findall("testsuite"):
        suite_cases = suite.findall("testcase")
        expected = {
            "tests": len(suite_cases),
            "failures": count_children(suite_cases, "failure"),
            "errors": count_children(suite_cases, "error"),
            "skipped": count_children(suite_cases, "skipped"),
        }
        for key, value in expected.items():
            assert suite.get(key) == str(value), (suite.get("name"), key)
            totals[key] += value
    for key, value in totals.items():
        assert root.get(key) == str(value), key


def mixed_results() -> list[Result]:
    return [
        Result(test="/tests/a", status=Status.PASS, platform="fedora", plan="/plans/one"),
        Result(test="/tests/b", status=Status.FAIL, platform="fedora", plan="/plans/one"),
        Result(test="/tests/b", name="check", status=Status.FAIL, platform="fedora"),
        Result(test="/tests/c", status=Status.ERROR, platform="fedora", reason=Reason.TIMEOUT),
        Result(test="/tests/d", status=Status.SKIP, platform="centos"),
        Result(test="/tests/e", status=Status.WARN, platform="centos", note="slow disk"),
        Result(test="/tests/f", status=Status.INFO, platform="centos"),
        Result(test="/tests/g", status=Status.ERROR, platform="centos", reason=Reason.INFRA),
    ]


def test_counters_match_testcases_per_suite_and_overall() -> None:
    root = parse(junit_xml(mixed_results()))
    assert root.tag == "testsuites"
    assert [s.get("name") for s in root.findall("testsuite")] == [
        "atex-ci/fedora",
        "atex-ci/centos",
    ]
    assert_counters_match(root)
    assert (root.get("tests"), root.get("failures"), root.get("errors"), root.get("skipped")) == (
        "8",
        "2",
        "2",
        "1",
    )


def test_status_mapping_names_and_classnames() -> None:
    root = parse(junit_xml(mixed_results()))
    by_name = {c.get("name"): c for c in cases(root)}
    assert set(by_name) == {
        "/tests/a",
        "/tests/b",
        "/tests/b/check",
        "/tests/c",
        "/tests/d",
        "/tests/e",
        "/tests/f",
        "/tests/g",
    }
    assert by_name["/tests/a"].get("classname") == "/plans/one"
    assert by_name["/tests/b/check"].get("classname") == "fedora"  # no plan: platform
    assert list(by_name["/tests/a"]) == []
    failure = by_name["/tests/b"].find("failure")
    assert failure is not None and failure.get("type") == "fail"
    timeout = by_name["/tests/c"].find("error")
    assert timeout is not None and timeout.get("type") == "timeout"
    infra = by_name["/tests/g"].find("error")
    assert infra is not None and infra.get("type") == "infra"
    assert by_name["/tests/d"].find("skipped") is not None
    for name in ("/tests/e", "/tests/f"):
        case = by_name[name]
        assert case.find("failure") is None and case.find("error") is None
        assert case.find("skipped") is None
    assert by_name["/tests/e"].get("status") == "warn"
    warn_out = by_name["/tests/e"].findtext("system-out") or ""
    assert "warn" in warn_out and "slow disk" in warn_out


def test_failure_and_error_without_message_stay_failures() -> None:
    results = [
        Result(test="/tests/silent-fail", status=Status.FAIL),
        Result(test="/tests/silent-error", status=Status.ERROR),
        # A note that cleans down to nothing must not make the failure vanish.
        Result(test="/tests/garbage-note", status=Status.FAIL, note="\x00\x1b[0m\x01"),
    ]
    root = parse(junit_xml(results))
    by_name = {c.get("name"): c for c in cases(root)}
    for name in ("/tests/silent-fail", "/tests/garbage-note"):
        failure = by_name[name].find("failure")
        assert failure is not None, name
        assert failure.get("message")
    error = by_name["/tests/silent-error"].find("error")
    assert error is not None and error.get("message")
    assert root.get("failures") == "2"
    assert root.get("errors") == "1"
    assert_counters_match(root)


def test_illegal_characters_from_disk_names_and_notes(tmp_path: Path) -> None:
    data = (
        b"start\x00after-nul\n"
        b"\x1b[1;31mred\x1b[0m plain\n"
        b"bad utf-8: \xff\xfe\xc3(\n"
        b"controls: \x01\x02\x0b\x0c\x7f end\n"
        b"\x1b]0;window title\x07title gone\n"
    )
    rel = write_output(tmp_path, "fedora", "/tests/dirty", data)
    results = [
        Result(
            test="/tests/dirty",
            name="sub\ud800name\ufffe\uffff",
            status=Status.FAIL,
            platform="fedora",
            note="lone \udc80 surrogate and \x1b[32mgreen\x1b[0m and NUL\x00",
            files=[rel],
        ),
        Result(test="/tests/dirty", status=Status.ERROR, platform="fedora", files=[rel]),
    ]
    document = junit_xml(results, rundir_path=tmp_path)
    assert not XML_ILLEGAL.search(document)
    assert "\x1b" not in document and "[31m" not in document and "[0m" not in document
    root = parse(document)
    assert_counters_match(root)

    sub, own = cases(root)
    assert sub.get("name") == "/tests/dirty/sub\ufffdname"
    failure = sub.find("failure")
    assert failure is not None
    assert failure.get("message") == "lone \ufffd surrogate and green and NUL"

    out = own.findtext("system-out") or ""
    assert "startafter-nul" in out
    assert "red plain" in out
    assert "bad utf-8: \ufffd" in out
    assert "controls:  end" in out  # \x7f is legal XML but junit-xml strips it too
    assert "title gone" in out and "window title" not in out


def test_clean_xml_text_keeps_legal_text() -> None:
    text = "tab\tnl\ncr\r ünïcödé 😀 \ud7ff\ue000\ufffd"
    assert clean_xml_text(text) == text
    assert clean_xml_text("a\x00b\x1b[0mc\ud800d\uffff") == "abc\ufffdd"


def test_time_has_millisecond_precision() -> None:
    results = [
        Result(test="/tests/fast", status=Status.PASS, duration=0.0004),
        Result(test="/tests/slow", status=Status.PASS, duration=12.3456),
        Result(test="/tests/quarter", status=Status.PASS, duration=1.25),
        Result(test="/tests/unknown", status=Status.PASS, duration=None),
    ]
    root = parse(junit_xml(results))
    times = {c.get("name"): c.get("time") for c in cases(root)}
    assert times == {
        "/tests/fast": "0.000",
        "/tests/slow": "12.346",
        "/tests/quarter": "1.250",
        "/tests/unknown": "0.000",
    }
    suite = root.find("testsuite")
    assert suite is not None and suite.get("time") == "13.596"
    assert root.get("time") == "13.596"


def test_failure_output_tail_in_system_out(tmp_path: Path) -> None:
    lines = b"".join(b"line %d\n" % i for i in range(100))
    rel = write_output(tmp_path, "default", "/tests/x", lines)
    results = [
        Result(test="/tests/x", status=Status.FAIL, files=[rel]),
        Result(test="/tests/y", status=Status.PASS, files=[rel]),
    ]
    root = parse(junit_xml(results, rundir_path=tmp_path))
    failed, passed = cases(root)
    out = failed.findtext("system-out") or ""
    assert out.startswith("line 0\n") and out.endswith("line 99\n")
    assert "truncated" not in out
    assert passed.find("system-out") is None  # passing output is not copied


def test_huge_output_is_truncated_to_the_tail(tmp_path: Path) -> None:
    body = b"".join(b"line %07d %s\n" % (i, b"x" * 80) for i in range(20_000))
    data = b"FIRST LINE\n" + body + b"THE END\n"
    assert len(data) > 20 * SYSTEM_OUT_MAX_BYTES
    rel = write_output(tmp_path, "default", "/tests/big", data)
    result = Result(test="/tests/big", status=Status.FAIL, files=[rel])
    root = parse(junit_xml([result], rundir_path=tmp_path))
    out = cases(root)[0].findtext("system-out") or ""
    assert out.endswith("THE END\n")
    assert "FIRST LINE" not in out
    assert "truncated" in out.splitlines()[0]
    assert rel in out.splitlines()[0]
    assert len(out.encode("utf-8")) <= SYSTEM_OUT_MAX_BYTES + 500
    # The cut falls on a line boundary: the first log line shown is whole.
    assert re.fullmatch(r"line \d{7} x{80}", out.splitlines()[1])


def test_only_the_final_attempt_is_reported() -> None:
    results = [
        Result(test="/tests/flaky", status=Status.FAIL, attempt=1),
        Result(test="/tests/flaky", name="step", status=Status.FAIL, attempt=1),
        Result(test="/tests/flaky", status=Status.PASS, attempt=2),
    ]
    root = parse(junit_xml(results))
    assert [(c.get("name"), c.get("status")) for c in cases(root)] == [("/tests/flaky", "pass")]
    assert root.get("failures") == "0"


def test_empty_run_gives_a_valid_empty_report() -> None:
    root = parse(junit_xml([], suite_name="nightly"))
    assert root.get("tests") == "0" and root.get("failures") == "0"
    suites = root.findall("testsuite")
    assert len(suites) == 1 and suites[0].get("name") == "nightly"
    assert suites[0].get("tests") == "0"
    assert_counters_match(root)


def test_write_junit_writes_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    results = [Result(test="/tests/ünïcödé/😀", status=Status.FAIL, note="naïve")]
    write_junit(results, path, suite_name="suite")
    root = ET.parse(path).getroot()
    case = root.find("./testsuite/testcase")
    assert case is not None and case.get("name") == "/tests/ünïcödé/😀"
    assert path.read_bytes().startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
