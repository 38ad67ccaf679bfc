"""Stopping a run early through the real CLI on local slots: --max-failures and
--exit-first, --time-budget, and --resume after either."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from .test_provision_testingfarm import atex_env
from .test_scheduling_run import started_order, write_history
from .tf_fake import FakeTestingFarm
from .treeutil import atex, make_tree, own_results


def events(run: Path, name: str) -> list[dict[str, object]]:
    lines = (run / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == name]


def test_max_failures_2_on_10_failing_tests_starts_exactly_2(tmp_path):
    tree = make_tree(tmp_path / "tree", {f"t{n:02}": {"test": "exit 1"} for n in range(10)})
    run = tmp_path / "run"
    proc = atex(
        "run", "-d", str(run), "--fmf-root", str(tree), "--local", "1", "--max-failures", "2"
    )
    assert proc.returncode == 1, proc.stderr
    assert started_order(run) == ["/tests/t00", "/tests/t01"]
    own = own_results(run)
    assert len(own) == 10
    assert {n: r["status"] for n, r in own.items() if r["status"] != "skip"} == {
        "/tests/t00": "fail",
        "/tests/t01": "fail",
    }
    not_run = [r for r in own.values() if r["status"] == "skip"]
    assert len(not_run) == 8
    assert {r["note"] for r in not_run} == {"not run: stopped after 2 failures"}
    assert all(r["machine"] is None for r in not_run)
    assert "8 test(s) not run: stopped after 2 failures" in proc.stderr
    # The slot went back; the run finished.
    assert [e["machine"] for e in events(run, "machine_released")]
    assert json.loads((run / "run.json").read_text())["state"] == "finished"
    # JUnit: skipped, with the note as the message.
    assert atex("report", "-d", str(run)).returncode == 0
    cases = ET.parse(run / "junit.xml").getroot().iter("testcase")
    skipped = [c.find("skipped") for c in cases if c.find("skipped") is not None]
    assert len(skipped) == 8
    assert {s.get("message") for s in skipped} == {"not run: stopped after 2 failures"}
    # --resume runs the rest (without the limit now) and nothing twice.
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree), "--local", "1", "--resume")
    assert proc.returncode == 1, proc.stderr
    assert started_order(run).count("/tests/t00") == 1
    assert len(started_order(run)) == 10
    assert {r["status"] for r in own_results(run).values()} == {"fail"}


def test_exit_first_stops_at_the_first_failure_and_passes_do_not_count(tmp_path):
    tests = {"a-pass": {"test": "true"}, "b-fail": {"test": "exit 1"}, "c-pass": {"test": "true"}}
    tree = make_tree(tmp_path / "tree", tests)
    run = tmp_path / "run"
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree), "--local", "1", "--exit-first")
    assert proc.returncode == 1, proc.stderr
    assert {n: (r["status"], r["note"]) for n, r in own_results(run).items()} == {
        "/tests/a-pass": ("pass", None),
        "/tests/b-fail": ("fail", None),
        "/tests/c-pass": ("skip", "not run: stopped after 1 failures"),
    }


def test_a_failure_that_is_rerun_is_not_final_and_a_stop_queues_no_rerun(tmp_path):
    tree = make_tree(tmp_path / "tree", {"a": {"test": "exit 1"}, "b": {"test": "true"}})
    run = tmp_path / "run"
    proc = atex(
        "run", "-d", str(run), "--fmf-root", str(tree), "--local", "1",
        "--max-reruns", "1", "--max-failures", "1",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    # a's first failure is rerun (not final); its second is final: b never starts.
    assert started_order(run) == ["/tests/a", "/tests/a"]
    assert own_results(run)["/tests/b"]["note"] == "not run: stopped after 1 failures"


def test_time_budget_starts_only_tests_that_fit_and_resume_runs_the_rest(tmp_path):
    tree = make_tree(
        tmp_path / "tree",
        {
            "short": {"test": "true", "duration": "1m"},
            "long": {"test": "true", "duration": "2h"},
            "other": {"test": "true", "duration": "5m"},
        },
    )
    run = tmp_path / "run"
    proc = atex(
        "run", "-d", str(run), "--fmf-root", str(tree), "--local", "1", "--time-budget", "1h"
    )
    assert proc.returncode == 0, proc.stderr
    assert started_order(run) == ["/tests/other", "/tests/short"]  # discovery order
    own = own_results(run)
    assert (own["/tests/long"]["status"], own["/tests/long"]["note"]) == (
        "skip",
        "not run: time budget",
    )
    assert "1 test(s) not run: time budget" in proc.stderr
    # --resume with a budget it fits in runs only what was left.
    proc = atex(
        "run", "-d", str(run), "--fmf-root", str(tree), "--local", "1",
        "--resume", "--time-budget", "3h",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert started_order(run) == ["/tests/other", "/tests/short", "/tests/long"]
    assert {r["status"] for r in own_results(run).values()} == {"pass"}


def test_time_budget_keeps_a_reserve_for_release_and_reports(tmp_path):
    # 5% of 100m is 5m kept free: a test declared for exactly 100m does not start,
    # one of 95m does.
    tree = make_tree(
        tmp_path / "tree",
        {"fits": {"test": "true", "duration": "94m"}, "full": {"test": "true", "duration": "100m"}},
    )
    run = tmp_path / "run"
    proc = atex(
        "run", "-d", str(run), "--fmf-root", str(tree), "--local", "1", "--time-budget", "100m"
    )
    assert proc.returncode == 0, proc.stderr
    assert started_order(run) == ["/tests/fits"]


def test_time_budget_estimates_from_history_scaling_fmf_durations(tmp_path):
    # Both declare 1h; the history knows /tests/known took 36s (1% of it), so
    # /tests/new is expected to take 1% of its own 2h: 72s, inside 10m.
    tree = make_tree(
        tmp_path / "tree",
        {"known": {"test": "true", "duration": "1h"}, "new": {"test": "true", "duration": "2h"}},
    )
    history = write_history(tmp_path / "history.json", {"/tests/known": 36.0})
    run = tmp_path / "run"
    proc = atex(
        "run", "-d", str(run), "--fmf-root", str(tree), "--local", "1",
        "--time-budget", "10m", "--history", str(history),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert sorted(started_order(run)) == ["/tests/known", "/tests/new"]
    # Without the history, neither fits: both are estimated at their declared limit.
    bare = tmp_path / "bare"
    proc = atex(
        "run", "-d", str(bare), "--fmf-root", str(tree), "--local", "1", "--time-budget", "10m"
    )
    assert proc.returncode == 0, proc.stderr
    own = own_results(bare)
    assert {r["note"] for r in own.values()} == {"not run: time budget"} and len(own) == 2
    assert all(r["machine"] is None for r in own.values())  # neither started


def test_bad_stop_options_are_one_line_errors(tmp_path):
    tree = make_tree(tmp_path / "tree", {"a": {"test": "true"}})
    run = str(tmp_path / "run")
    for args, message in [
        (["--time-budget", "soon"], "atex-ci: --time-budget: invalid duration"),
        (["--time-budget", "0"], "must be more than nothing"),
        (["--max-failures", "0"], "Invalid value for '--max-failures'"),
        (["--exit-first", "--max-failures", "3"], "--exit-first is --max-failures 1"),
    ]:
        proc = atex("run", "-d", run, "--fmf-root", str(tree), *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr, (args, proc.stderr)
        assert not (tmp_path / "run" / "results.jsonl").exists()


def test_time_budget_ends_a_run_whose_machine_never_comes_and_cancels_the_request(
    tmp_path, ssh_host
):
    # The request stays queued: no machine ever asks for work. Each test is
    # expected to take 1s, so with a budget of 3s (less its reserve) neither
    # fits any more about 2s in; the run then cancels the request and ends.
    tree = make_tree(
        tmp_path / "tree",
        {"a": {"test": "true", "duration": "1s"}, "b": {"test": "true", "duration": "1s"}},
    )
    run = tmp_path / "run"
    with FakeTestingFarm([ssh_host]) as fake:
        fake.hold()
        proc = atex(
            "run", "-d", str(run), "--fmf-root", str(tree), "--time-budget", "3s",
            "--provisioner", "testing-farm", "--compose", "X",
            env=atex_env(fake),
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert len(fake.requests) == 1
        assert sorted(fake.deleted()) == sorted(fake.requests)
        assert set(fake.states().values()) == {"canceled"}
    own = own_results(run)
    assert {r["note"] for r in own.values()} == {"not run: time budget"} and len(own) == 2
    assert all(r["machine"] is None for r in own.values())  # neither started
