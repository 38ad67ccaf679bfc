"""The examples in the docs keep working."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from .treeutil import DEMO, REPO, atex, make_tree, own_results, results


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
            "b-flaky": {"test": f"[ -e {marker} ] || {{ touch {marker}; exit 1; }}"},
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
