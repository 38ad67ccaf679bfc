"""JUnit XML report: schema-valid, consumer counts, unique identities, escaping, caps."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from atex_ci.model import Reason, Result, Status, TestId
from atex_ci.report import junit
from atex_ci.report.junit import SYSTEM_OUT_MAX_BYTES, junit_xml, write_junit
from atex_ci.report.summary import final_results
from atex_ci.rundir import RunDir

from .reportutil import (
    cases,
    consumer_counts,
    hostile_two_platform_run,
    mikepenz_cases,
    validate,
    write_output,
)

# Anything outside the XML 1.0 Char production.
XML_ILLEGAL = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def count_children(elements: list[ET.Element], tag: str) -> int:
    return sum(1 for e in elements if e.find(tag) is not None)


def assert_counters_match(root: ET.Element) -> None:
    totals = {"tests": 0, "failures": 0, "errors": 0}
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
            if key in totals:
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


def test_counters_match_testcases_and_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    counts = write_junit(mixed_results(), path)
    root = validate(path.read_bytes())
    assert [s.get("name") for s in root.findall("testsuite")] == [
        "atex-ci/fedora",
        "atex-ci/centos",
    ]
    assert_counters_match(root)
    expected = {"tests": 8, "failures": 2, "errors": 2, "skipped": 1}
    assert consumer_counts(path) == expected
    assert (counts.tests, counts.failures, counts.errors, counts.skipped) == (8, 2, 2, 1)


def test_status_mapping_names_and_classnames() -> None:
    root = validate(junit_xml(mixed_results()))
    by_name = {c.get("name"): c for c in cases(root)}
    assert by_name["/tests/a"].get("classname") == "fedora:/plans/one"
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
    warn_out = by_name["/tests/e"].findtext("system-out") or ""
    assert "status warn" in warn_out and "slow disk" in warn_out


def test_two_platforms_sub_results_flaky_and_hostile_names(tmp_path: Path) -> None:
    """The issue's "done when": consumer counts equal the results."""
    results = hostile_two_platform_run()
    path = tmp_path / "junit.xml"
    counts = write_junit(results, path)
    root = validate(path.read_bytes())
    final = final_results(results)
    expected = {
        "tests": len(final),
        "failures": sum(r.status is Status.FAIL for r in final),
        "errors": sum(r.status is Status.ERROR for r in final),
        "skipped": sum(r.status is Status.SKIP for r in final),
    }
    assert consumer_counts(path) == expected
    assert counts.flaky == 2
    keys = [(c.get("classname"), c.get("name")) for c in cases(root)]
    assert len(set(keys)) == len(keys) == len(final)
    # The same test on two platforms: two testcases, told apart by classname.
    assert ("fedora-41:/plans/ci", "/tests/x") in keys
    assert ("centos-10:/plans/ci", "/tests/x") in keys
    # Escaped, never deleted: the ESC name and the real one stay apart.
    names = {name for _, name in keys}
    assert "/esc\\x1b[31mred" in names and "/escred" in names
    assert "/tests/a: b, 100% sure" in names
    # Sub-results carry the parent's duration: they get none, so time adds up once.
    by_key = {(c.get("classname"), c.get("name")): c for c in cases(root)}
    assert by_key[("fedora-41:/plans/ci", "/tests/x/first")].get("time") == "0.000"
    assert by_key[("fedora-41:/plans/ci", "/tests/x")].get("time") == "1.500"
    fedora = root.find("testsuite")
    assert fedora is not None and fedora.get("time") == "303.600"
    # Flaky: passed, with the failed attempt visible.
    flaky = by_key[("fedora-41:/plans/ci", "/tests/flaky")]
    assert flaky.find("failure") is None
    element = flaky.find("flakyFailure")
    assert element is not None and element.get("message") == "boom"
    assert "flaky: attempt 1 ended fail" in (flaky.findtext("system-out") or "")


def test_names_that_differ_only_in_control_characters_stay_apart() -> None:
    results = [
        Result(test="/t/a\x00b", status=Status.PASS),
        Result(test="/t/a\x7fb", status=Status.PASS),
        Result(test="/t/ab", status=Status.FAIL),
        Result(test="/t/a\\x00b", status=Status.PASS),  # a literal backslash-x-0-0
        Result(test="/t/a\nb", status=Status.PASS),
        Result(test="/t/a\ud800b", status=Status.PASS),
        Result(test="/t/a\u202eb", status=Status.PASS),  # right-to-left override
        Result(test="/t/a\u200bb", status=Status.PASS),  # zero-width space
    ]
    root = validate(junit_xml(results))
    names = [c.get("name") for c in cases(root)]
    assert names == [
        "/t/a\\x00b",
        "/t/a\\x7fb",
        "/t/ab",
        "/t/a\\\\x00b",
        "/t/a\\nb",
        "/t/a\\ud800b",
        "/t/a\\u202eb",
        "/t/a\\u200bb",
    ]


def test_a_test_and_a_sub_result_with_the_same_full_name_are_numbered() -> None:
    results = [
        Result(test="/a/b", status=Status.PASS, plan="/p"),
        Result(test="/a", status=Status.PASS, plan="/p"),
        Result(test="/a", name="b", status=Status.FAIL, plan="/p"),
    ]
    root = validate(junit_xml(results))
    assert [c.get("name") for c in cases(root)] == ["/a/b", "/a", "/a/b (2)"]


def own_result_first(results: list[Result]) -> list[Result]:
    """The same results with each test's own result just before its sub-results."""

    def key(r: Result) -> tuple[object, ...]:
        return (*TestId.of_result(r), r.attempt)

    subs: dict[tuple[object, ...], list[Result]] = {}
    for result in results:
        if result.name is not None:
            subs.setdefault(key(result), []).append(result)
    placed: list[Result] = []
    for result in results:
        if result.name is None:
            placed += [result, *subs.pop(key(result), [])]
    return placed + [r for rest in subs.values() for r in rest]


@pytest.mark.parametrize("order", ["sub-results first", "own result first"])
def test_fold_gives_one_testcase_per_test(tmp_path: Path, order: str) -> None:
    results = hostile_two_platform_run()
    x = [r.name for r in results if r.test == "/tests/x" and r.platform == "fedora-41"]
    assert x == ["/first", "/second", None]  # the order tmt-report-result writes
    if order == "own result first":
        results = own_result_first(results)
        x = [r.name for r in results if r.test == "/tests/x" and r.platform == "fedora-41"]
        assert x == [None, "/first", "/second"]
    path = tmp_path / "junit.xml"
    write_junit(results, path, subresults="fold")
    root = validate(path.read_bytes())
    tests = [r for r in final_results(results) if r.name is None]
    assert len(cases(root)) == len(tests)
    assert consumer_counts(path)["tests"] == len(tests)
    x_case = next(c for c in cases(root) if c.get("name") == "/tests/x")
    out = x_case.findtext("system-out") or ""
    assert "sub-result /first: pass" in out and "sub-result /second: fail" in out
    assert out.index("/first") < out.index("/second")


def test_fold_keeps_sub_results_of_a_test_without_own_result() -> None:
    """tmt's custom results without "/": tmt reports each entry as a result."""
    results = [
        Result(test="/t/custom", name="/a", status=Status.PASS, plan="/p", duration=3.0),
        Result(test="/t/custom", name="/b", status=Status.FAIL, plan="/p"),
        Result(test="/t/plain", status=Status.PASS, plan="/p"),
    ]
    root = validate(junit_xml(results, subresults="fold"))
    assert [c.get("name") for c in cases(root)] == ["/t/custom/a", "/t/custom/b", "/t/plain"]
    assert cases(root)[0].get("time") == "3.000"
    with pytest.raises(ValueError, match="subresults"):
        junit_xml(results, subresults="bogus")


def test_failure_and_error_without_message_stay_failures() -> None:
    results = [
        Result(test="/tests/silent-fail", status=Status.FAIL),
        Result(test="/tests/silent-error", status=Status.ERROR),
        Result(test="/tests/blank-note", status=Status.FAIL, note="  \n "),
    ]
    root = validate(junit_xml(results))
    by_name = {c.get("name"): c for c in cases(root)}
    for name in ("/tests/silent-fail", "/tests/blank-note"):
        failure = by_name[name].find("failure")
        assert failure is not None and failure.get("message"), name
    error = by_name["/tests/silent-error"].find("error")
    assert error is not None and error.get("message") == "error"
    assert root.get("failures") == "2" and root.get("errors") == "1"


def test_illegal_characters_from_disk_names_and_notes(tmp_path: Path) -> None:
    data = (
        b"start\x00after-nul\n"
        b"\x1b[1;31mred\x1b[0m plain\n"
        b"bad utf-8: \xff\xfe\xc3(\n"
        b"controls: \x01\x7f end\n"
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
    root = validate(document)
    sub, own = cases(root)
    assert sub.get("name") == "/tests/dirty/sub\\ud800name\\ufffe\\uffff"
    failure = sub.find("failure")
    assert failure is not None
    assert failure.get("message") == (
        "lone \\udc80 surrogate and \\x1b[32mgreen\\x1b[0m and NUL\\x00"
    )
    out = own.findtext("system-out") or ""
    assert "start\\x00after-nul" in out
    assert "red plain" in out  # colours in output are removed, not escaped
    assert "bad utf-8: \ufffd" in out
    assert "controls: \\x01\\x7f end" in out
    assert "title gone" in out and "window title" not in out


def test_time_has_millisecond_precision() -> None:
    results = [
        Result(test="/tests/fast", status=Status.PASS, duration=0.0004),
        Result(test="/tests/slow", status=Status.PASS, duration=12.3456),
        Result(test="/tests/quarter", status=Status.PASS, duration=1.25),
        Result(test="/tests/unknown", status=Status.PASS, duration=None),
    ]
    root = validate(junit_xml(results))
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


def test_failure_output_in_system_out(tmp_path: Path) -> None:
    lines = b"".join(b"line %d\n" % i for i in range(100))
    rel = write_output(tmp_path, "default", "/tests/x", lines)
    results = [
        Result(test="/tests/x", status=Status.FAIL, files=[rel]),
        Result(test="/tests/y", status=Status.PASS, files=[rel]),
    ]
    root = validate(junit_xml(results, rundir_path=tmp_path))
    failed, passed = cases(root)
    out = failed.findtext("system-out") or ""
    assert out.startswith("line 0\n") and out.endswith("line 99\n")
    assert "left out" not in out
    assert passed.find("system-out") is None  # passing output is not copied


def test_50_mb_output_and_note_give_head_tail_and_short_message(tmp_path: Path) -> None:
    line = b"x" * 99 + b"\n"
    data = b"FIRST LINE\n" + line * (50 * 1024 * 1024 // 100) + b"THE END\n"
    rel = write_output(tmp_path, "default", "/tests/big", data)
    note = "N" * (50 * 1024 * 1024)
    result = Result(test="/tests/big", status=Status.FAIL, files=[rel], note=note)
    path = tmp_path / "junit.xml"
    write_junit([result], path, rundir_path=tmp_path)
    assert path.stat().st_size < 200 * 1024
    root = validate(path.read_bytes())
    case = cases(root)[0]
    out = case.findtext("system-out") or ""
    assert out.startswith("FIRST LINE\n") and out.endswith("THE END\n")
    assert f"the full log is artifacts/{rel}" in out
    assert len(out.encode()) <= SYSTEM_OUT_MAX_BYTES + 500
    failure = case.find("failure")
    assert failure is not None
    assert len(failure.get("message") or "") <= junit.MESSAGE_MAX_CHARS
    assert len(failure.text or "") <= junit.NOTE_MAX_CHARS + 1000
    assert "characters left out" in (failure.text or "")


def test_output_budget_caps_the_whole_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(junit, "OUTPUT_BUDGET_BYTES", 3 * SYSTEM_OUT_MAX_BYTES)
    data = b"y" * (2 * SYSTEM_OUT_MAX_BYTES)
    results = []
    for n in range(10):
        rel = write_output(tmp_path, "default", f"/tests/t{n}", data)
        results.append(Result(test=f"/tests/t{n}", status=Status.FAIL, files=[rel]))
    root = validate(junit_xml(results, rundir_path=tmp_path))
    outs = [c.findtext("system-out") or "" for c in cases(root)]
    assert sum("yyyy" in o for o in outs) == 3
    assert all("output budget is spent" in o for o in outs[3:])


def test_only_the_final_attempt_is_reported() -> None:
    results = [
        Result(test="/tests/flaky", status=Status.FAIL, attempt=1),
        Result(test="/tests/flaky", name="step", status=Status.FAIL, attempt=1),
        Result(test="/tests/flaky", status=Status.PASS, attempt=2),
    ]
    root = validate(junit_xml(results))
    assert [c.get("name") for c in cases(root)] == ["/tests/flaky"]
    assert root.get("failures") == "0"


def test_empty_run_gives_a_valid_empty_report(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    write_junit([], path, suite_name="nightly")
    root = validate(path.read_bytes())
    assert root.get("tests") == "0" and root.get("failures") == "0"
    suites = root.findall("testsuite")
    assert len(suites) == 1 and suites[0].get("name") == "nightly"
    assert consumer_counts(path) == {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}


def test_write_junit_writes_utf8_file_atomically(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    results = [Result(test="/tests/ünïcödé/😀", status=Status.FAIL, note="naïve")]
    write_junit(results, path, suite_name="suite")
    root = ET.parse(path).getroot()
    case = root.find("./testsuite/testcase")
    assert case is not None and case.get("name") == "/tests/ünïcödé/😀"
    assert path.read_bytes().startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    assert [p.name for p in tmp_path.iterdir()] == ["junit.xml"]


def test_results_file_with_bad_bytes_and_wrong_types_still_reports(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path / "run")
    good = {"test": "/tests/ok", "status": "pass", "platform": "p"}
    lines = [
        json.dumps(good).encode(),
        b'{"test": "/tests/bad\xff\xfebytes", "status": "fail"}',
        json.dumps({"test": "/tests/types", "status": "fail", "attempt": "2"}).encode(),
        json.dumps({"test": "/tests/files", "status": "fail", "files": [1]}).encode(),
        json.dumps({"test": ["/x"], "status": "fail"}).encode(),
        b'{"test": "/tests/torn", "sta',
    ]
    (run.path / "results.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    results, problems = run.read_results_checked()
    assert [r.test for r in results] == ["/tests/ok", "/tests/bad\udcff\udcfebytes"]
    assert len(problems) == 4
    assert "results.jsonl:3: result key 'attempt' must be int" in problems[0]
    assert "'files' must be a list of strings" in problems[1]
    root = validate(junit_xml(results))
    assert [c.get("name") for c in cases(root)] == ["/tests/ok", "/tests/bad\\udcff\\udcfebytes"]


def test_a_results_line_over_the_line_cap_is_skipped_not_read(tmp_path: Path) -> None:
    from atex_ci.rundir import MAX_JSONL_LINE_BYTES

    run = RunDir.create(tmp_path / "run")
    with open(run.path / "results.jsonl", "wb") as f:
        f.write(b'{"test": "/before", "status": "pass"}\n')
        f.write(b'{"test": "/huge", "status": "fail", "note": "')
        chunk = b"n" * (1024 * 1024)
        for _ in range(MAX_JSONL_LINE_BYTES // len(chunk) + 1):
            f.write(chunk)
        f.write(b'"}\n{"test": "/after", "status": "fail"}\n')
    results, problems = run.read_results_checked()
    assert [r.test for r in results] == ["/before", "/after"]
    assert len(problems) == 1 and "results.jsonl:2:" in problems[0]


def test_a_test_selected_twice_by_its_plan_gets_its_serial_number() -> None:
    results = [
        Result(test="/t", plan="/p", status=Status.PASS, serial_number=1),
        Result(test="/t", plan="/p", status=Status.FAIL, serial_number=4),
        Result(test="/u", plan="/p", status=Status.PASS, serial_number=2),
        Result(test="/t", plan="/q", status=Status.PASS, serial_number=1),
    ]
    root = validate(junit_xml(results))
    assert [(c.get("classname"), c.get("name")) for c in cases(root)] == [
        ("default:/p", "/t #1"),
        ("default:/p", "/t #4"),
        ("default:/p", "/u"),
        ("default:/q", "/t"),
    ]
    assert root.get("failures") == "1"


def dotted_platform_run() -> list[Result]:
    results: list[Result] = []
    for platform in ("rhel-9.4", "centos-9.4"):
        common = {"platform": platform, "plan": "/plans/v1.2"}
        results += [
            Result(test="/tests/x.sh", status=Status.PASS, **common),
            Result(test="/tests/f", status=Status.FAIL, note="boom", **common),
            Result(test="/tests/erred", status=Status.ERROR, reason=Reason.TEST, **common),
            Result(test="/tests/erred", status=Status.PASS, attempt=2, **common),
            Result(test="/tests/timed", status=Status.ERROR, reason=Reason.TIMEOUT, **common),
            Result(test="/tests/timed", status=Status.PASS, attempt=2, **common),
            Result(test="/tests/failed", status=Status.FAIL, **common),
            Result(test="/tests/failed", status=Status.PASS, attempt=2, **common),
        ]
    return results


def test_dotted_platforms_plans_and_tests_stay_apart_in_every_reader(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    write_junit(dotted_platform_run(), path)
    validate(path.read_bytes())
    # junitparser, keying by (classname, name): five tests on each platform.
    assert consumer_counts(path) == {"tests": 10, "failures": 2, "errors": 0, "skipped": 0}
    # action-junit-report keeps the classname's text after its last ".".
    shown = mikepenz_cases(path)
    titles = [case.title for case in shown]
    assert len(set(titles)) == len(titles) == 10
    dot = junit.CLASSNAME_DOT
    for platform in ("rhel-9.4", "centos-9.4"):
        prefix = f"{platform.replace('.', dot)}:/plans/v1{dot}2."
        mine = sorted(t.removeprefix(prefix) for t in titles if t.startswith(prefix))
        assert mine == ["/tests/erred", "/tests/f", "/tests/failed", "/tests/timed", "/tests/x.sh"]
    # A test that errored (or failed) and then passed is a retried success there.
    retried = {c.title.rsplit(".", 1)[-1] for c in shown if c.retries and c.status == "success"}
    assert retried == {"/tests/erred", "/tests/timed", "/tests/failed"}


def test_a_classname_is_injective_with_dots_and_their_stand_in() -> None:
    dot = junit.CLASSNAME_DOT
    spelled = {
        junit.classname_of(Result(test="/t", status=Status.PASS, platform=p, plan="/p"))
        for p in ("a.b", f"a{dot}b", "a\\u2024b", "a_b")
    }
    assert len(spelled) == 4
    assert not any("." in name for name in spelled)
