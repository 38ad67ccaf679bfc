"""Scheduling through the real CLI on local slots: reruns and flaky tests, history
order, shards, your own policy, signals, capacity estimates."""

from __future__ import annotations

import json
import os
import signal
import textwrap
from pathlib import Path

from .treeutil import atex, fails_once, interrupt_run, make_tree, own_results, results


def started_order(run: Path) -> list[str]:
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    return [e["test"] for e in events if e["event"] == "test_started"]


def write_history(path: Path, durations: dict[str, float], plan: str = "/plan") -> Path:
    path.write_text(
        json.dumps(
            {
                "format": "atex-ci-history",
                "version": 1,
                "tests": [
                    {"platform": "default", "plan": plan, "test": name, "durations": [d]}
                    for name, d in durations.items()
                ],
            }
        )
    )
    return path


def run_shards(tmp_path: Path, tree: Path, history: Path, exit_code: int) -> list[Path]:
    """Run each share of ``tree`` split in 3 by ``history`` (into
    tmp_path/shard-N), each exiting ``exit_code``; their run directories."""
    shards = []
    for index in (1, 2, 3):
        run = tmp_path / f"shard-{index}"
        proc = atex(
            "run", "-d", str(run), "--fmf-root", str(tree),
            "--shard", f"{index}/3", "--history", str(history),
        )  # fmt: skip
        assert proc.returncode == exit_code, proc.stderr
        shards.append(run)
    return shards


def test_a_test_that_passes_on_a_rerun_is_flaky_and_ran_on_another_machine(tmp_path):
    marker = tmp_path / "failed-once"
    tree = make_tree(
        tmp_path / "tree",
        {
            # Fails on its first run only.
            "a-flaky": {"test": fails_once(marker)},
            # Keeps the other slot alive (busy) until the first run has failed,
            # so the rerun has another machine to prefer.
            "b-wait": {"test": f"until [ -e {marker} ]; do sleep 0.01; done"},
        },
    )
    run = tmp_path / "run"
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree), "--local", "2", "--max-reruns", "1")
    assert proc.returncode == 0, proc.stderr
    runs = [r for r in results(run) if r["test"] == "/tests/a-flaky"]
    assert [(r["attempt"], r["status"]) for r in runs] == [(1, "fail"), (2, "pass")]
    assert runs[0]["machine"] != runs[1]["machine"]
    assert "again  /tests/a-flaky (rerun after fail)" in proc.stderr
    # Every attempt is kept, and the reports call it flaky.
    assert atex("collect", "-d", str(tmp_path / "all"), str(run)).returncode == 0
    summary = json.loads((tmp_path / "all" / "summary.json").read_text())
    assert [f["test"] for f in summary["flaky"]] == ["/tests/a-flaky"]


def test_reruns_are_bounded_and_off_by_default(tmp_path):
    tree = make_tree(tmp_path / "tree", {"broken": {"test": "exit 1"}})
    run = tmp_path / "run"
    assert atex("run", "-d", str(run), "--fmf-root", str(tree)).returncode == 1
    assert len(results(run)) == 1
    run2 = tmp_path / "run2"
    proc = atex("run", "-d", str(run2), "--fmf-root", str(tree), "--max-reruns", "2")
    assert proc.returncode == 1, proc.stderr
    assert [r["attempt"] for r in results(run2)] == [1, 2, 3]


def test_history_runs_the_longest_tests_first_and_unknown_ones_before_them(tmp_path):
    tree = make_tree(tmp_path / "tree", {name: {"test": "true"} for name in "abcde"})
    history = write_history(
        tmp_path / "history.json",
        {"/tests/a": 1.0, "/tests/b": 50.0, "/tests/c": 5.0, "/tests/e": 20.0},
    )
    run = tmp_path / "run"
    proc = atex(
        "run", "-d", str(run), "--fmf-root", str(tree), "--local", "1", "--history", str(history)
    )
    assert proc.returncode == 0, proc.stderr
    assert started_order(run) == ["/tests/d", "/tests/b", "/tests/e", "/tests/c", "/tests/a"]
    # An earlier run directory is a history too.
    again = tmp_path / "again"
    proc = atex(
        "run", "-d", str(again), "--fmf-root", str(tree), "--local", "1", "--history", str(run)
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(started_order(again)) == [f"/tests/{n}" for n in "abcde"]


def test_shards_together_are_the_whole_run_each_test_once(tmp_path):
    names = [f"t{n:02}" for n in range(11)]
    tree = make_tree(tmp_path / "tree", {name: {"test": "true"} for name in names})
    history = write_history(
        tmp_path / "history.json", {f"/tests/{n}": float(i + 1) for i, n in enumerate(names)}
    )
    shards = [set(own_results(run)) for run in run_shards(tmp_path, tree, history, 0)]
    assert all(shards)
    assert sum(len(s) for s in shards) == len(names)
    assert set().union(*shards) == {f"/tests/{n}" for n in names}
    # The same inputs give the same split.
    again = tmp_path / "again"
    atex(
        "run",
        "-d",
        str(again),
        "--fmf-root",
        str(tree),
        "--shard",
        "2/3",
        "--history",
        str(history),
    )
    assert set(own_results(again)) == shards[1]
    merged = tmp_path / "merged"
    sources = [str(tmp_path / f"shard-{i}") for i in (1, 2, 3)]
    assert atex("collect", "-d", str(merged), *sources).returncode == 0
    assert set(own_results(merged)) == {f"/tests/{n}" for n in names}


def test_your_own_scheduler_from_the_command_line(tmp_path):
    module = tmp_path / "mypolicy.py"
    module.write_text(
        textwrap.dedent(
            """
            from atex_ci.schedule import Scheduler

            class Reverse(Scheduler):
                def order(self, jobs):
                    return list(reversed(jobs))
            """
        )
    )
    tree = make_tree(tmp_path / "tree", {name: {"test": "true"} for name in "abc"})
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = atex(
        "run", "-d", str(run), "--fmf-root", str(tree), "--local", "1",
        "--scheduler", "mypolicy:Reverse", env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert started_order(run) == ["/tests/c", "/tests/b", "/tests/a"]


def test_bad_scheduling_options_are_one_line_errors(tmp_path):
    tree = make_tree(tmp_path / "tree", {"a": {"test": "true"}})
    not_history = tmp_path / "x.json"
    not_history.write_text("[]")
    for args, words in [
        (["--shard", "0/2"], "invalid --shard"),
        (["--shard", "3/2"], "invalid --shard"),
        (["--shard", "a/b"], "invalid --shard"),
        (["--scheduler", "no_such_module_here:X"], "cannot import scheduler module"),
        (["--scheduler", "atex_ci.model:Test"], "is not a subclass"),
        (["--history", str(not_history)], "not a history.json"),
        (["--history", str(tmp_path)], "no history.json or results.jsonl"),
    ]:
        proc = atex("run", "-d", str(tmp_path / "run"), "--fmf-root", str(tree), *args)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], (args, proc.stderr)
    assert not (tmp_path / "run").exists()


def test_sigterm_exits_143_and_resume_finishes_the_rest(tmp_path):
    gate = tmp_path / "gate"
    tree = make_tree(
        tmp_path / "tree",
        {
            "a-long": {"test": f"[ -e {gate} ] || {{ touch {tmp_path}/started; sleep 300; }}"},
            "b-next": {"test": "true"},
        },
    )
    run = tmp_path / "run"
    code, err = interrupt_run(run, tree, lambda: (tmp_path / "started").exists(), signal.SIGTERM)
    assert code == 143, err
    machines = json.loads((run / "machines.json").read_text())["machines"]
    assert {m["state"] for m in machines} == {"released"}
    assert own_results(run)["/tests/a-long"]["reason"] == "interrupted"
    gate.touch()
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree), "--resume")
    assert proc.returncode == 0, proc.stderr
    own = own_results(run)
    assert {n: r["status"] for n, r in own.items()} == {
        "/tests/a-long": "pass",
        "/tests/b-next": "pass",
    }


def test_estimate_predicts_makespan_and_the_machines_a_budget_needs(tmp_path):
    history = write_history(tmp_path / "history.json", {f"/tests/t{n}": 60.0 for n in range(8)})
    proc = atex(
        "estimate", "--history", str(history), "--machines", "1,2,4,8", "--budget", "2m 30s"
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"8 tests from {history}"
    rows = [line.split() for line in lines[2:6]]
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("1", "8m00s", "100%"),
        ("2", "4m00s", "100%"),
        ("4", "2m00s", "100%"),
        ("8", "1m00s", "100%"),
    ]
    assert lines[-1] == "fewest machines to finish within 2m 30s: 4"
    proc = atex("estimate", "--history", str(history), "--machines", "0")
    assert proc.returncode == 2 and "invalid --machines" in proc.stderr
    proc = atex("estimate", "--history", str(history), "--budget", "soon")
    assert proc.returncode == 2 and "--budget: invalid duration" in proc.stderr


def test_extra_priority_runs_first_and_the_destructive_tag_discards_the_slot(tmp_path):
    tree = make_tree(
        tmp_path / "tree",
        {
            "a": {"test": "true"},
            "b-late": {"test": "true", "extra-priority": -5},
            "c-first": {"test": "true", "extra-priority": 10},
            "d-wipe": {"test": "true", "tag": ["destructive"], "extra-priority": 1},
            "e": {"test": "true"},
        },
    )
    run = tmp_path / "run"
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree), "--local", "1")
    assert proc.returncode == 0, proc.stderr
    assert started_order(run) == [
        "/tests/c-first", "/tests/d-wipe", "/tests/a", "/tests/e", "/tests/b-late",
    ]  # fmt: skip
    own = own_results(run)
    # The slot that ran the destructive test took no test after it; a new one did.
    wiped = own["/tests/d-wipe"]["machine"]
    assert own["/tests/c-first"]["machine"] == wiped
    assert {own[f"/tests/{n}"]["machine"] for n in ("a", "e", "b-late")} == {"local-2"} != {wiped}
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    broken = [e for e in events if e["event"] == "machine_broken"]
    assert [(e["machine"], e["note"]) for e in broken] == [
        (wiped, "/tests/d-wipe is destructive (tag 'destructive')")
    ]
    assert [e["machine"] for e in events if e["event"] == "machine_replaced"] == [wiped]
