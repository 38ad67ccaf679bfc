"""The examples in the docs keep working."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from .treeutil import DEMO, REPO, atex, fails_once, make_tree, own_results, results


def custom_runner(tree: Path, run: Path, slots: int) -> subprocess.CompletedProcess[str]:
    script = REPO / "examples" / "custom_runner.py"
    return subprocess.run(
        [sys.executable, str(script), str(tree), str(run), str(slots)],
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_custom_runner_on_the_demo(tmp_path):
    run = tmp_path / "r"
    proc = custom_runner(DEMO, run, 3)
    assert proc.returncode == 1, proc.stderr  # the demo has a failing test
    root = ET.fromstring((run / "junit.xml").read_bytes())
    assert root.get("tests") == "14"
    assert "FAIL  /tests/broken/fails" in proc.stderr
    # Failed tests ran once more.
    attempts = [r["attempt"] for r in results(run) if r["test"] == "/tests/broken/fails"]
    assert attempts == [1, 2]
    assert not (run / "work" / "local-1").exists()  # slots released
    # A complete run directory: the commands accept it.
    assert atex("report", "-d", str(run), "--markdown", str(tmp_path / "s.md")).returncode == 0
    assert atex("release", "-d", str(run)).returncode == 0
    proc = atex("run", "-d", str(run), "--fmf-root", str(DEMO), "--resume")
    assert proc.returncode == 1, proc.stderr
    assert "no tests" not in proc.stderr


def test_custom_runner_policy_shows_in_the_order(tmp_path):
    marker = tmp_path / "failed-once"
    tree = make_tree(
        tmp_path / "tree",
        {
            "a-first": {"test": "true"},
            "b-flaky": {"test": fails_once(marker)},
            "y-destructive": {"test": "true", "tag": ["destructive"]},
            "z-slow": {"test": "true", "tag": ["slow"]},
        },
    )
    run = tmp_path / "run"
    proc = custom_runner(tree, run, 1)
    assert proc.returncode == 0, proc.stderr  # the flaky test passed on its rerun
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    started = [e["test"].removeprefix("/tests/") for e in events if e["event"] == "test_started"]
    # Slow first; the rerun at once (on a fresh machine); the destructive test last.
    assert started == ["z-slow", "a-first", "b-flaky", "b-flaky", "y-destructive"]
    broken = [e["note"] for e in events if e["event"] == "machine_broken"]
    assert broken == [
        "/tests/b-flaky failed: its rerun gets a fresh machine",
        "/tests/y-destructive is destructive",
    ]
    flaky = [r["machine"] for r in results(run) if r["test"] == "/tests/b-flaky"]
    assert flaky == ["local-1", "local-2"]
    replaced = [
        (e["machine"], e["replacement"]) for e in events if e["event"] == "machine_replaced"
    ]
    assert replaced == [("local-1", "local-2")]  # nothing was left after the destructive test
    assert {n: r["status"] for n, r in own_results(run).items()} == {
        "/tests/a-first": "pass",
        "/tests/b-flaky": "pass",
        "/tests/y-destructive": "pass",
        "/tests/z-slow": "pass",
    }


def load_sink() -> type:
    """examples/jsonl_sink.py's JsonLinesSink, imported as a user would."""
    spec = importlib.util.spec_from_file_location("jsonl_sink", REPO / "examples" / "jsonl_sink.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.JsonLinesSink


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


#: Events the Recorder writes to events.jsonl for the stream's events of the
#: same kind; ``machine_replaced`` comes with a MachineReserved that replaces one.
RECORDED_KINDS = {
    "machine_reserved",
    "machine_ready",
    "machine_broken",
    "machine_released",
    "test_started",
    "test_finished",
    "test_requeued",
}


def test_a_users_sink_hears_every_event_of_a_run(tmp_path):
    from atex_ci.runner import RunOptions, run_tests

    marker = tmp_path / "failed-once"
    tree = make_tree(
        tmp_path / "tree",
        {
            "a": {"test": "true"},
            "flaky": {"test": fails_once(marker)},
            "fails": {"test": "exit 1"},
        },
    )
    run, log = tmp_path / "run", tmp_path / "sink.jsonl"
    sink = load_sink()(log)
    options = RunOptions(local_slots=2, max_reruns=1, sinks=[sink])
    summary = asyncio.run(run_tests(run, tree, options=options))
    sink.close()
    assert summary.exit_code == 1
    heard = read_jsonl(log)
    recorded = read_jsonl(run / "events.jsonl")
    # Every event the run directory records, the sink heard, in the same order.
    assert [(e["event"], e["machine"]) for e in heard if e["event"] in RECORDED_KINDS] == [
        (e["event"], e["machine"]) for e in recorded if e["event"] in RECORDED_KINDS
    ]
    assert {e["event"] for e in recorded} - RECORDED_KINDS <= {"machine_replaced"}
    assert heard[0]["event"] == "run_started" and heard[0]["total"] == 3
    assert heard[-1] == {**heard[-1], "event": "run_finished", "state": "finished"}
    # ...and every result, as results.jsonl has it.
    reported = [r for e in heard if e["event"] == "test_results" for r in e["results"]]
    assert reported == results(run)
    finished = [
        (e["test"]["name"], e["result"]["status"]) for e in heard if e["event"] == "test_finished"
    ]
    assert sorted(finished) == [
        ("/tests/a", "pass"),
        ("/tests/fails", "fail"),
        ("/tests/fails", "fail"),
        ("/tests/flaky", "fail"),
        ("/tests/flaky", "pass"),
    ]
    assert sink.counts["test_requeued"] == 2


def test_kit_runner_from_the_parts(tmp_path):
    tree = make_tree(tmp_path / "tree", {"a": {"test": "true"}, "b": {"test": "exit 1"}})
    run, log = tmp_path / "run", tmp_path / "events.jsonl"
    proc = subprocess.run(
        [sys.executable, "kit_runner.py", str(tree), str(run), str(log), "2"],
        cwd=REPO / "examples",
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 1, proc.stderr  # /tests/b fails
    assert {n: r["status"] for n, r in own_results(run).items()} == {
        "/tests/a": "pass",
        "/tests/b": "fail",
    }
    heard = read_jsonl(log)
    kinds = [e["event"] for e in heard]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert kinds.count("machine_reserved") == kinds.count("machine_released") == 2
    assert kinds.count("test_started") == kinds.count("test_finished") == 2
    assert [r for e in heard if e["event"] == "test_results" for r in e["results"]] == results(run)
    assert not list((run / "work").glob("local-*"))  # slots released
    # A complete run directory: the commands accept it.
    assert atex("report", "-d", str(run), "--markdown", str(tmp_path / "s.md")).returncode == 0
    assert atex("release", "-d", str(run)).returncode == 0
