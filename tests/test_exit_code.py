"""The exit code of a run comes from its final results alone: every status mix,
reruns, flaky tests, tests that never ran, sub-results."""

from __future__ import annotations

import itertools

import pytest

from atex_ci.model import Reason, Result, Status
from atex_ci.recorder import (
    EXIT_INFRA,
    EXIT_PASSED,
    EXIT_TEST_FAILURES,
    exit_code,
    final_results,
    standing_result,
)
from atex_ci.run_options import RunSummary

# Every status a result can have, errors with each reason they can carry.
OUTCOMES: list[tuple[Status, Reason | None]] = [
    (Status.PASS, None),
    (Status.FAIL, None),
    (Status.WARN, None),
    (Status.INFO, None),
    (Status.SKIP, None),
    (Status.ERROR, Reason.TEST),
    (Status.ERROR, Reason.TIMEOUT),
    (Status.ERROR, Reason.INFRA),
    (Status.ERROR, Reason.INTERRUPTED),
    (Status.ERROR, None),  # an unknown status sent by a test counts as error
]


def result(
    test: str,
    outcome: tuple[Status, Reason | None],
    *,
    name: str | None = None,
    attempt: int = 1,
    machine: str | None = "m1",
) -> Result:
    status, reason = outcome
    return Result(
        test=test,
        plan="/plan",
        name=name,
        status=status,
        reason=reason,
        attempt=attempt,
        machine=machine,
    )


def expected(outcomes: list[tuple[Status, Reason | None]]) -> int:
    if any(s is Status.ERROR and r is Reason.INFRA for s, r in outcomes):
        return EXIT_INFRA
    if any(s in (Status.FAIL, Status.ERROR) for s, _ in outcomes):
        return EXIT_TEST_FAILURES
    return EXIT_PASSED


@pytest.mark.parametrize("sub", [False, True], ids=["tests", "sub-results"])
def test_every_mix_of_two_statuses(sub: bool) -> None:
    """Two tests (or one test and a sub-result of it), every pair of outcomes."""
    for first, second in itertools.product(OUTCOMES, repeat=2):
        results = [
            result("/a", first),
            result("/a" if sub else "/b", second, name="/part" if sub else None),
        ]
        code = exit_code(final_results(results))
        assert code == expected([first, second]), (first, second)
        if any(s.is_failure for s, _ in (first, second)):
            assert code != EXIT_PASSED, (first, second)


def test_every_mix_of_three_tests_never_exits_0_with_a_failure() -> None:
    for mix in itertools.product(OUTCOMES, repeat=3):
        results = [result(f"/t{n}", outcome) for n, outcome in enumerate(mix)]
        code = exit_code(final_results(results))
        assert code == expected(list(mix)), mix


@pytest.mark.parametrize(
    ("results", "code"),
    [
        pytest.param([], EXIT_PASSED, id="nothing"),
        pytest.param(
            [result("/a", OUTCOMES[1], attempt=1), result("/a", OUTCOMES[0], attempt=2)],
            EXIT_PASSED,
            id="flaky: fail then pass",
        ),
        pytest.param(
            [result("/a", OUTCOMES[5], attempt=1), result("/a", OUTCOMES[0], attempt=2)],
            EXIT_PASSED,
            id="flaky: error then pass",
        ),
        pytest.param(
            [result("/a", OUTCOMES[7], attempt=1), result("/a", OUTCOMES[0], attempt=2)],
            EXIT_PASSED,
            id="infra retry passed",
        ),
        pytest.param(
            [result("/a", OUTCOMES[0], attempt=1), result("/a", OUTCOMES[5], attempt=2)],
            EXIT_TEST_FAILURES,
            id="rerun errored last",
        ),
        pytest.param(
            [
                result("/a", OUTCOMES[0], attempt=1),
                result("/a", OUTCOMES[1], name="/part", attempt=1),
                result("/a", OUTCOMES[0], attempt=2),
            ],
            EXIT_PASSED,
            id="failed sub-result of an earlier attempt does not linger",
        ),
        pytest.param(
            [result("/a", OUTCOMES[1], name="/part"), result("/a", OUTCOMES[0])],
            EXIT_TEST_FAILURES,
            id="passed test with a failed sub-result reported first",
        ),
        pytest.param(
            [result("/a", OUTCOMES[0], name="/x"), result("/a", OUTCOMES[5], name="/y")],
            EXIT_TEST_FAILURES,
            id="custom results without '/': an errored entry",
        ),
        pytest.param(
            [result("/a", OUTCOMES[0]), result("/b", OUTCOMES[7], machine=None)],
            EXIT_INFRA,
            id="not run: no machine left",
        ),
        pytest.param(
            [result("/a", OUTCOMES[5]), result("/b", OUTCOMES[4], machine=None)],
            EXIT_TEST_FAILURES,
            id="internal error of a test, the rest not run after tmt-abort",
        ),
        pytest.param(
            [result("/a", OUTCOMES[0]), result("/b", OUTCOMES[8])],
            EXIT_TEST_FAILURES,
            id="a test interrupted by an earlier invocation",
        ),
    ],
)
def test_reruns_flaky_not_run_and_sub_results(results: list[Result], code: int) -> None:
    assert exit_code(final_results(results)) == code


def test_run_summary_uses_the_final_results_and_says_interrupted() -> None:
    passed = result("/a", OUTCOMES[0])
    errored = result("/b", OUTCOMES[5])
    # This invocation only passed, but an earlier one (before --resume) errored.
    assert RunSummary([passed], final=[passed, errored]).exit_code == EXIT_TEST_FAILURES
    assert RunSummary([errored], final=[]).exit_code == EXIT_TEST_FAILURES
    assert RunSummary([passed], final=[passed]).exit_code == EXIT_PASSED
    assert RunSummary([passed], final=[passed], interrupted=True).exit_code == 130


def test_standing_result_is_the_own_result_else_the_worst() -> None:
    own = result("/a", OUTCOMES[0])
    fail = result("/a", OUTCOMES[1], name="/x")
    warn = result("/a", OUTCOMES[2], name="/y")
    assert standing_result([fail, own]) is own
    assert standing_result([warn, fail]) is fail
    assert standing_result([warn]) is warn
    assert standing_result([]) is None
