"""Progress on stderr as a person reads it: summary lines in a log, a live
status line on a terminal, test names never sent raw to either."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time

from atex_ci.progress import RunStatus, StderrProgress

from .treeutil import make_tree, own_results

ESC_NAME = "esc\x1b[31mred"


def test_status_summary_counts_running_machines_and_eta():
    status = RunStatus(
        total=10,
        done=4,
        failed=1,
        running={"m1": ("/tests/a", 100.0), "m2": ("/tests/b", 130.0)},
        durations=[10.0, 20.0, 30.0],
        machines=2,
    )
    assert status.summary(now=160.0) == (
        "atex-ci: 4/10 done, 1 failed, ETA 1m00s, 2 running (m1: /tests/a 1m00s, m2: /tests/b 30s)"
    )
    status.expected_left = 600.0
    assert status.summary(now=160.0).startswith("atex-ci: 4/10 done, 1 failed, ETA 5m00s, ")


def test_the_counts_and_eta_survive_a_narrow_terminal(monkeypatch):
    """A live line is cut at the terminal's width: what is cut is what each machine runs."""
    import io

    status = RunStatus(
        total=400,
        done=120,
        failed=3,
        running={f"fedora-rawhide-x86_64-{n}": (f"/tests/a/long/name/{n}", 0.0) for n in range(8)},
        durations=[60.0],
        machines=8,
    )
    stream = io.StringIO()
    display = StderrProgress(stream, live=True)
    monkeypatch.setenv("COLUMNS", "120")
    display.status(status.summary(now=90.0))
    shown = stream.getvalue()
    assert len(shown) <= 119
    assert shown.startswith("atex-ci: 120/400 done, 3 failed, ETA 35m00s, 8 running (")
    many = RunStatus(total=9, running={f"m{n}": ("/t", 0.0) for n in range(7)})
    assert "7 running (" in many.summary(0.0) and "+3 more)" in many.summary(0.0)


def test_a_log_gets_finished_tests_and_periodic_summaries(tmp_path):
    gate = tmp_path / "gate"
    tree = make_tree(
        tmp_path / "tree",
        {
            "a-quick": {"test": "true"},
            "b-gated": {"test": f"until [ -e {gate} ]; do sleep 0.01; done"},
        },
    )
    env = {**os.environ, "ATEX_CI_STATUS_INTERVAL": "0.05", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "atex_ci", "run", "-d", str(tmp_path / "run"),
         "--fmf-root", str(tree), "--local", "2"],
        stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    lines = []
    try:
        assert proc.stderr is not None
        # Wait until a summary shows the gated test running, then let it end.
        while not re.search(
            r"1/2 done, ETA \d+s, 1 running \(local-\d: /tests/b-gated \d+s\)",
            lines[-1] if lines else "",
        ):
            line = proc.stderr.readline()
            assert line, "".join(lines)
            lines.append(line)
        gate.touch()
        rest = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.wait(timeout=120)
    assert proc.returncode == 0, "".join(lines) + rest
    text = "".join(lines) + rest
    assert "PASS  /tests/a-quick on local-" in text and "PASS  /tests/b-gated on local-" in text
    assert "start  " not in text and "\r" not in text


def test_a_terminal_gets_a_live_status_line_and_no_raw_control_characters(tmp_path):
    gate = tmp_path / "gate"
    tree = make_tree(
        tmp_path / "tree",
        {
            ESC_NAME: {"test": f"until [ -e {gate} ]; do sleep 0.01; done"},
            "quick": {"test": "exit 1"},
        },
    )
    env = {**os.environ, "ATEX_CI_STATUS_INTERVAL": "0.05", "PYTHONUNBUFFERED": "1"}
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "atex_ci", "run", "-d", str(tmp_path / "run"),
         "--fmf-root", str(tree), "--local", "2"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=terminal, env=env,
    )  # fmt: skip
    os.close(terminal)
    seen = b""
    try:
        # The live line names the running test, escaped; then the test may end.
        deadline = time.monotonic() + 120
        while b"running (local-" not in seen.rsplit(b"\r\x1b[K", 1)[-1]:
            assert time.monotonic() < deadline, seen
            if select.select([controller], [], [], 1)[0]:
                seen += os.read(controller, 65536)
        gate.touch()
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the pty closed: atex-ci exited
                break
            if not chunk:
                break
            seen += chunk
    finally:
        proc.wait(timeout=120)
        os.close(controller)
    assert proc.returncode == 1
    assert b"\r\x1b[K" in seen  # the status line is redrawn in place
    assert b"\x1b[31m" not in seen  # the name's escape sequence never reaches the terminal
    assert b"esc\\x1b[31mred" in seen
    assert b"FAIL  /tests/quick" in seen
    # The last words stand on a clean line, the live line gone.
    assert seen.rstrip().splitlines()[-1].endswith(b"results in " + str(tmp_path / "run").encode())
    assert set(own_results(tmp_path / "run")) == {f"/tests/{ESC_NAME}", "/tests/quick"}
