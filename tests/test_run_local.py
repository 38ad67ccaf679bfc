"""End to end on local slots, through the real CLI: run, report, release, collect."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from atex_ci.rundir import RunDir

from .treeutil import (
    DEMO,
    atex,
    barrier_tests,
    interrupt_run,
    make_tree,
    own_results,
    results,
)

DEMO_TESTS = [
    "/tests/basics/environment",
    "/tests/basics/true",
    "/tests/basics/workdir",
    "/tests/broken/errors",
    "/tests/broken/fails",
    "/tests/reporting/data-file",
    "/tests/reporting/subresults",
    "/tests/sleepy/long-1",
    "/tests/sleepy/long-2",
    "/tests/sleepy/medium-1",
    "/tests/sleepy/medium-2",
    "/tests/sleepy/short",
]


def test_dry_run_prints_only_test_names(tmp_path):
    proc = atex("run", "--dry-run", "--fmf-root", str(DEMO))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == DEMO_TESTS


def test_demo_run_report_release(tmp_path):
    run = tmp_path / "run"
    proc = atex("run", "-d", str(run), "--fmf-root", str(DEMO), "--local", "3")
    assert proc.returncode == 1, proc.stderr  # one test fails, one errors: on purpose
    proc_run_stderr = proc.stderr
    own = own_results(run)
    assert sorted(own) == DEMO_TESTS
    assert own["/tests/broken/fails"]["status"] == "fail"
    assert own["/tests/broken/errors"]["status"] == "error"
    assert own["/tests/broken/errors"]["exit_code"] == 2
    passed = [n for n, r in own.items() if r["status"] == "pass"]
    assert len(passed) == 10
    assert {r["machine"] for r in own.values()} <= {"local-1", "local-2", "local-3"}
    # In a log: one line per finished test (the status summaries say what runs).
    assert "start  " not in proc.stderr
    assert "PASS  /tests/sleepy/long-1 on local-" in proc.stderr
    assert "FAIL  /tests/broken/fails on local-" in proc.stderr
    # Sub-results and their files.
    subs = {
        r["name"]: r
        for r in results(run)
        if r["test"] == "/tests/reporting/subresults" and r["name"]
    }
    assert set(subs) == {"/first", "/second"}
    first_log = run / "artifacts" / subs["/first"]["files"][0]
    assert first_log.read_text() == "log of the first check\n"
    # TMT_TEST_DATA collected.
    data_files = own["/tests/reporting/data-file"]["files"]
    assert any(f.endswith("data/measurement.txt") for f in data_files)
    # Auto-reserved slots are released and their work dirs removed.
    machines = json.loads((run / "machines.json").read_text())["machines"]
    assert {m["state"] for m in machines} == {"released"}
    assert not any(Path(m["workdir"]).exists() for m in machines)

    proc = atex(
        "report",
        "-d",
        str(run),
        "--junit",
        str(tmp_path / "j.xml"),
        "--markdown",
        str(tmp_path / "s.md"),
        "--html",
        str(tmp_path / "r.html"),
    )
    assert proc.returncode == 0, proc.stderr
    root = ET.fromstring((tmp_path / "j.xml").read_bytes())
    cases = root.findall(".//testcase")
    assert int(root.get("tests")) == len(cases) == 14  # 12 tests + 2 sub-results
    assert (
        int(root.get("failures")) == len([c for c in cases if c.find("failure") is not None]) == 1
    )
    assert int(root.get("errors")) == len([c for c in cases if c.find("error") is not None]) == 1
    md = (tmp_path / "s.md").read_text()
    assert "expected 4, got 5" in md and "/tests/broken/errors" in md
    # One unit: the run's last line counts what summary.md counts.
    counted = "14 results of 12 tests (2 of them sub-results)"
    assert f"atex-ci: {counted}: 12 pass, 1 fail, 1 error;" in proc_run_stderr
    assert f"**Counted:** {counted}" in md
    assert f"<caption>{counted}</caption>" in (tmp_path / "r.html").read_text()
    # tmt-report-result writes sub-results before the test's own result ends
    # it: they fold into their test all the same.
    proc = atex(
        "report", "-d", str(run), "--junit", str(tmp_path / "f.xml"), "--subresults", "fold"
    )
    assert proc.returncode == 0, proc.stderr
    root = ET.fromstring((tmp_path / "f.xml").read_bytes())
    cases = root.findall(".//testcase")
    assert int(root.get("tests")) == len(cases) == 12
    folded = next(c for c in cases if c.get("name") == "/tests/reporting/subresults")
    out = folded.findtext("system-out") or ""
    assert "sub-result /first: pass" in out and "sub-result /second: pass" in out

    assert atex("release", "-d", str(run)).returncode == 0
    assert atex("release", "-d", str(run)).returncode == 0  # idempotent


def test_exit_codes_map_like_tmt_shell_framework(tmp_path):
    tree = make_tree(
        tmp_path / "tree",
        {
            "zero": {"test": "exit 0"},
            "one": {"test": "exit 1"},
            "two": {"test": "exit 2"},
            "ssh-like": {"test": "exit 255"},
            "signal": {"test": "kill -KILL $$"},
        },
    )
    run = tmp_path / "run"
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree))
    assert proc.returncode == 1
    own = own_results(run)
    assert {n: (r["status"], r["exit_code"]) for n, r in own.items()} == {
        "/tests/zero": ("pass", 0),
        "/tests/one": ("fail", 1),
        "/tests/two": ("error", 2),
        "/tests/ssh-like": ("error", 255),
        "/tests/signal": ("error", 137),
    }
    assert own["/tests/ssh-like"]["reason"] == "test"


def test_timeout_kills_process_group_even_if_it_ignores_sigterm(tmp_path):
    marker = f"atex-timeout-{os.getpid()}-{time.monotonic_ns()}"
    tree = make_tree(
        tmp_path / "tree",
        {
            "stubborn": {
                "test": f"trap '' TERM; (trap '' TERM; exec -a {marker} sleep 300) & sleep 300",
                "duration": "2s",
            },
            "z-after": {"test": "true"},
        },
    )
    run = tmp_path / "run"
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree), "--local", "1")
    own = own_results(run)
    assert own["/tests/stubborn"]["status"] == "error"
    assert own["/tests/stubborn"]["reason"] == "timeout"
    assert "duration" in own["/tests/stubborn"]["note"]
    # A local slot stays in use after a timeout (its process group is gone).
    assert own["/tests/z-after"]["status"] == "pass"
    assert proc.returncode == 1
    leftover = subprocess.run(["pgrep", "-f", marker], capture_output=True)
    assert leftover.returncode == 1, "a process of the timed-out test survived"


def test_output_not_utf8_with_esc_and_nul_keeps_junit_well_formed(tmp_path):
    tree = make_tree(
        tmp_path / "tree",
        {
            "noisy": {
                "test": r"printf 'bad \xff\xfe bytes \x1b[31mred\x1b[0m nul:\x00: end\n'; exit 1"
            },
        },
    )
    run = tmp_path / "run"
    atex("run", "-d", str(run), "--fmf-root", str(tree))
    output = (run / "artifacts" / own_results(run)["/tests/noisy"]["files"][0]).read_bytes()
    assert b"\xff\xfe" in output and b"\x00" in output  # stored as bytes, untouched
    proc = atex("report", "-d", str(run))
    assert proc.returncode == 0, proc.stderr
    root = ET.fromstring((run / "junit.xml").read_bytes())
    text = root.find(".//system-out").text
    assert "red" in text and "\x1b" not in text and "\x00" not in text


def test_output_cap_errors_the_test_and_the_run_goes_on(tmp_path):
    tree = make_tree(
        tmp_path / "tree",
        {
            "chatty": {"test": "head -c 5000000 /dev/zero | tr '\\0' x; echo done"},
            "quiet": {"test": "true"},
        },
    )
    run = tmp_path / "run"
    atex("run", "-d", str(run), "--fmf-root", str(tree), "--local", "1", "--max-output", "1M")
    own = own_results(run)
    assert own["/tests/chatty"]["status"] == "error"
    assert "output exceeded" in own["/tests/chatty"]["note"]
    assert (run / "artifacts" / own["/tests/chatty"]["files"][0]).stat().st_size == 1024 * 1024
    assert own["/tests/quiet"]["status"] == "pass"


def test_unsafe_file_names_stay_inside_the_artifact_dir(tmp_path):
    tree = make_tree(
        tmp_path / "tree",
        {
            "escape": {
                "test": (
                    "echo secret > ../x.log; "
                    "tmt-report-result -o ../x.log /sub PASS; "
                    'ln -s /etc "$TMT_TEST_DATA/etc-link"; '
                    'echo fine > "$TMT_TEST_DATA/ok.txt"'
                )
            },
        },
    )
    run = tmp_path / "run"
    atex("run", "-d", str(run), "--fmf-root", str(tree))
    artifacts = (run / "artifacts").resolve()
    for path in run.rglob("*"):
        if path.is_symlink():
            pytest.fail(f"symlink stored in the run directory: {path}")
    everything = [p.resolve() for p in run.rglob("*") if p.is_file()]
    stored = [p for p in everything if p.is_relative_to(artifacts)]
    assert any(p.name == "ok.txt" for p in stored)
    assert not any(p.name == "passwd" for p in everything)
    assert not (tmp_path / "x.log").exists()


def test_reboot_on_a_local_slot_restarts_the_test(tmp_path):
    tree = make_tree(
        tmp_path / "tree",
        {
            "reboot": {
                "test": (
                    'echo "boot $TMT_REBOOT_COUNT"; '
                    'if [ "$TMT_REBOOT_COUNT" = 0 ]; then tmt-reboot; fi; '
                    "tmt-report-result /after-reboot PASS"
                )
            },
        },
    )
    run = tmp_path / "run"
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree))
    assert proc.returncode == 0, proc.stderr
    all_results = results(run)
    assert [(r["name"], r["status"]) for r in all_results] == [
        ("/after-reboot", "pass"),
        (None, "pass"),
    ]
    output = (run / "artifacts" / all_results[1]["files"][0]).read_text()
    assert "boot 0" in output and "boot 1" in output  # output accumulates across boots


def test_a_finished_run_directory_is_refused_resumed_or_restarted(tmp_path):
    tree = make_tree(tmp_path / "tree", {"a": {"test": "true"}, "b": {"test": "exit 1"}})
    run = tmp_path / "run"
    assert atex("run", "-d", str(run), "--fmf-root", str(tree)).returncode == 1
    first = (run / "results.jsonl").read_bytes()
    output_a = next(r["files"][0] for r in results(run) if r["test"] == "/tests/a")
    # A second run there would mix its attempts with the first one's: refused.
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree))
    assert proc.returncode == 2
    [line] = proc.stderr.splitlines()
    assert line.startswith(f"atex-ci: {run} already holds a run") and "--resume" in line
    assert "--restart" in line
    assert (run / "results.jsonl").read_bytes() == first
    # --resume finishes it: nothing is left to run.
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree), "--resume")
    assert proc.returncode == 1, proc.stderr
    assert (run / "results.jsonl").read_bytes() == first
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree), "--resume", "--restart")
    assert proc.returncode == 2 and "choose one" in proc.stderr
    # --restart starts over: the first run's files are set aside, whole.
    (run / "artifacts" / output_a).write_text("first run's output\n")
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree), "--restart")
    assert proc.returncode == 1, proc.stderr
    assert f"now in {run / 'previous' / '1'}" in proc.stderr
    previous = run / "previous" / "1"
    assert (previous / "results.jsonl").read_bytes() == first
    assert (previous / "artifacts" / output_a).read_text() == "first run's output\n"
    assert (previous / "events.jsonl").is_file() and (previous / "tests.json").is_file()
    assert sorted((r["test"], r["attempt"]) for r in results(run)) == [
        ("/tests/a", 1),
        ("/tests/b", 1),
    ]
    # The report counts the tests once each.
    proc = atex("report", "-d", str(run))
    assert proc.returncode == 0, proc.stderr
    junit = ET.parse(run / "junit.xml").getroot()
    assert junit.get("tests") == "2", ET.tostring(junit)
    assert atex("run", "-d", str(run), "--fmf-root", str(tree), "--restart").returncode == 1
    assert (run / "previous" / "2" / "junit.xml").is_file()
    assert (run / "previous" / "1" / "results.jsonl").read_bytes() == first


def test_interrupt_records_interrupted_and_cleans_up(tmp_path):
    marker = f"atex-int-{os.getpid()}-{time.monotonic_ns()}"
    tree = make_tree(
        tmp_path / "tree",
        {
            "long": {"test": f"exec -a {marker} sleep 300"},
        },
    )
    run = tmp_path / "run"
    returncode, err = interrupt_run(
        run,
        tree,
        lambda: subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode == 0,
    )
    assert returncode == 130, err
    assert "Traceback" not in err
    own = own_results(run)
    assert own["/tests/long"]["status"] == "error"
    assert own["/tests/long"]["reason"] == "interrupted"
    assert subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode == 1
    machines = json.loads((run / "machines.json").read_text())["machines"]
    assert {m["state"] for m in machines} == {"released"}
    assert json.loads((run / "run.json").read_text())["state"] == "interrupted"


def test_collect_merges_runs_and_last_attempt_wins_in_reports(tmp_path):
    tree_fail = make_tree(tmp_path / "t1", {"a": {"test": "exit 1"}})
    tree_pass = make_tree(tmp_path / "t2", {"a": {"test": "true"}, "b": {"test": "true"}})
    atex("run", "-d", str(tmp_path / "r1"), "--fmf-root", str(tree_fail))
    atex("run", "-d", str(tmp_path / "r2"), "--fmf-root", str(tree_pass))
    proc = atex("collect", "-d", str(tmp_path / "all"), str(tmp_path / "r1"), str(tmp_path / "r2"))
    assert proc.returncode == 0, proc.stderr
    merged = results(tmp_path / "all")
    assert sorted((r["test"], r["attempt"], r["status"]) for r in merged) == [
        ("/tests/a", 1, "fail"),
        ("/tests/a", 2, "pass"),
        ("/tests/b", 1, "pass"),
    ]
    # Both attempts keep their own output; nothing was overwritten.
    outputs = {r["attempt"]: r["files"][0] for r in merged if r["test"] == "/tests/a"}
    assert outputs[1] != outputs[2]
    for r in merged:
        for f in r["files"]:
            assert (tmp_path / "all" / "artifacts" / f).exists()
    assert atex("report", "-d", str(tmp_path / "all")).returncode == 0
    root = ET.fromstring((tmp_path / "all" / "junit.xml").read_bytes())
    assert root.get("tests") == "2" and root.get("failures") == "0"  # the later attempt wins


def test_reserve_local_then_run_uses_those_slots(tmp_path):
    # The barrier tests pass only if both reserved slots run side by side.
    tests = {**barrier_tests(2, tmp_path / "barrier"), "t": {"test": "true"}}
    tree = make_tree(tmp_path / "tree", tests)
    run = tmp_path / "run"
    assert atex("reserve", "-d", str(run), "--local", "2").returncode == 0
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree), "--keep-machines")
    assert proc.returncode == 0, proc.stderr
    assert {r["machine"] for r in results(run)} == {"local-1", "local-2"}
    machines = json.loads((run / "machines.json").read_text())["machines"]
    assert {m["state"] for m in machines} == {"ready"}  # kept for another run
    # Another run on the kept machines starts over (the first one's results set aside).
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree), "--restart")
    assert proc.returncode == 0, proc.stderr
    assert {r["machine"] for r in results(run)} == {"local-1", "local-2"}
    assert {r["attempt"] for r in results(run)} == {1}
    machines = json.loads((run / "machines.json").read_text())["machines"]
    assert {m["state"] for m in machines} == {"released"}  # released when done
    events = [json.loads(line)["event"] for line in (run / "events.jsonl").open()]
    assert events.count("machine_released") == 2
    assert atex("release", "-d", str(run)).returncode == 0  # nothing left: skips them
    events = [json.loads(line)["event"] for line in (run / "events.jsonl").open()]
    assert events.count("machine_released") == 2
    machines = json.loads((run / "machines.json").read_text())["machines"]
    assert {m["state"] for m in machines} == {"released"}


def test_duration_adjustments_from_the_control_stream(tmp_path):
    ctl = '>&"$ATEX_TEST_CONTROL"'
    tree = make_tree(
        tmp_path / "tree",
        {
            # Each sleeps past its fmf duration and survives only thanks to the
            # adjustment. The fmf durations leave seconds of slack for a slow
            # start on a busy machine: only the adjustment can save the sleep.
            "set": {"test": f"echo 'duration 60' {ctl}; sleep 6", "duration": "5s"},
            "plus": {"test": f"echo 'duration +60' {ctl}; sleep 6", "duration": "5s"},
            "save-restore": {
                "test": (
                    f"echo 'duration save' {ctl}; echo 'duration 60' {ctl}; "
                    f"echo 'duration save' {ctl}; sleep 6; echo 'duration restore' {ctl}; "
                    f"echo 'duration restore' {ctl}; sleep 0.2"
                ),
                "duration": "5s",
            },
            # And these run out of time because of it (a busy machine only
            # makes them later).
            "minus": {"test": f"echo 'duration -9' {ctl}; sleep 3", "duration": "10s"},
            # The time left at the outer save (about 2 s) comes back at restore,
            # whatever the window set: the sleep after it is too long.
            "restore-charges-after": {
                "test": (
                    f"echo 'duration save' {ctl}; echo 'duration 1h' {ctl}; sleep 0.5; "
                    f"echo 'duration restore' {ctl}; sleep 4"
                ),
                "duration": "2s",
            },
        },
    )
    run = tmp_path / "run"
    atex("run", "-d", str(run), "--fmf-root", str(tree), "--local", "5")
    own = {
        n.removeprefix("/tests/"): (r["status"], r["reason"]) for n, r in own_results(run).items()
    }
    assert own == {
        "set": ("pass", None),
        "plus": ("pass", None),
        "save-restore": ("pass", None),
        "minus": ("error", "timeout"),
        "restore-charges-after": ("error", "timeout"),
    }


def test_result_custom_and_overrides(tmp_path):
    custom = (
        'cat > "$TMT_TEST_DATA/results.yaml" <<EOF\n'
        "- name: /\n  result: pass\n"
        "- name: /part-a\n  result: fail\n  note: [broken]\n"
        "EOF\n"
    )
    tree = make_tree(
        tmp_path / "tree",
        {
            "custom": {"test": custom, "result": "custom"},
            "custom-missing": {"test": "true", "result": "custom"},
            "forced-info": {"test": "exit 1", "result": "info"},
            "xfail-passing": {"test": "true", "result": "xfail"},
        },
    )
    run = tmp_path / "run"
    atex("run", "-d", str(run), "--fmf-root", str(tree))
    got = {(r["test"], r["name"]): r["status"] for r in results(run)}
    assert got == {
        ("/tests/custom", None): "pass",
        ("/tests/custom", "/part-a"): "fail",
        ("/tests/custom-missing", None): "error",
        ("/tests/forced-info", None): "info",
        ("/tests/xfail-passing", None): "fail",
    }


def test_upload_cap_errors_the_test(tmp_path):
    tree = make_tree(
        tmp_path / "tree",
        {
            "big-file": {
                "test": "head -c 3000000 /dev/zero > big.bin; tmt-file-submit -l big.bin; sleep 1"
            },
            "big-data": {"test": 'head -c 3000000 /dev/zero > "$TMT_TEST_DATA/big.bin"'},
            "small": {"test": "echo ok > s.txt; tmt-file-submit -l s.txt"},
        },
    )
    run = tmp_path / "run"
    atex("run", "-d", str(run), "--fmf-root", str(tree), "--max-upload", "1M")
    own = own_results(run)
    for name in ("big-file", "big-data"):
        assert own[f"/tests/{name}"]["status"] == "error", name
        assert "uploaded more than" in own[f"/tests/{name}"]["note"], name
    assert own["/tests/small"]["status"] == "pass"
    for path in (run / "artifacts").rglob("*.bin"):
        assert path.stat().st_size <= 1024 * 1024, path


def test_plan_environment_file_and_recommend(tmp_path):
    tree = make_tree(
        tmp_path / "tree",
        {
            "a-writer": {"test": 'echo "FROM_EARLIER=yes" >> "$TMT_PLAN_ENVIRONMENT_FILE"'},
            "b-reader": {"test": 'test "$FROM_EARLIER" = yes'},
            "recommend": {"test": "true", "recommend": ["no-such-package-atex-ci"]},
        },
    )
    run = tmp_path / "run"
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree), "--local", "1")
    assert proc.returncode == 0, proc.stderr
    assert {r["status"] for r in own_results(run).values()} == {"pass"}


def test_relative_run_dir_as_in_the_readme(tmp_path):
    proc = atex("run", "-d", "demo-run", "--fmf-root", str(DEMO), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(own_results(tmp_path / "demo-run")) == 12
    data = own_results(tmp_path / "demo-run")["/tests/reporting/data-file"]["files"]
    assert any(f.endswith("data/measurement.txt") for f in data)
    proc = atex("report", "-d", "demo-run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "demo-run/junit.xml" in proc.stderr and "demo-run/summary.md" in proc.stderr


def test_shell_framework_options_and_environment_as_tmt(tmp_path):
    # Expectations from tmt 1.78 (local provision): the shell framework runs a
    # test with `set -eo pipefail`, so both of the first two fail.
    tree = make_tree(
        tmp_path / "tree",
        {
            "errexit": {"test": "false; true"},
            "pipefail": {"test": "false | true"},
            "variables": {
                "test": (
                    'test "$REBOOTCOUNT" = 0 && test "$RSTRNT_REBOOTCOUNT" = 0 && '
                    'test "$TMT_TEST_SERIAL_NUMBER" = 3 && test -d "$TMT_TEST_INVOCATION_PATH" && '
                    'test "$TMT_RESTRAINT_COMPATIBLE" = 0 && test -n "$TMT_TEST_ITERATION_ID" && '
                    'test -f "$TMT_TEST_METADATA" && test -d "$TMT_PLAN_DATA" && '
                    'test -f "$TMT_PLAN_ENVIRONMENT_FILE" && '
                    'test "$TMT_TEST_NAME" = /tests/variables'
                )
            },
        },
    )
    run = tmp_path / "run"
    atex("run", "-d", str(run), "--fmf-root", str(tree))
    own = {n: r["status"] for n, r in own_results(run).items()}
    assert own == {"/tests/errexit": "fail", "/tests/pipefail": "fail", "/tests/variables": "pass"}


def test_a_test_that_breaks_file_storage_errors_alone(tmp_path):
    # "a" is first a file, then a directory: the second write cannot succeed.
    clash = (
        "printf x > a; tmt-file-submit -l a; "
        """j='{"name":"/x","files":[{"name":"a/b","length":1}]}'; """
        """printf 'result %d\\n%sy' ${#j} "$j" >&"$ATEX_TEST_CONTROL"; sleep 0.2"""
    )
    tree = make_tree(
        tmp_path / "tree",
        {"clash": {"test": clash}, "sleeper": {"test": "sleep 2"}},
    )
    run = tmp_path / "run"
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree), "--local", "2")
    assert "Traceback" not in proc.stderr
    own = own_results(run)
    assert own["/tests/clash"]["status"] == "error"
    assert "cannot store the file" in own["/tests/clash"]["note"]
    assert own["/tests/sleeper"]["status"] == "pass"
    assert proc.returncode == 1, proc.stderr
    assert json.loads((run / "run.json").read_text())["state"] == "finished"


def test_prepare_failure_is_the_latest_attempt(tmp_path):
    tree = make_tree(tmp_path / "tree", {"ok": {"test": "true"}})
    run = tmp_path / "run"
    make_tree(
        tree, {"ok": {"test": "true"}}, plan={"prepare": {"how": "shell", "script": "exit 1"}}
    )
    args = ("run", "-d", str(run), "--fmf-root", str(tree), "--local", "1")
    proc = atex(*args, "--max-failed-setups", "1")
    assert proc.returncode == 3, proc.stderr
    latest = max(results(run), key=lambda r: r["attempt"])
    assert (latest["attempt"], latest["status"], latest["reason"]) == (1, "error", "infra")
    assert "prepare failed" in latest["note"]
    atex("report", "-d", str(run))
    assert "prepare failed" in (run / "summary.md").read_text()
    # By default the slot is replaced and the test retried there, twice.
    proc = atex(*args, "--restart")
    assert proc.returncode == 3, proc.stderr
    latest = max(results(run), key=lambda r: r["attempt"])
    assert (latest["attempt"], latest["status"], latest["reason"]) == (3, "error", "infra")
    events = [json.loads(line) for line in (run / "events.jsonl").open()]
    replaced = [
        (e["machine"], e["replacement"]) for e in events if e["event"] == "machine_replaced"
    ]
    assert len(replaced) == 2
    assert replaced[1][0] == replaced[0][1]  # the replacement's own replacement


def test_resume_exit_code_counts_earlier_failures(tmp_path):
    tree = make_tree(tmp_path / "tree", {"a-fails": {"test": "false"}, "b-ok": {"test": "true"}})
    run = tmp_path / "run"
    assert atex("run", "-d", str(run), "--fmf-root", str(tree)).returncode == 1
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree), "--resume")
    assert proc.returncode == 1, proc.stderr  # nothing ran, but a failure is on record
    assert "2 results of 2 tests (0 of them sub-results): 1 pass, 1 fail;" in proc.stderr


def test_sigterm_is_an_orderly_interrupt(tmp_path):
    marker = f"atex-term-{os.getpid()}-{time.monotonic_ns()}"
    tree = make_tree(tmp_path / "tree", {"long": {"test": f"exec -a {marker} sleep 300"}})
    run = tmp_path / "run"
    returncode, err = interrupt_run(
        run,
        tree,
        lambda: subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode == 0,
        signal.SIGTERM,
    )
    assert returncode == 143, err  # 128 + SIGTERM, as shells expect
    assert own_results(run)["/tests/long"]["reason"] == "interrupted"
    assert subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode == 1


def test_abort_records_the_tests_it_dropped(tmp_path):
    tree = make_tree(
        tmp_path / "tree",
        {"a": {"test": "tmt-abort"}, "b": {"test": "true"}, "c": {"test": "true"}},
    )
    run = tmp_path / "run"
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree), "--local", "1")
    assert proc.returncode == 1, proc.stderr
    own = own_results(run)
    assert own["/tests/a"]["status"] == "error"
    assert {own[t]["status"] for t in ("/tests/b", "/tests/c")} == {"skip"}
    assert "aborted by /tests/a" in own["/tests/b"]["note"]
    # Final results: --resume does not run them again.
    assert atex("run", "-d", str(run), "--fmf-root", str(tree), "--resume").returncode == 1
    assert len(results(run)) == 3


def atex_with_beakerlib(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``atex-ci ARGS`` in a mount namespace of its own whose /usr/share (an
    overlay: the host's is untouched) has a beakerlib.sh."""
    from atex_ci.execute.frameworks import BEAKERLIB_SH

    upper, work = tmp_path / "usr-share", tmp_path / "usr-share-work"
    (upper / "beakerlib").mkdir(parents=True, exist_ok=True)
    (upper / "beakerlib" / "beakerlib.sh").write_text("# a stand-in\n")
    work.mkdir(exist_ok=True)
    assert BEAKERLIB_SH == "/usr/share/beakerlib/beakerlib.sh"
    script = (
        "mount -t overlay overlay "
        f"-o lowerdir=/usr/share,upperdir={upper},workdir={work} /usr/share && "
        f'exec {sys.executable} -m atex_ci "$@"'
    )
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "bash", "-c", script, "-", *args],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_beakerlib_is_required_as_tmt_does(tmp_path):
    """Without beakerlib.sh the test does not run: its note says what is missing."""
    from atex_ci.execute.frameworks import BEAKERLIB_SH

    if Path(BEAKERLIB_SH).exists():
        pytest.skip("beakerlib is installed on this machine")
    apt = subprocess.run(["apt-cache", "show", "beakerlib"], capture_output=True)
    if shutil.which("dnf") or shutil.which("yum") or apt.returncode == 0:
        pytest.skip("beakerlib can be installed here: this test would install it")
    ran = tmp_path / "ran"
    tree = make_tree(
        tmp_path / "tree",
        {"bl": {"test": f". {BEAKERLIB_SH} || exit 1; touch {ran}", "framework": "beakerlib"}},
    )
    run = tmp_path / "run"
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree), "--local", "1")
    assert proc.returncode == 1, proc.stderr
    own = own_results(run)["/tests/bl"]
    assert (own["status"], own["reason"]) == ("error", "test")
    assert own["note"].startswith(
        f"framework beakerlib: {BEAKERLIB_SH} is missing on local-1 (framework: installing "
        "beakerlib failed: "
    )
    assert not ran.exists()
    # With beakerlib.sh there, the same test runs.
    run = tmp_path / "run2"
    proc = atex_with_beakerlib(tmp_path, "run", "-d", str(run), "--fmf-root", str(tree))
    assert ran.exists(), proc.stderr


def test_beakerlib_framework_verdict_from_test_results(tmp_path):
    # A stand-in for beakerlib's rlJournalEnd: what matters to the runner is
    # the environment it gets and the TestResults file it leaves.
    def journal(result: str, state: str = "complete") -> str:
        return (
            'test "$TESTID" -gt 0 && test -x "$BEAKERLIB_COMMAND_REPORT_RESULT" && '
            '"$BEAKERLIB_COMMAND_REPORT_RESULT" /phase-setup PASS /dev/null && '
            f'printf "TESTRESULT_RESULT_STRING={result}\\nTESTRESULT_STATE={state}\\n" '
            '> "$BEAKERLIB_DIR/TestResults"'
        )

    tree = make_tree(
        tmp_path / "tree",
        {
            "pass": {"test": journal("PASS"), "framework": "beakerlib"},
            "fail-exit-0": {"test": journal("FAIL"), "framework": "beakerlib"},
            "incomplete": {"test": journal("PASS", "incomplete"), "framework": "beakerlib"},
            "no-journal": {"test": "true", "framework": "beakerlib"},
        },
    )
    run = tmp_path / "run"
    # beakerlib must be installed (tmt requires it): here, in the run's own
    # mount namespace, as a file on an overlay of /usr/share.
    atex_with_beakerlib(tmp_path, "run", "-d", str(run), "--fmf-root", str(tree))
    own = {n.removeprefix("/tests/"): r for n, r in own_results(run).items()}
    assert {n: r["status"] for n, r in own.items()} == {
        "pass": "pass",
        "fail-exit-0": "fail",
        "incomplete": "error",
        "no-journal": "error",
    }
    assert "TestResults" in own["no-journal"]["note"]
    assert any(f.endswith("data/TestResults") for f in own["pass"]["files"])
    phases = [r for r in results(run) if r["test"] == "/tests/pass" and r["name"]]
    assert [(r["name"], r["status"]) for r in phases] == [("/phase-setup", "pass")]


def test_many_data_files_are_not_charged_to_the_duration(tmp_path):
    tree = make_tree(
        tmp_path / "tree",
        {
            "many": {
                "test": (
                    'cd "$TMT_TEST_DATA"; mkdir -p sub; '
                    "for i in $(seq 1500); do echo $i > f$i; done; : > sub/empty"
                ),
                # Writing the files takes a fraction of a second; the slack is
                # for a busy machine. Collecting them is never charged to it.
                "duration": "15s",
            },
            "zero-length-upload": {"test": ": > empty.log; tmt-file-submit -l empty.log"},
        },
    )
    run = tmp_path / "run"
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree))
    assert proc.returncode == 0, proc.stderr
    own = own_results(run)
    data = [f for f in own["/tests/many"]["files"] if "/data/" in f]
    assert len(data) == 1501
    assert (
        run / "artifacts" / next(f for f in data if f.endswith("/f1500"))
    ).read_text() == "1500\n"
    assert not any(f.endswith(".tar") for f in own["/tests/many"]["files"])
    for f in own["/tests/many"]["files"] + own["/tests/zero-length-upload"]["files"]:
        assert (run / "artifacts" / f).is_file(), f  # every listed file exists, empty ones too


def test_resume_reruns_a_test_whose_last_attempt_was_interrupted(tmp_path):
    marker = f"atex-resume-{os.getpid()}-{time.monotonic_ns()}"
    # Fails on its first attempt (final), hangs on its rerun (interrupted).
    first = tmp_path / "ran-once"
    slow = f"[ -e {first} ] || {{ touch {first}; exit 1; }}; exec -a {marker} sleep 300"
    tree = make_tree(tmp_path / "tree", {"slow": {"test": slow}})
    run = tmp_path / "run"
    returncode, err = interrupt_run(
        run,
        tree,
        # Only the rerun's `sleep` has the marker as argv[0]; the shell of
        # either attempt has it further in its command line.
        lambda: subprocess.run(["pgrep", "-f", f"^{marker} "], capture_output=True).returncode == 0,
        extra=("--max-reruns", "1"),
    )
    assert returncode == 130, err  # attempt 1 failed, attempt 2 interrupted
    make_tree(tree, {"slow": {"test": "true"}})
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree), "--resume")
    assert proc.returncode == 0, proc.stderr
    assert [(r["attempt"], r["reason"]) for r in results(run)] == [
        (1, None),
        (2, "interrupted"),
        (3, None),
    ]


def test_tiny_output_cap_is_clean(tmp_path):
    tree = make_tree(tmp_path / "tree", {"chatty": {"test": "seq 100000"}})
    run = tmp_path / "run"
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree), "--max-output", "10")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "feed_data" not in proc.stderr
    assert "output exceeded" in own_results(run)["/tests/chatty"]["note"]


def test_metadata_reaches_the_test_whether_sent_or_staged(tmp_path):
    # Small metadata travels with the command that starts the test; metadata
    # too large for a command line is staged at setup. The test sees the
    # same file either way, and the variable that carried it is gone.
    from atex_ci.execute.staging import INLINE_METADATA_MAX

    copy = (
        'cp "$TMT_TEST_METADATA" "$TMT_TEST_DATA/metadata.json"; '
        'env | grep -c ^ATEX_TEST_METADATA_JSON= > "$TMT_TEST_DATA/leaked" || true'
    )
    large = "x" * (INLINE_METADATA_MAX + 1)
    tree = make_tree(
        tmp_path / "tree",
        {
            "sent": {"test": copy, "summary": "small"},
            "staged": {"test": copy, "description": large},
        },
    )
    run = tmp_path / "run"
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree), "--local", "1")
    assert proc.returncode == 0, proc.stderr
    seen = {}
    for name, result in own_results(run).items():
        data = run / "artifacts" / Path(result["files"][0]).parent / "data"
        assert (data / "leaked").read_text() == "0\n"
        text = (data / "metadata.json").read_text()
        assert text.endswith("}\n")  # one newline, as staged
        seen[name] = json.loads(text)
    assert seen["/tests/sent"]["summary"] == "small"
    assert seen["/tests/sent"]["name"] == "/tests/sent"
    assert seen["/tests/staged"]["description"] == large
    assert seen["/tests/staged"]["test"] == copy


# json.dumps of an emoji name, read back by YAML, holds two lone surrogates
# (results.jsonl, being JSON, gives the pair back as the emoji); half of one
# stays a lone surrogate everywhere.
@pytest.mark.parametrize(
    ("name", "spelled", "read_back"),
    [
        ("t\U0001f600", r"/tests/t\ud83d\ude00", "/tests/t\U0001f600"),
        ("t\ud83d", r"/tests/t\ud83d", "/tests/t\ud83d"),
    ],
    ids=["escaped-emoji", "lone-surrogate"],
)
def test_a_name_no_machine_can_hold_is_that_tests_error_and_exits_1(
    tmp_path, name, spelled, read_back
):
    tree = make_tree(tmp_path / "tree", {name: {"test": "true"}, "ok": {"test": "true"}})
    dry = atex("run", "--dry-run", "--fmf-root", str(tree))
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == ["/tests/ok", spelled]
    run = tmp_path / "run"
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree), "--local", "1")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    records = [r for r in results(run) if r["test"] != "/tests/ok"]
    assert len(records) == 1  # run once: not queued again, not an infrastructure failure
    (record,) = records
    assert record["test"] == read_back
    assert (record["status"], record["reason"], record["attempt"]) == ("error", "test", 1)
    assert record["note"].startswith(f"the test's name '{spelled}' cannot reach the machine")
    assert "U+D83D is a lone UTF-16 surrogate" in record["note"]
    assert own_results(run)["/tests/ok"]["status"] == "pass"
    events = [json.loads(line)["event"] for line in (run / "events.jsonl").open()]
    for event in ("machine_broken", "test_requeued", "internal_error", "machine_replaced"):
        assert event not in events
    machines = RunDir(run).read_machines()
    assert [(m.id, str(m.state)) for m in machines] == [("local-1", "released")]
    last = proc.stderr.rstrip().splitlines()[-1]
    assert last.startswith(
        "atex-ci: 2 results of 2 tests (0 of them sub-results): 1 pass, 1 error;"
    )
    assert f"ERROR {spelled} on local-1" in proc.stderr
    report = atex("report", "-d", str(run), "--html", str(run / "report.html"))
    assert report.returncode == 0, report.stderr
    junit = ET.parse(run / "junit.xml").getroot()
    names = [case.get("name") for case in junit.iter("testcase")]
    shown = read_back.replace("\ud83d", r"\ud83d")  # a lone surrogate is shown escaped
    assert sorted(names) == ["/tests/ok", shown]


def test_dry_run_escapes_names_like_run_and_report(tmp_path):
    hostile = {
        "esc\x1b[31mred": "/tests/esc\\x1b[31mred",
        "bell\x07": "/tests/bell\\x07",
        "cr\rover": "/tests/cr\\rover",
        "x\n::add-mask::secret": "/tests/x\\n::add-mask::secret",
        "back\\slash": "/tests/back\\\\slash",
    }
    tree = make_tree(tmp_path / "tree", {name: {"test": "true"} for name in hostile})
    proc = atex("run", "--dry-run", "--fmf-root", str(tree), "-c", "distro=fedora")
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.splitlines()) == sorted(hostile.values())
    assert not any(line.startswith("::") for line in proc.stdout.splitlines())
    for raw in ("\x1b", "\x07", "\r"):
        assert raw not in proc.stdout


# tmt 1.78 (`tmt run -a provision -h local`) on these two tests writes, in
# execute/results.yaml, one result per entry named test + entry, none for the
# test itself, each entry's own duration kept and none made up:
#   /tests/custom-subs-only/first   pass  duration 00:00:03
#   /tests/custom-subs-only/second  fail  duration null
#   /tests/custom-subs-pass/first   pass  duration null
# and counts them as tests ("2 tests passed, 1 test failed").
CUSTOM_SUBS_ONLY = (
    "cat > \"$TMT_TEST_DATA/results.yaml\" <<'EOF'\n"
    "- name: /first\n  result: pass\n  duration: '00:00:03'\n"
    "- name: /second\n  result: fail\n"
    "EOF\n"
)
CUSTOM_SUBS_PASS = 'echo \'[{"name": "/first", "result": "pass"}]\' > "$TMT_TEST_DATA/results.json"'


def test_custom_results_without_own_entry_run_once_as_tmt(tmp_path):
    tree = make_tree(
        tmp_path / "tree",
        {
            "custom-subs-only": {"test": CUSTOM_SUBS_ONLY, "result": "custom"},
            "custom-subs-pass": {"test": CUSTOM_SUBS_PASS, "result": "custom"},
            "ok": {"test": "true"},
        },
    )
    run = tmp_path / "run"
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree), "--local", "1")
    assert proc.returncode == 1, proc.stderr  # /second failed
    got = {(r["test"], r["name"]): (r["status"], r["attempt"]) for r in results(run)}
    assert got == {
        ("/tests/custom-subs-only", "/first"): ("pass", 1),
        ("/tests/custom-subs-only", "/second"): ("fail", 1),
        ("/tests/custom-subs-pass", "/first"): ("pass", 1),
        ("/tests/ok", None): ("pass", 1),
    }
    durations = {(r["test"], r["name"]): r["duration"] for r in results(run)}
    assert durations[("/tests/custom-subs-only", "/first")] == 3.0
    events = [json.loads(line)["event"] for line in (run / "events.jsonl").open()]
    assert "test_requeued" not in events and "machine_broken" not in events
    # Each test once in the progress, the total never grows.
    lines = [line for line in proc.stderr.splitlines() if "[" in line and "/3]" in line]
    assert len(lines) == 3, proc.stderr
    assert "/4]" not in proc.stderr
    assert any(line.startswith("atex-ci: FAIL  /tests/custom-subs-only on") for line in lines)
    assert any(line.startswith("atex-ci: PASS  /tests/custom-subs-pass on") for line in lines)
    last = proc.stderr.rstrip().splitlines()[-1]
    assert last.startswith("atex-ci: 4 results of 3 tests (3 of them sub-results): 3 pass, 1 fail;")
    report = atex("report", "-d", str(run), "--junit", str(run / "junit.xml"))
    assert report.returncode == 0, report.stderr
    cases = {c.get("name"): c for c in ET.parse(run / "junit.xml").getroot().iter("testcase")}
    assert set(cases) == {
        "/tests/custom-subs-only/first",
        "/tests/custom-subs-only/second",
        "/tests/custom-subs-pass/first",
        "/tests/ok",
    }
    assert cases["/tests/custom-subs-only/first"].get("time") == "3.000"
    # --resume: a test with sub-results only runs again (its records cannot
    # tell a whole run from one cut short), the others do not.
    again = atex("run", "-d", str(run), "--fmf-root", str(tree), "--local", "1", "--resume")
    assert again.returncode == 1, again.stderr
    assert "/tests/ok on" not in again.stderr


def test_a_sub_result_keeps_its_own_duration(tmp_path):
    send = (
        'j=\'{"name": "/timed", "status": "pass", "duration": 1.25}\'; '
        'printf "result %d\\n%s" "${#j}" "$j" >&"$ATEX_TEST_CONTROL"; '
        "tmt-report-result /untimed PASS"
    )
    tree = make_tree(tmp_path / "tree", {"subs": {"test": send}})
    run = tmp_path / "run"
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree))
    assert proc.returncode == 0, proc.stderr
    by_name = {r["name"]: r for r in results(run)}
    assert by_name["/timed"]["duration"] == 1.25
    assert "duration" not in by_name["/timed"].get("extra", {})
    # Without one of its own, a sub-result carries its test's (which reports omit).
    assert by_name["/untimed"]["duration"] == by_name[None]["duration"]
    assert atex("report", "-d", str(run)).returncode == 0
    cases = {c.get("name"): c for c in ET.parse(run / "junit.xml").getroot().iter("testcase")}
    assert cases["/tests/subs/timed"].get("time") == "1.250"
    assert cases["/tests/subs/untimed"].get("time") == "0.000"


def test_an_internal_error_while_preparing_is_each_tests_error_not_a_crash(tmp_path):
    # A plan variable no command line can hold fails atex-ci itself in the
    # prepare phase: each test of the plan ends as its error, the run goes on.
    tree = make_tree(
        tmp_path / "tree",
        {"a": {"test": "true"}, "b": {"test": "true"}},
        plan={
            "environment": {"X": "v\ud83d"},
            "prepare": [{"how": "shell", "script": "echo $X"}],
        },
    )
    run = tmp_path / "run"
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree), "--local", "1")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    own = own_results(run)
    assert sorted(own) == ["/tests/a", "/tests/b"]
    for result in own.values():
        assert (result["status"], result["reason"], result["attempt"]) == ("error", "test", 1)
        assert result["note"].startswith("internal error in atex-ci preparing its plan: ")
    events = [json.loads(line) for line in (run / "events.jsonl").open()]
    kinds = [e["event"] for e in events]
    assert kinds.count("internal_error") == 2 and "machine_broken" not in kinds
    assert all("Traceback" in e["traceback"] for e in events if e["event"] == "internal_error")


def test_a_config_error_quoting_a_hostile_name_prints_it_escaped(tmp_path):
    tree = make_tree(tmp_path / "tree", {"t\ud83d\x1b[31m": {"test": "true", "result": "bogus"}})
    proc = atex("run", "--dry-run", "--fmf-root", str(tree))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "\x1b" not in proc.stderr
    assert "test /tests/t\\ud83d\\x1b[31m (tests/main.fmf): 'result' must be" in proc.stderr


def test_an_unknown_key_is_warned_about_once_whatever_the_platforms(tmp_path):
    tree = make_tree(tmp_path / "tree", {"typo": {"test": "true", "durration": "1m"}})
    contexts = ["-c", "f41:distro=fedora-41", "-c", "c9s:distro=centos-stream-9"]
    proc = atex("run", "--dry-run", "--fmf-root", str(tree), *contexts)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "/tests/typo",
        "# platform c9s",
        "/tests/typo",
        "# platform f41",
        "/tests/typo",
    ]
    assert proc.stderr.count("unknown key 'durration' is ignored") == 1, proc.stderr
