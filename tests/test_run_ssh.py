"""End to end on real sshd test hosts, through the real CLI (reserve --host, run, release)."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from atex_ci.rundir import RunDir

from .treeutil import (
    DEMO,
    atex,
    barrier_tests,
    interrupt_run,
    kill_where,
    make_tree,
    own_results,
    reserve_hosts,
    results,
    shared_dir,
    statuses,
)


def run_tree(run: Path, tree: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return atex("run", "-d", str(run), "--fmf-root", str(tree), *extra)


def test_demo_on_two_hosts(tmp_path, ssh_hosts):
    hosts = ssh_hosts(2)
    run = tmp_path / "run"
    reserve_hosts(run, hosts)
    machines = json.loads((run / "machines.json").read_text())["machines"]
    assert [m["host_key"] for m in machines] == [h.host_key for h in hosts]
    proc = run_tree(run, DEMO)
    assert proc.returncode == 1, proc.stderr
    own = own_results(run)
    assert len(own) == 12
    assert own["/tests/broken/fails"]["status"] == "fail"
    assert sum(r["status"] == "pass" for r in own.values()) == 10
    assert {r["machine"] for r in own.values()} <= {m["id"] for m in machines}
    proc = atex("release", "-d", str(run))
    assert proc.returncode == 0, proc.stderr
    machines = json.loads((run / "machines.json").read_text())["machines"]
    assert {m["state"] for m in machines} == {"released"}


def test_features_on_a_host(tmp_path, ssh_host):
    finish_dir = Path(tempfile.mkdtemp(prefix="atex-finish-", dir=Path.home()))
    try:
        tree = make_tree(
            tmp_path / "tree",
            {
                "exit-255": {"test": "exit 255"},
                "hostname": {"test": f'test "$(hostname)" = {ssh_host.hostname}'},
                "prepared": {"test": "test -f /tmp/prepared-by-plan"},
                "require-present": {"test": "true", "require": ["bash"]},
                "require-missing": {"test": "true", "require": ["no-such-package-atex-ci"]},
                "tty": {"test": "test -t 0 && test -t 1", "tty": True},
                "no-tty": {"test": "! test -t 0"},
                "xfail": {"test": "exit 1", "result": "xfail"},
                "data": {"test": 'mkdir -p "$TMT_TEST_DATA/sub"; echo 7 > "$TMT_TEST_DATA/sub/n"'},
                "duration-extended": {
                    "test": 'echo "duration +60" >&"$ATEX_TEST_CONTROL"; sleep 6',
                    "duration": "5s",
                },
                "subresults": {
                    "test": "rstrnt-report-result /a PASS; rhts-report-result /b FAIL /dev/null"
                },
            },
            plan={
                "prepare": [{"how": "shell", "script": "touch /tmp/prepared-by-plan"}],
                "finish": [{"how": "shell", "script": f"hostname > {finish_dir}/finished"}],
            },
        )
        run = tmp_path / "run"
        reserve_hosts(run, [ssh_host])
        proc = run_tree(run, tree)
        own = own_results(run)
        assert statuses(own) == {
            "exit-255": "error",
            "hostname": "pass",
            "prepared": "pass",
            "require-present": "pass",
            "require-missing": "error",
            "tty": "pass",
            "no-tty": "pass",
            "xfail": "pass",
            "data": "pass",
            "duration-extended": "pass",
            "subresults": "fail",
        }, proc.stderr
        assert own["/tests/exit-255"]["exit_code"] == 255
        assert "no-such-package-atex-ci" in own["/tests/require-missing"]["note"]
        data = [f for f in own["/tests/data"]["files"] if f.endswith("data/sub/n")]
        assert data and (run / "artifacts" / data[0]).read_text() == "7\n"
        assert (finish_dir / "finished").read_text().strip() == ssh_host.hostname
    finally:
        shutil.rmtree(finish_dir, ignore_errors=True)


def test_reboot_mid_test(tmp_path, ssh_host):
    tree = make_tree(
        tmp_path / "tree",
        {
            "reboot": {
                "test": (
                    'echo "boot $TMT_REBOOT_COUNT"; '
                    "tmt-report-result /before-$TMT_REBOOT_COUNT PASS; "
                    'if [ "$TMT_REBOOT_COUNT" -lt 2 ]; then tmt-reboot; fi; '
                    'test -z "$(ls /tmp)"'  # /tmp is a tmpfs: empty after a real reboot
                ),
                "duration": "2m",
            },
            "z-after": {"test": "true"},
        },
    )
    run = tmp_path / "run"
    reserve_hosts(run, [ssh_host])
    boots = ssh_host.boot_count
    proc = run_tree(run, tree)
    assert proc.returncode == 0, proc.stderr
    assert ssh_host.boot_count == boots + 2
    got = [(r["test"], r["name"], r["status"]) for r in results(run)]
    assert got == [
        ("/tests/reboot", "/before-0", "pass"),
        ("/tests/reboot", "/before-1", "pass"),
        ("/tests/reboot", "/before-2", "pass"),
        ("/tests/reboot", None, "pass"),
        ("/tests/z-after", None, "pass"),
    ]
    output = (run / "artifacts" / own_results(run)["/tests/reboot"]["files"][0]).read_text()
    assert "boot 0" in output and "boot 1" in output and "boot 2" in output


def test_machine_killed_mid_test_is_run_again_on_another(tmp_path, ssh_hosts):
    hosts = ssh_hosts(2)
    with shared_dir() as shared:
        # The victim hangs on its first run only; run again, it passes.
        victim = f"if [ -e {shared}/ran ]; then exit 0; fi; touch {shared}/ran; sleep 60"
        tree = make_tree(
            tmp_path / "tree",
            {"a-victim": {"test": victim}, **{f"b-{n}": {"test": "true"} for n in range(6)}},
        )
        run = tmp_path / "run"
        reserve_hosts(run, hosts)
        killed: list = []
        # Power off whichever host the victim test landed on, mid-test.
        killer = kill_where(hosts, "sleep 60", killed)
        try:
            proc = run_tree(run, tree)
        finally:
            killer.join()
    assert killed, "the victim test never started"
    doomed = killed[0]
    survivor = next(h for h in hosts if h is not doomed)
    attempts = [r for r in results(run) if r["test"] == "/tests/a-victim" and r["name"] is None]
    assert [(r["attempt"], r["status"], r["reason"]) for r in attempts] == [
        (1, "error", "infra"),
        (2, "pass", None),
    ]
    assert doomed.address in attempts[0]["machine"]
    assert survivor.address in attempts[1]["machine"]
    own = own_results(run)
    assert all(own[f"/tests/b-{n}"]["status"] == "pass" for n in range(6))
    # The loss is recorded, but the test passed in the end: the run passes.
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    requeued = [e for e in events if e["event"] == "test_requeued"]
    assert [e["test"] for e in requeued] == ["/tests/a-victim"]
    assert any(e["event"] == "machine_broken" for e in events)
    machines = json.loads((run / "machines.json").read_text())["machines"]
    states = {m["host"]: m["state"] for m in machines}
    assert states[doomed.address] == "broken"
    assert states[survivor.address] == "released"  # as soon as nothing was left for it
    # Static hosts have no stand-in: the survivor took the retry.
    assert not [e for e in events if e["event"] == "machine_replaced"]


def test_one_timeout_does_not_cost_a_static_fleet(tmp_path, ssh_hosts):
    """Two --host machines, a test that hangs past its duration, one rerun:
    each timed-out host is checked and kept, so every quick test still runs."""
    first, second = ssh_hosts(2)
    tree = make_tree(
        tmp_path / "tree",
        {
            "hangs": {"test": "sleep 300", "duration": "3s"},
            **{f"quick-{n}": {"test": "true"} for n in range(7)},
        },
    )
    run = tmp_path / "run"
    proc = atex(
        "run", "-d", str(run), "--fmf-root", str(tree), "--key", str(first.key_path),
        "--host", f"root@{first.address}", "--host", f"root@{second.address}",
        "--max-reruns", "1",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    own = own_results(run)
    assert own["/tests/hangs"]["status"] == "error"
    assert own["/tests/hangs"]["reason"] == "timeout"
    assert own["/tests/hangs"]["attempt"] == 2  # the rerun ran, and timed out as well
    assert {n: own[f"/tests/quick-{n}"]["status"] for n in range(7)} == dict.fromkeys(
        range(7), "pass"
    )
    assert "no usable machine" not in proc.stderr
    assert "is healthy after /tests/hangs" in proc.stderr
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    checks = [e for e in events if e["event"] == "machine_checked"]
    assert [c["healthy"] for c in checks] == [True, True]
    assert not [e for e in events if e["event"] == "machine_broken"]
    machines = json.loads((run / "machines.json").read_text())["machines"]
    assert {m["state"] for m in machines} == {"released"}
    for host in (first, second):
        assert not [p for p in host.processes() if _cmdline(p).startswith("sleep 300")]


def test_timeout_that_breaks_the_machine_discards_it(tmp_path, ssh_hosts):
    """A timed-out test that removed the run's work directory fails the health
    check: that host is discarded, the other one runs the rest."""
    first, second = ssh_hosts(2)
    tree = make_tree(
        tmp_path / "tree",
        {
            "wrecks": {"test": 'rm -rf "$TMT_TREE"; sleep 300', "duration": "2s"},
            **{f"quick-{n}": {"test": "true"} for n in range(3)},
        },
    )
    run = tmp_path / "run"
    reserve_hosts(run, [first, second])
    proc = run_tree(run, tree)
    assert proc.returncode == 1, proc.stderr
    own = own_results(run)
    assert (own["/tests/wrecks"]["status"], own["/tests/wrecks"]["reason"]) == ("error", "timeout")
    assert all(own[f"/tests/quick-{n}"]["status"] == "pass" for n in range(3))
    assert "failed its health check: work directory" in proc.stderr
    machines = json.loads((run / "machines.json").read_text())["machines"]
    states = {m["id"]: m["state"] for m in machines}
    assert states[own["/tests/wrecks"]["machine"]] == "broken"
    assert sorted(states.values()) == ["broken", "released"]


def test_timeout_with_sigterm_ignored_keeps_a_healthy_machine(tmp_path, ssh_hosts):
    first, second = ssh_hosts(2)
    tree = make_tree(
        tmp_path / "tree",
        {
            "stubborn": {
                "test": (
                    'echo "got this far" > "$TMT_TEST_DATA/progress.txt"; '
                    "trap '' TERM; (trap '' TERM; sleep 300) & sleep 300"
                ),
                "duration": "2s",
            },
            **{f"z-{n}": {"test": "true"} for n in range(4)},
        },
    )
    run = tmp_path / "run"
    reserve_hosts(run, [first, second])
    proc = run_tree(run, tree)
    own = own_results(run)
    assert own["/tests/stubborn"]["status"] == "error"
    assert own["/tests/stubborn"]["reason"] == "timeout"
    # What the test left in TMT_TEST_DATA before it hung is still collected.
    progress = [f for f in own["/tests/stubborn"]["files"] if f.endswith("data/progress.txt")]
    assert progress and (run / "artifacts" / progress[0]).read_text() == "got this far\n"
    assert all(own[f"/tests/z-{n}"]["status"] == "pass" for n in range(4))
    assert proc.returncode == 1, proc.stderr
    timed_out_on = own["/tests/stubborn"]["machine"]
    states = {
        m["id"]: m["state"] for m in json.loads((run / "machines.json").read_text())["machines"]
    }
    # Its leftovers were killed, so the health check kept it.
    assert states[timed_out_on] == "released"
    # The stubborn processes are gone from that host.
    host = first if timed_out_on.endswith(f"{first.address}-22") else second
    assert not [p for p in host.processes() if _cmdline(p).startswith("sleep 300")]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def test_big_output_and_protocol_violations(tmp_path, ssh_host):
    tree = make_tree(
        tmp_path / "tree",
        {
            "big-output": {"test": "head -c 100000000 /dev/zero | tr '\\0' 'x'"},
            "bad-word": {"test": 'echo "bogus" >&"$ATEX_TEST_CONTROL"; sleep 5'},
            "eof-mid-data": {"test": 'printf "result 50\\n{\\"status\\"" >&"$ATEX_TEST_CONTROL"'},
            "endless-line": {
                "test": "head -c 100000 /dev/zero | tr '\\0' a >&\"$ATEX_TEST_CONTROL\"; sleep 5"
            },
            "lying-length": {
                "test": 'printf "result 5\\n{\\"status\\": \\"pass\\"}\\n" >&"$ATEX_TEST_CONTROL"'
            },
            "z-fine": {"test": "true"},
        },
    )
    run = tmp_path / "run"
    reserve_hosts(run, [ssh_host])
    run_tree(run, tree)
    own = own_results(run)
    big = own["/tests/big-output"]
    assert big["status"] == "pass"
    assert (run / "artifacts" / big["files"][0]).stat().st_size == 100_000_000
    for name in ("bad-word", "eof-mid-data", "endless-line", "lying-length"):
        assert own[f"/tests/{name}"]["status"] == "error", name
        assert own[f"/tests/{name}"]["reason"] == "test", name
        assert "protocol" in own[f"/tests/{name}"]["note"], name
    assert own["/tests/z-fine"]["status"] == "pass"


def test_abort_stops_the_rest_of_the_plan(tmp_path, ssh_host):
    tree = make_tree(
        tmp_path / "tree",
        {"a": {"test": "true"}, "b": {"test": "tmt-abort; sleep 10"}, "c": {"test": "true"}},
    )
    run = tmp_path / "run"
    reserve_hosts(run, [ssh_host])
    proc = run_tree(run, tree)
    own = own_results(run)
    assert own["/tests/a"]["status"] == "pass"
    assert own["/tests/b"]["status"] == "error"
    assert own["/tests/c"]["status"] == "skip"  # not run: the plan was aborted
    assert proc.returncode == 1, proc.stderr


def test_host_key_change_is_refused(tmp_path, ssh_hosts):
    real, other = ssh_hosts(2)
    run = tmp_path / "run"
    reserve_hosts(run, [real])
    data = json.loads((run / "machines.json").read_text())
    data["machines"][0]["host_key"] = other.host_key  # as if the machine was replaced
    (run / "machines.json").write_text(json.dumps(data))
    tree = make_tree(tmp_path / "tree", {"a": {"test": "true"}})
    proc = run_tree(run, tree)
    assert proc.returncode == 3, proc.stderr
    assert "host key" in proc.stderr.lower()
    assert own_results(run)["/tests/a"]["reason"] == "infra"


def test_unreachable_host_is_one_line_error(tmp_path, ssh_host):
    run = tmp_path / "run"
    proc = atex(
        "reserve",
        "-d",
        str(run),
        "--key",
        str(ssh_host.key_path),
        "--host",
        f"root@{ssh_host.address}",
        "--host",
        "root@127.0.0.254:2",
    )
    assert proc.returncode == 3
    *retries, last = [line for line in proc.stderr.splitlines() if line.strip()]
    # One line for the error, after one line per retry as it happened.
    assert last.startswith("atex-ci: host root@127.0.0.254:2 is unreachable: "), proc.stderr
    assert [line.split(" failed ")[0] for line in retries] == [
        f"atex-ci: root@127.0.0.254:2: connect attempt {n} of 4" for n in (1, 2, 3)
    ], proc.stderr
    assert "Traceback" not in proc.stderr


def test_interrupt_kills_remote_test(tmp_path, ssh_host):
    tree = make_tree(tmp_path / "tree", {"long": {"test": "touch /run/long-started; sleep 300"}})
    run = tmp_path / "run"
    reserve_hosts(run, [ssh_host])
    returncode, err = interrupt_run(
        run, tree, lambda: any(_cmdline(p) == "sleep 300" for p in ssh_host.processes())
    )
    assert returncode == 130, err
    assert own_results(run)["/tests/long"]["reason"] == "interrupted"
    assert not any(_cmdline(p) == "sleep 300" for p in ssh_host.processes())


def test_one_host_reserved_twice_gets_two_workers(tmp_path, ssh_host):
    run = tmp_path / "run"
    reserve_hosts(run, [ssh_host, ssh_host])
    machines = json.loads((run / "machines.json").read_text())["machines"]
    ids = [m["id"] for m in machines]
    assert len(set(ids)) == 2, ids
    with shared_dir() as barrier:
        tests = {**barrier_tests(2, barrier), **{f"t{n}": {"test": "true"} for n in range(4)}}
        tree = make_tree(tmp_path / "tree", tests)
        proc = run_tree(run, tree)
    assert proc.returncode == 0, proc.stderr
    own = own_results(run)
    assert {r["status"] for r in own.values()} == {"pass"}
    assert {r["machine"] for r in own.values()} == set(ids)


def test_unusable_key_is_one_line_error(tmp_path, ssh_host):
    bad_key = tmp_path / "not-a-key"
    bad_key.write_text("hello\n")
    proc = atex(
        "reserve",
        "-d",
        str(tmp_path / "run"),
        "--key",
        str(bad_key),
        "--host",
        f"root@{ssh_host.address}",
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "not-a-key" in lines[0] and "Traceback" not in proc.stderr


def test_release_removes_the_work_directory(tmp_path, ssh_host):
    run = tmp_path / "run"
    reserve_hosts(run, [ssh_host])
    tree = make_tree(tmp_path / "tree", {"a": {"test": "true"}})
    assert run_tree(run, tree, "--keep-machines").returncode == 0
    run_id = json.loads((run / "run.json").read_text())["id"]
    work = Path(f"/proc/{ssh_host.init_pid}/root/var/tmp/atex-ci/{run_id}")
    assert work.is_dir()  # kept for another run
    assert atex("release", "-d", str(run)).returncode == 0
    assert not work.exists()
    # Without --keep-machines, the run releases the host itself when it is done.
    run = tmp_path / "run2"
    reserve_hosts(run, [ssh_host])
    assert run_tree(run, tree).returncode == 0
    run_id = json.loads((run / "run.json").read_text())["id"]
    assert not Path(f"/proc/{ssh_host.init_pid}/root/var/tmp/atex-ci/{run_id}").exists()


def test_local_slots_and_hosts_share_one_queue(tmp_path, ssh_host):
    run = tmp_path / "run"
    assert atex("reserve", "-d", str(run), "--local", "1").returncode == 0
    reserve_hosts(run, [ssh_host])
    with shared_dir() as barrier:
        tests = {**barrier_tests(2, barrier), **{f"t{n}": {"test": "true"} for n in range(4)}}
        tree = make_tree(tmp_path / "tree", tests)
        proc = run_tree(run, tree)
    assert proc.returncode == 0, proc.stderr
    own = results(run)
    assert len(own) == 6  # each test once: one platform
    assert {r["platform"] for r in own} == {"default"}
    assert len({r["machine"] for r in own}) == 2


def test_platforms_each_run_every_test(tmp_path, ssh_hosts):
    first, second = ssh_hosts(2)
    run = tmp_path / "run"
    reserve_hosts(run, [first], platform="fedora-41")
    reserve_hosts(run, [second], platform="centos-stream-9")
    tree = make_tree(tmp_path / "tree", {"a": {"test": "hostname"}, "b": {"test": "true"}})
    assert run_tree(run, tree).returncode == 0
    got = sorted((r["platform"], r["test"]) for r in results(run))
    assert got == [
        ("centos-stream-9", "/tests/a"),
        ("centos-stream-9", "/tests/b"),
        ("fedora-41", "/tests/a"),
        ("fedora-41", "/tests/b"),
    ]


def test_second_interrupt_exits_at_once_and_keeps_results(tmp_path, ssh_host):
    tree = make_tree(tmp_path / "tree", {"long": {"test": "sleep 300"}})
    run = tmp_path / "run"
    reserve_hosts(run, [ssh_host])
    proc = subprocess.Popen(
        [sys.executable, "-m", "atex_ci", "run", "-d", str(run), "--fmf-root", str(tree)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not any(_cmdline(p) == "sleep 300" for p in ssh_host.processes()):
            assert time.monotonic() < deadline, "the test never started"
            time.sleep(0.1)
        # A hung machine: the orderly clean-up (killing the remote test) cannot finish.
        ssh_host.freeze()
        proc.send_signal(signal.SIGINT)
        while "cleaning up" not in (line := proc.stderr.readline()):
            assert line, "no word about cleaning up"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        ssh_host.thaw()
    assert proc.returncode == 130
    assert "results so far are in" not in err  # it did not wait for the clean-up
    assert own_results(run)["/tests/long"]["reason"] == "interrupted"


def test_connection_lost_between_tests_is_reestablished(tmp_path, ssh_host):
    from atex_ci.discover import discover
    from atex_ci.orchestrator import Orchestrator
    from atex_ci.run_options import RunOptions
    from atex_ci.schedule import Scheduler

    class RebootAfterFirst(Scheduler):
        """Reboots the machine from outside once the first test is done."""

        def test_finished(self, machine, job, outcome):
            if job.test.name == "/tests/a":
                ssh_host.reboot()  # returns once the host answers again
            return super().test_finished(machine, job, outcome)

    tree = make_tree(tmp_path / "tree", {"a": {"test": "true"}, "b": {"test": "true"}})
    run = tmp_path / "run"
    reserve_hosts(run, [ssh_host])
    rundir = RunDir.open(run)
    options = RunOptions(scheduler_factory=RebootAfterFirst)
    boots = ssh_host.boot_count
    with rundir.locked():
        summary = asyncio.run(Orchestrator(rundir, tree, discover(tree), options).run())
    assert ssh_host.boot_count == boots + 1
    assert [(r.test, str(r.status)) for r in summary.results] == [
        ("/tests/a", "pass"),
        ("/tests/b", "pass"),
    ]
    assert summary.exit_code == 0


def test_failing_reboot_command_errors_the_test_and_keeps_the_machine(tmp_path, ssh_host):
    tree = make_tree(
        tmp_path / "tree",
        {
            "a-bad-reboot": {"test": "tmt-reboot -c false", "duration": "10m"},
            "b-next": {"test": "true"},
            "c-tty-reboot": {
                "test": 'echo "boot $TMT_REBOOT_COUNT"; [ "$TMT_REBOOT_COUNT" = 1 ] || tmt-reboot',
                "tty": True,
            },
        },
    )
    run = tmp_path / "run"
    reserve_hosts(run, [ssh_host])
    boots = ssh_host.boot_count
    proc = run_tree(run, tree)
    own = own_results(run)
    bad = own["/tests/a-bad-reboot"]
    assert (bad["status"], bad["reason"]) == ("error", "test"), bad
    assert "reboot command failed (exit 1)" in bad["note"]
    assert own["/tests/b-next"]["status"] == "pass"  # the machine stayed in use
    tty = own["/tests/c-tty-reboot"]
    assert tty["status"] == "pass", tty
    output = (run / "artifacts" / tty["files"][0]).read_text()
    assert "boot 0" in output and "boot 1" in output  # nothing lost before the reboot
    assert ssh_host.boot_count == boots + 1
    assert proc.returncode == 1, proc.stderr


def test_each_platform_has_its_own_context_and_machines(tmp_path, ssh_hosts):
    fedora, centos = ssh_hosts(2)
    run = tmp_path / "run"
    reserve_hosts(run, [fedora], platform="f41")
    reserve_hosts(run, [centos], platform="c9s")
    tree = make_tree(
        tmp_path / "tree",
        {
            "common": {"test": 'echo "$DISTRO_SEEN"', "environment": {"DISTRO_SEEN": "other"}},
            "fedora-only": {
                "test": "true",
                "enabled": False,
                "adjust": [{"when": "distro == fedora", "enabled": True}],
            },
        },
    )
    # The shared context goes to both platforms; each adds its own.
    proc = run_tree(run, tree, "-c", "arch=x86_64", "-c", "f41:distro=fedora-41",
                    "-c", "c9s:distro=centos-stream-9")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    got = sorted((r["platform"], r["test"], r["machine"]) for r in results(run))
    assert [(p, t) for p, t, _ in got] == [
        ("c9s", "/tests/common"),
        ("f41", "/tests/common"),
        ("f41", "/tests/fedora-only"),
    ]
    for platform, _test, machine in got:
        host = fedora if platform == "f41" else centos
        assert host.address in machine
    tests = json.loads((run / "tests.json").read_text())
    assert json.dumps(tests).count("fedora-only") == 1
    # A context for a platform with no machines is a one-line error (and a
    # refused --restart sets nothing aside).
    proc = run_tree(run, tree, "-c", "rhel9:distro=rhel-9", "--restart")
    assert proc.returncode == 2 and "rhel9" in proc.stderr and "--platform" in proc.stderr
    assert (run / "results.jsonl").is_file() and not (run / "previous").exists()
    # --dry-run shows each platform's selection.
    proc = atex("run", "--dry-run", "--fmf-root", str(tree), "-c", "f41:distro=fedora-41")
    assert proc.stdout.splitlines() == ["/tests/common", "# platform f41", "/tests/common",
                                        "/tests/fedora-only"]  # fmt: skip


def test_a_name_no_machine_can_hold_errors_alone_on_a_host(tmp_path, ssh_host):
    """json.dumps of an emoji, read back by YAML: the test errors at once and
    its host keeps taking tests (no retry as an infrastructure failure)."""
    tree = make_tree(
        tmp_path / "tree",
        {"t\U0001f600": {"test": "true"}, "a-ok": {"test": "true"}, "z-ok": {"test": "true"}},
    )
    run = tmp_path / "run"
    reserve_hosts(run, [ssh_host])
    proc = run_tree(run, tree)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    got = [(r["test"], r["status"], r["reason"], r["attempt"]) for r in results(run)]
    assert sorted(got) == [
        ("/tests/a-ok", "pass", None, 1),
        ("/tests/t\U0001f600", "error", "test", 1),
        ("/tests/z-ok", "pass", None, 1),
    ]
    kinds = [json.loads(line)["event"] for line in (run / "events.jsonl").open()]
    assert "machine_broken" not in kinds and "test_requeued" not in kinds
    assert atex("release", "-d", str(run)).returncode == 0
