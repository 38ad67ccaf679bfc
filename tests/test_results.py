"""ResultCollector and custom results; expectations checked against tmt 1.78 where tmt has them."""

from __future__ import annotations

from typing import Any

import pytest

from atex_ci.execute.results import (
    Collected,
    ResultCollector,
    merge_partial,
    parse_custom_results,
    worst_status,
)
from atex_ci.model import Reason, Status


def finish(results: list[dict[str, Any]], **kwargs: Any) -> list[Collected]:
    collector = ResultCollector()
    for data in results:
        collector.add(data)
    kwargs.setdefault("exit_code", 0)
    return collector.finish(**kwargs)


def own(results: list[Collected]) -> Collected:
    (found,) = [r for r in results if r.name is None]
    return found


def files(*names: str) -> list[dict[str, Any]]:
    return [{"name": name, "length": 1} for name in names]


# -- merging -------------------------------------------------------------------------


def test_merge_partial_rules() -> None:
    old = {"a": 1, "gone": "x", "list": [1], "d": {"k": 1, "drop": 2, "n": {"x": 1}}, "t": [1]}
    new = {"a": 2, "gone": None, "list": [2], "d": {"drop": None, "n": {"y": 2}}, "t": "s", "z": 0}
    assert merge_partial(old, new) == {
        "a": 2,
        "list": [1, 2],
        "d": {"k": 1, "n": {"x": 1, "y": 2}},
        "t": "s",
        "z": 0,
    }
    assert old["list"] == [1]  # inputs untouched


def test_partial_completed_by_same_name_and_kept_in_completion_order() -> None:
    results = finish(
        [
            {"name": "/b", "partial": True, "status": "fail", "note": "x", "files": files("l1")},
            {"name": "/a", "status": "pass", "files": []},
            {"name": "/b", "status": "pass", "note": None, "files": files("l2"), "k": {"v": 1}},
        ]
    )
    assert [(r.name, r.status) for r in results] == [
        ("/a", Status.PASS),
        ("/b", Status.PASS),
        (None, Status.PASS),
    ]
    b = results[1]
    assert b.note is None
    assert b.files == ["l1", "l2"]
    assert b.extra == {"k": {"v": 1}}


def test_pending_partials_are_completed_at_finish() -> None:
    results = finish(
        [
            {"name": "/p", "partial": True, "status": "warn", "files": files("f")},
            {"name": "/q", "status": "pass", "files": []},
            {"name": "/nostatus", "partial": True, "files": []},
        ]
    )
    assert [(r.name, r.status) for r in results[:3]] == [
        ("/q", Status.PASS),
        ("/p", Status.WARN),
        ("/nostatus", Status.ERROR),
    ]
    assert results[2].reason is Reason.TEST
    assert results[2].note == "the result has no status"
    assert results[1].files == ["f"]


def test_unknown_status_counts_as_error_and_unknown_keys_are_kept() -> None:
    (sub, _) = finish([{"name": "/x", "status": "weird", "metric": 3, "files": []}])
    assert sub.status is Status.ERROR
    assert sub.reason is Reason.TEST
    assert sub.extra == {"metric": 3}


def test_testout_is_sanitised() -> None:
    (result,) = finish([{"status": "pass", "testout": "../out.log", "files": []}])
    assert result.testout == "out.log"


# -- the test's own result -------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (0, Status.PASS),
        (1, Status.FAIL),
        (2, Status.ERROR),
        (124, Status.ERROR),
        (255, Status.ERROR),
    ],
)
def test_fallback_from_exit_code_like_tmt_shell(code: int, status: Status) -> None:
    result = own(finish([], exit_code=code))
    assert result.status is status
    assert result.reason is (Reason.TEST if status is Status.ERROR else None)


def test_complete_nameless_result_wins_over_exit_code() -> None:
    result = own(finish([{"status": "fail", "note": "mine", "files": []}], exit_code=0))
    assert (result.status, result.note) == (Status.FAIL, "mine")


def test_last_complete_nameless_result_wins_and_files_accumulate() -> None:
    results = finish(
        [
            {"status": "fail", "files": files("a")},
            {"name": "/s", "status": "pass", "files": []},
            {"status": "pass", "files": files("b")},
        ],
        exit_code=1,
    )
    assert [r.name for r in results] == ["/s", None]
    assert (results[1].status, results[1].files) == (Status.PASS, ["a", "b"])


def test_own_result_keeps_its_place_in_completion_order() -> None:
    results = finish(
        [{"status": "pass", "files": []}, {"name": "/later", "status": "pass", "files": []}]
    )
    assert [r.name for r in results] == [None, "/later"]


def test_pending_nameless_partial_with_status_decides() -> None:
    result = own(finish([{"partial": True, "status": "warn", "files": files("x")}], exit_code=1))
    assert (result.status, result.files) == (Status.WARN, ["x"])


def test_file_submit_partial_without_status_leaves_exit_code_in_charge() -> None:
    # tmt-file-submit sends a nameless partial with files only.
    for code, status in ((0, Status.PASS), (1, Status.FAIL), (3, Status.ERROR)):
        result = own(finish([{"partial": True, "files": files("log")}], exit_code=code))
        assert (result.status, result.files) == (status, ["log"])


# tmt 1.78: `tmt-report-result sub FAIL; exit 0` -> fail; `... PASS; exit 1` -> pass;
# `... PASS; exit 3` -> pass; `... SKIP; exit 0` -> skip; reported results are sub-results.
@pytest.mark.parametrize(
    ("reported", "code", "status"),
    [
        (["fail"], 0, Status.FAIL),
        (["pass"], 1, Status.PASS),
        (["pass"], 3, Status.PASS),
        (["skip"], 0, Status.SKIP),
        (["pass", "warn", "skip"], 0, Status.WARN),
        (["info", "pass"], 0, Status.PASS),
        (["error", "fail"], 0, Status.ERROR),
    ],
)
def test_tmt_report_results_decide_like_tmt(reported: list[str], code: int, status: Status) -> None:
    data = [
        {"name": f"/r{i}", "status": s, "counts_for_test": True, "files": []}
        for i, s in enumerate(reported)
    ]
    results = finish(data, exit_code=code)
    assert own(results).status is status
    assert [r.status for r in results if r.name] == [Status(s) for s in reported]
    assert all(COUNTS not in r.extra for r in results)


COUNTS = "counts_for_test"


def test_tmt_report_result_slash_counts_for_the_test() -> None:
    results = finish(
        [
            {"partial": True, "status": "pass", "counts_for_test": True, "files": []},
            {"name": "/sub", "status": "fail", "counts_for_test": True, "files": []},
        ]
    )
    assert own(results).status is Status.FAIL
    assert [r.name for r in results] == ["/sub", None]


def test_native_sub_results_do_not_decide_the_test() -> None:
    results = finish([{"name": "/sub", "status": "fail", "files": []}], exit_code=0)
    assert own(results).status is Status.PASS


# -- failures --------------------------------------------------------------------------


@pytest.mark.parametrize("reason", list(Reason))
def test_failure_forces_error_even_after_pass(reason: Reason) -> None:
    results = finish(
        [{"status": "pass", "files": files("f")}, {"name": "/s", "status": "pass", "files": []}],
        exit_code=0,
        failure=(reason, "cause of it"),
    )
    result = own(results)
    assert (result.status, result.reason) == (Status.ERROR, reason)
    assert result.note == "cause of it; before that the result was pass"
    assert result.files == ["f"]
    assert results[1].status is Status.PASS  # sub-results stay


def test_missing_exit_code_is_infrastructure_error() -> None:
    result = own(finish([{"status": "pass", "files": []}], exit_code=None))
    assert (result.status, result.reason) == (Status.ERROR, Reason.INFRA)
    assert result.note is not None and "exit code is missing" in result.note


def test_failure_wins_over_result_mode() -> None:
    # Deliberate difference: tmt 1.78 turns a timed-out `result: pass` test into pass.
    result = own(
        finish([], exit_code=None, failure=(Reason.TIMEOUT, "timed out"), result_mode="pass")
    )
    assert (result.status, result.reason) == (Status.ERROR, Reason.TIMEOUT)


def test_abort_flag_is_kept() -> None:
    result = own(
        finish([{"status": "error", "note": "aborted", "abort": True, "files": []}], exit_code=143)
    )
    assert result.status is Status.ERROR
    assert result.extra == {"abort": True}


# -- result modes (tmt 1.78 interpret_result) --------------------------------------------


@pytest.mark.parametrize(
    ("code", "status", "note"),
    [
        (0, Status.FAIL, "test was expected to fail; original test result: pass"),
        (1, Status.PASS, "test failed as expected; original test result: fail"),
        (2, Status.ERROR, "test exited with code 2"),
    ],
)
def test_xfail(code: int, status: Status, note: str) -> None:
    result = own(finish([], exit_code=code, result_mode="xfail"))
    assert (result.status, result.note) == (status, note)


def test_xfail_inverts_only_the_test_itself() -> None:
    # tmt 1.78: `result: xfail` with `tmt-report-result a FAIL; tmt-report-result b PASS`
    # gives pass for the test, sub-results a=fail and b=pass unchanged.
    data = [
        {"name": "/a", "status": "fail", "counts_for_test": True, "files": []},
        {"name": "/b", "status": "pass", "counts_for_test": True, "files": []},
    ]
    results = finish(data, result_mode="xfail")
    assert [(r.name, r.status) for r in results] == [
        ("/a", Status.FAIL),
        ("/b", Status.PASS),
        (None, Status.PASS),
    ]


@pytest.mark.parametrize("mode", ["pass", "info", "warn", "error", "fail"])
def test_override_modes(mode: str) -> None:
    result = own(finish([], exit_code=1, result_mode=mode))
    assert result.status is Status(mode)
    expected = f"test result overridden: {mode}"
    if mode != "fail":
        expected += "; original test result: fail"
    assert result.note == expected
    assert result.reason is (Reason.TEST if mode == "error" else None)


def test_unknown_result_mode() -> None:
    with pytest.raises(ValueError, match="unknown result mode"):
        finish([], result_mode="bogus")


# -- custom results ----------------------------------------------------------------------


def test_custom_without_root_has_no_own_result() -> None:
    # tmt 1.78: results.yaml with /a pass and b fail (note hello) gives the results
    # <test>/a pass and <test>/b fail with notes hello and the missing-slash note.
    custom = parse_custom_results(
        "- name: /a\n  result: pass\n- name: b\n  result: fail\n  note: [hello]\n", "results.yaml"
    )
    results = finish([], result_mode="custom", custom_results=custom)
    assert [(r.name, r.status, r.note) for r in results] == [
        ("/a", Status.PASS, None),
        ("/b", Status.FAIL, "hello; custom test result name should start with '/'"),
    ]


def test_custom_root_is_the_test_itself_and_exit_code_is_ignored() -> None:
    custom = parse_custom_results(
        '[{"name": "/", "result": "fail", "log": ["x.log", "../up"], "ids": {"a": "1"}}]',
        "results.json",
    )
    results = finish(
        [{"partial": True, "files": files("submitted")}],
        exit_code=0,
        result_mode="custom",
        custom_results=custom,
    )
    (result,) = results
    assert (result.name, result.status) == (None, Status.FAIL)
    assert result.files == ["data/x.log", "data/up", "submitted"]
    assert result.extra == {"ids": {"a": "1"}}


def test_custom_missing_and_empty() -> None:
    (missing,) = finish([], result_mode="custom", custom_results=None)
    assert (missing.status, missing.reason) == (Status.ERROR, Reason.TEST)
    assert missing.note is not None and "custom results file not found" in missing.note
    (empty,) = finish([], result_mode="custom", custom_results=[])
    assert (empty.status, empty.note) == (Status.ERROR, "no custom results were provided")


def test_custom_with_failure_gets_an_own_error_result() -> None:
    custom = [{"name": "/a", "result": "pass"}]
    results = finish(
        [], exit_code=None, failure=(Reason.TIMEOUT, "timeout"), result_mode="custom",
        custom_results=custom,
    )  # fmt: skip
    assert [(r.name, r.status) for r in results] == [("/a", Status.PASS), (None, Status.ERROR)]


def test_parse_custom_results_yaml_timestamps_stay_strings() -> None:
    (item,) = parse_custom_results(
        "- name: /x\n  result: info\n  end-time: 2024-01-02T03:04:05+00:00\n", "results.yaml"
    )
    assert isinstance(item["end-time"], str)


@pytest.mark.parametrize("text", ["", "  \n", "null", "---\n"])
def test_parse_custom_results_empty(text: str) -> None:
    assert parse_custom_results(text, "results.yaml") == []


@pytest.mark.parametrize(
    ("text", "filename", "message"),
    [
        ("[", "results.json", "cannot parse"),
        ("a: [", "results.yaml", "cannot parse"),
        ("name: /x", "results.yaml", "expected a list"),
        ('{"name": "/x"}', "results.json", "expected a list"),
        ("- just a string", "results.yaml", "expected a mapping"),
        ("- result: pass", "results.yaml", "'name' must be"),
        ("- name: /x", "results.yaml", "'result' must be one of"),
        ("- name: /x\n  result: PASSED", "results.yaml", "'result' must be one of"),
        ("- name: /x\n  result: pass\n  note: {a: 1}", "results.yaml", "'note' must be"),
        ("- name: /x\n  result: pass\n  log: x.log", "results.yaml", "'log' must be"),
    ],
)
def test_parse_custom_results_errors(text: str, filename: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        parse_custom_results(text, filename)
    assert filename in str(caught.value)


def test_worst_status_order() -> None:
    assert worst_status([Status.SKIP, Status.INFO]) is Status.INFO
    assert worst_status([Status.INFO, Status.PASS]) is Status.PASS
    assert worst_status([Status.WARN, Status.ERROR, Status.FAIL]) is Status.ERROR
    with pytest.raises(ValueError):
        worst_status([])
