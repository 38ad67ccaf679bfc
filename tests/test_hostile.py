"""A hostile test author against atex-ci: every channel a test has, misused.

Each test here runs real tests (tests/fixtures/hostile.py) through the real
CLI on local slots or real sshd hosts, and checks what the issue "one test can
never hurt the run" promises: the run completes, the hostile test ends as its
own error with a precise note, every other test keeps its result, the
controller's peak memory stays bounded (measured on the atex-ci process
itself), nothing is written outside the run directory, and nothing the run
started is left running.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from .treeutil import REPO, atex, make_tree, own_results, reserve_hosts, results

HOSTILE = REPO / "tests" / "fixtures" / "hostile.py"

#: Peak RSS allowed to the controller in these runs. A plain run of a few
#: tests peaks near 60 MB; the hostile inputs below would each cost hundreds
#: of MB if anything were gathered in memory (200 MB of TMT_TEST_DATA, a
#: results.yaml expanding to gigabytes, 20 MB of YAML).
MAX_CONTROLLER_RSS_KB = 200 * 1024

#: Runs atex-ci's CLI and records the process's own peak RSS when it exits.
_MEASURED = (
    "import atexit, os, resource, runpy\n"
    "path = os.environ.pop('HOSTILE_RSS_FILE')\n"
    "def record():\n"
    "    with open(path, 'w') as f:\n"
    "        f.write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))\n"
    "atexit.register(record)\n"
    "runpy.run_module('atex_ci', run_name='__main__', alter_sys=True)\n"
)


# Directories a test host does not share with this machine (tests/hosts.py).
_HIDDEN_ON_HOSTS = ("/tmp/", "/var/tmp/", "/run/", "/usr/local/sbin/")


def host_python() -> str:
    """A Python that local slots and test hosts both see (hostile.py needs only its stdlib).

    This process's own may live in a venv under /tmp (a CI checkout there), which
    a test host hides behind its private /tmp: then the venv's base interpreter.
    """
    for candidate in (sys.executable, str(Path(sys.base_prefix) / "bin" / "python3")):
        paths = (os.path.abspath(candidate), os.path.realpath(candidate))
        if not any(path.startswith(_HIDDEN_ON_HOSTS) for path in paths):
            return candidate
    return "/usr/bin/python3"


def hostile(action: str, *args: str, **fmf: Any) -> dict[str, Any]:
    """An fmf test node running one hostile action."""
    command = " ".join([host_python(), '"$TMT_TREE/hostile.py"', action, *args])
    return {"test": command, **fmf}


def hostile_tree(root: Path, tests: dict[str, dict[str, Any]], normal: int = 3) -> Path:
    """A tree with the hostile tests and ``normal`` well-behaved ones (ok-N)."""
    nodes = dict(tests)
    for n in range(normal):
        nodes[f"ok-{n}"] = {"test": f"echo fine {n}; tmt-report-result /check PASS"}
    make_tree(root, nodes)
    shutil.copy(HOSTILE, root / "hostile.py")
    return root


def run_measured(tmp_path: Path, *args: str, timeout: float = 300) -> tuple[int, str, int]:
    """``atex-ci ARGS``; returns (exit code, stderr, the controller's peak RSS in KiB)."""
    rss = tmp_path / "controller-rss"
    env = {**os.environ, "HOSTILE_RSS_FILE": str(rss)}
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURED, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    peak = int(rss.read_text())
    rss.unlink()
    return proc.returncode, proc.stderr, peak


def processes_of(run: Path) -> list[int]:
    """PIDs of local processes started by this run (their ATEX_CI_OWNER names its work dir)."""
    needle = f"ATEX_CI_OWNER={run.resolve()}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if needle in environ:
            found.append(int(entry))
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def sleepers(tag: str) -> list[int]:
    """Local PIDs of `sleep TAG*` processes (the daemons a hostile test leaves)."""
    return [
        int(p)
        for p in os.listdir("/proc")
        if p.isdigit() and cmdline(int(p)).startswith(f"sleep {tag}")
    ]


def assert_contained(tmp_path: Path, outside: Path, expected: set[str]) -> None:
    """Nothing escaped: the decoy target is absent and tmp_path holds only what we made."""
    assert not outside.exists(), f"a test wrote outside its run directory: {outside}"
    assert {p.name for p in tmp_path.iterdir()} == expected


def assert_valid_results(run: Path) -> list[dict[str, Any]]:
    """results.jsonl is valid UTF-8 JSON, line by line."""
    raw = (run / "results.jsonl").read_bytes()
    text = raw.decode("utf-8")  # raises on invalid UTF-8
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def assert_normal_tests_pass(run: Path, count: int = 3) -> None:
    own = own_results(run)
    for n in range(count):
        assert own[f"/tests/ok-{n}"]["status"] == "pass", own[f"/tests/ok-{n}"]
    subs = {r["test"] for r in results(run) if r["name"] == "/check" and r["status"] == "pass"}
    assert {f"/tests/ok-{n}" for n in range(count)} <= subs


# -- class 1: what a test sends can only end as that test's error -----------------------


def control_stream_abuse(outside: Path) -> dict[str, dict[str, Any]]:
    """The hostile tests that abuse the control stream (``outside``: where
    escaping names would land)."""
    env = {"environment": {"HOSTILE_OUTSIDE": str(outside)}}
    return {
        "surrogate": hostile("surrogate"),
        "testout-file-parent": hostile("testout-file-parent"),
        "long-component": hostile("long-component"),
        "long-file-name": hostile("long-file-name"),
        "escaping-names": hostile("escaping-names", **env),
        "garbage": hostile("garbage"),
        "second-exitcode": hostile("second-exitcode"),
        "deep-result": hostile("deep-result"),
    }


def test_control_stream_abuse_ends_as_each_tests_own_error(tmp_path):
    outside = tmp_path / "outside"
    tree = hostile_tree(tmp_path / "tree", control_stream_abuse(outside))
    run = tmp_path / "run"
    code, err, peak = run_measured(
        tmp_path, "run", "-d", str(run), "--fmf-root", str(tree), "--local", "2"
    )
    assert code == 1, err
    assert "Traceback" not in err
    assert peak < MAX_CONTROLLER_RSS_KB
    records = assert_valid_results(run)
    own = own_results(run)
    assert_normal_tests_pass(run)

    # A lone surrogate is kept (as a \u escape in the file); the test reported pass.
    assert own["/tests/surrogate"]["status"] == "pass"
    assert own["/tests/surrogate"]["note"] == "bad \ud800 note"
    assert own["/tests/surrogate"]["extra"] == {"k\udfff": "\udc00"}
    assert any(r["name"] == "/sub\ud800" for r in records)

    def error(test: str, *words: str) -> None:
        result = own[f"/tests/{test}"]
        assert (result["status"], result["reason"]) == ("error", "test"), result
        for word in words:
            assert word in result["note"], result["note"]

    error("testout-file-parent", "result '/b'", "testout", "plain/out.txt")
    error("long-component", "result '/long'", "testout", "longer than 255 bytes")
    error("long-file-name", "protocol violation", "longer than 255 bytes")
    # Names that climb out are made relative (docs/test-control.md): stored inside.
    assert own["/tests/escaping-names"]["status"] == "pass"
    stored = [f for r in records if r["test"] == "/tests/escaping-names" for f in r["files"]]
    assert any(f.endswith(f"{outside.relative_to('/')}/a") for f in stored), stored
    error("garbage", "protocol violation", "invalid JSON")
    error("second-exitcode", "second 'exitcode'")
    error("deep-result", "protocol violation", "nested deeper than 64 levels")
    # The symlink and the FIFO in TMT_TEST_DATA were not unpacked.
    data = run / "artifacts" / "default" / "plan" / "tests" / "escaping-names" / "1" / "data"
    assert not (data / "link").exists() and not (data / "fifo").exists()
    assert processes_of(run) == []
    assert_contained(tmp_path, outside, {"tree", "run"})


def test_forged_exitcode_does_not_escape_the_duration(tmp_path):
    from atex_ci.execute.executor import Limits
    from atex_ci.runner import RunOptions, run_tests

    tree = hostile_tree(
        tmp_path / "tree", {"forged": hostile("forged-exitcode", duration="1s")}, normal=1
    )
    run = tmp_path / "run"
    # A grace of 1 s instead of 30 s keeps this test short; the rule is the same.
    options = RunOptions(limits=Limits(exit_grace=1.0), local_slots=2)
    summary = asyncio.run(run_tests(run, tree, options=options))
    own = own_results(run)
    forged = own["/tests/forged"]
    assert (forged["status"], forged["reason"]) == ("error", "timeout"), forged
    assert "ran past its duration" in forged["note"]
    assert own["/tests/ok-0"]["status"] == "pass"
    assert summary.exit_code == 1
    assert processes_of(run) == []


def test_a_holder_that_escaped_the_reaper_costs_a_grace_period_only(tmp_path):
    from atex_ci.execute.executor import Limits
    from atex_ci.runner import RunOptions, run_tests

    tag = f"5{os.getpid() % 1000:03d}"
    tree = hostile_tree(
        tmp_path / "tree", {"holder": hostile("escaped-holder", tag, duration="1h")}, normal=1
    )
    run = tmp_path / "run"
    options = RunOptions(limits=Limits(exit_grace=1.0), local_slots=2)
    try:
        summary = asyncio.run(run_tests(run, tree, options=options))
        own = own_results(run)
        holder = own["/tests/holder"]
        assert (holder["status"], holder["reason"]) == ("error", "test"), holder
        assert "kept its output open" in holder["note"]
        assert any(f.endswith("data/some.txt") for f in holder["files"])  # the data came
        assert own["/tests/ok-0"]["status"] == "pass"
        assert summary.exit_code == 1
        # The documented limit: a process without the variable is not found.
        assert len(sleepers(tag)) == 1
    finally:
        for pid in sleepers(tag):
            os.kill(pid, signal.SIGKILL)


# -- class 2: small or large input, bounded memory ---------------------------------------


def test_results_file_bombs_are_refused_with_bounded_memory(tmp_path):
    tree = hostile_tree(
        tmp_path / "tree",
        {
            "alias-bomb": hostile("alias-bomb", result="custom"),
            "huge-results": hostile("huge-results-yaml", result="custom"),
            "many-partials": hostile("many-partials"),
            "deep-json": hostile("deep-results-json", result="custom"),
            "deep-yaml": hostile("deep-results-yaml", result="custom"),
        },
    )
    run = tmp_path / "run"
    code, err, peak = run_measured(
        tmp_path, "run", "-d", str(run), "--fmf-root", str(tree), "--local", "2"
    )
    assert code == 1, err
    assert peak < MAX_CONTROLLER_RSS_KB, f"controller peaked at {peak} KiB"
    own = own_results(run)
    assert_normal_tests_pass(run)
    bomb = own["/tests/alias-bomb"]
    assert (bomb["status"], bomb["reason"]) == ("error", "test")
    assert "results.yaml" in bomb["note"] and "characters of text" in bomb["note"]
    huge = own["/tests/huge-results"]
    assert (huge["status"], huge["reason"]) == ("error", "test")
    assert "larger than" in huge["note"]
    # Nesting is bounded in both formats, the line named where the format has one.
    for name, words in (
        ("json", "results.json: cannot parse: line 1: nested deeper than 64"),
        ("yaml", "results.yaml: cannot parse: nested deeper than 64"),
    ):
        deep = own[f"/tests/deep-{name}"]
        assert (deep["status"], deep["reason"]) == ("error", "test"), deep
        assert words in deep["note"], deep["note"]
    # 30,000 partial results merged into one (linear work), list appended.
    grow = next(r for r in results(run) if r["name"] == "/grow")
    assert grow["status"] == "pass" and grow["extra"]["items"] == list(range(30000))
    # No result line is huge.
    assert max(len(line) for line in (run / "results.jsonl").read_bytes().splitlines()) < 2**20


def test_timed_out_tests_data_streams_to_disk_on_a_host(tmp_path, ssh_host):
    tree = hostile_tree(
        tmp_path / "tree",
        {"big-data": hostile("big-data", "200", duration="1s")},
        normal=0,
    )
    # The data is written before the test sleeps; a 1 s duration can cut it
    # short, so give the writing time and let the sleep run out instead.
    tree_fmf = json.loads((tree / "tests" / "main.fmf").read_text())
    tree_fmf["/big-data"]["duration"] = "20s"
    (tree / "tests" / "main.fmf").write_text(json.dumps(tree_fmf))
    run = tmp_path / "run"
    reserve_hosts(run, [ssh_host])
    code, err, peak = run_measured(tmp_path, "run", "-d", str(run), "--fmf-root", str(tree))
    assert code == 1, err
    own = own_results(run)
    big = own["/tests/big-data"]
    assert big["reason"] == "timeout", big
    data = run / "artifacts" / "default" / "plan" / "tests" / "big-data" / "1" / "data" / "big.bin"
    assert data.stat().st_size == 200 * 1024 * 1024
    assert peak < MAX_CONTROLLER_RSS_KB, f"controller peaked at {peak} KiB"
    assert big["machine"].startswith("default-127.")
    assert atex("release", "-d", str(run)).returncode == 0


# -- class 3: caps count what is written ---------------------------------------------------


def test_caps_count_bytes_written_and_files_created(tmp_path):
    tree = hostile_tree(
        tmp_path / "tree",
        {"sparse": hostile("sparse-archive"), "many-files": hostile("many-files")},
    )
    run = tmp_path / "run"
    code, err, _peak = run_measured(
        tmp_path,
        "run", "-d", str(run), "--fmf-root", str(tree), "--local", "2", "--max-upload", "20M",
    )  # fmt: skip
    assert code == 1, err
    own = own_results(run)
    assert_normal_tests_pass(run)
    base = run / "artifacts" / "default" / "plan" / "tests"
    sparse = own["/tests/sparse"]
    assert (sparse["status"], sparse["reason"]) == ("error", "test")
    assert "more than the limit of 20971520 bytes once unpacked" in sparse["note"]
    written = sum(p.stat().st_blocks * 512 for p in (base / "sparse" / "1").rglob("*"))
    assert written <= 21 * 1024 * 1024, written
    assert not (base / "sparse" / "1" / ".atex-test-data.tar").exists()
    many = own["/tests/many-files"]
    assert (many["status"], many["reason"]) == ("error", "test")
    assert "more than the limit of 10000 files" in many["note"]
    assert sum(1 for _ in (base / "many-files" / "1").rglob("*")) <= 10_010
    assert not (base / "many-files" / "1" / ".atex-test-data.tar").exists()


# -- class 5: nothing of the run outlives it ------------------------------------------------


def test_daemons_and_held_control_stream_end_with_the_test(tmp_path):
    tag = f"9{os.getpid() % 1000:03d}"
    tree = hostile_tree(
        tmp_path / "tree", {"daemons": hostile("daemons", tag, duration="10m")}, normal=2
    )
    run = tmp_path / "run"
    proc = atex("run", "-d", str(run), "--fmf-root", str(tree), "--local", "2")
    assert proc.returncode == 0, proc.stderr
    own = own_results(run)
    # The daemon that holds the control stream open did not stall the test
    # until a timeout: it was ended with the test, which passed.
    assert own["/tests/daemons"]["status"] == "pass", own["/tests/daemons"]
    assert sleepers(tag) == []
    assert processes_of(run) == []


def _wait_for(predicate, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.05)


def _start_run(run: Path, tree: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "atex_ci", "run", "-d", str(run), "--fmf-root", str(tree), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _kill9(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def test_kill9_then_release_ends_everything_on_local_slots(tmp_path):
    tag = f"8{os.getpid() % 1000:03d}"
    tree = make_tree(
        tmp_path / "tree",
        {
            "stuck": {
                "test": f"echo first-line; setsid sleep {tag}1 >/dev/null 2>&1 & sleep {tag}2",
            }
        },
    )
    run = tmp_path / "run"
    assert atex("reserve", "-d", str(run), "--local", "1").returncode == 0
    proc = _start_run(run, tree)
    output = run / "artifacts" / "default" / "plan" / "tests" / "stuck" / "1" / "output.txt"
    try:
        # Output reaches output.txt as it comes (not when a buffer fills).
        _wait_for(lambda: output.is_file() and b"first-line" in output.read_bytes(), "output")
        _wait_for(lambda: len(sleepers(tag)) == 2, "both sleeps running")
    finally:
        _kill9(proc)
    assert b"first-line" in output.read_bytes()
    assert len(sleepers(tag)) == 2  # the controller is gone, the test is not
    release = atex("release", "-d", str(run))
    assert release.returncode == 0, release.stderr
    assert sleepers(tag) == []
    assert processes_of(run) == []


def test_kill9_then_resume_and_release_end_everything_on_a_host(tmp_path, ssh_host):
    tag = f"7{os.getpid() % 1000:03d}"
    tree = make_tree(tmp_path / "tree", {"stuck": {"test": "true"}})
    run = tmp_path / "run"
    reserve_hosts(run, [ssh_host])

    def on_host() -> list[int]:
        return [p for p in ssh_host.processes() if cmdline(p).startswith(f"sleep {tag}")]

    # Long enough that only the kill ends it.
    long_tree = make_tree(
        tmp_path / "tree-long",
        {"stuck": {"test": f"setsid sleep {tag}1 >/dev/null 2>&1 & sleep {tag}2"}},
    )
    controller = _start_run(run, long_tree)
    try:
        _wait_for(lambda: len(on_host()) == 2, "both sleeps running on the host")
    finally:
        _kill9(controller)
    before = set(on_host())
    assert len(before) == 2
    # --resume starts by ending what the killed run left on the machine, then
    # runs the test again (this time it ends at once).
    resumed = atex("run", "-d", str(run), "--fmf-root", str(tree), "--resume", "--keep-machines")
    assert resumed.returncode == 0, resumed.stderr
    assert own_results(run)["/tests/stuck"]["status"] == "pass"
    assert on_host() == []
    # And release after another kill -9 ends it too (a new run on the kept machine).
    controller = _start_run(run, long_tree, "--restart")
    try:
        _wait_for(lambda: len(on_host()) == 2, "both sleeps running again")
    finally:
        _kill9(controller)
    assert len(on_host()) == 2
    release = atex("release", "-d", str(run))
    assert release.returncode == 0, release.stderr
    assert on_host() == []


# -- everything at once -------------------------------------------------------------------

#: What the note of each hostile test that ends as an error says, by test name.
HOSTILE_NOTES = {
    "testout-file-parent": "testout",
    "long-component": "longer than 255 bytes",
    "long-file-name": "longer than 255 bytes",
    "garbage": "invalid JSON",
    "deep-result": "nested deeper than 64 levels",
    "second-exitcode": "second 'exitcode'",
    "alias-bomb": "characters of text",
    "huge-results": "larger than",
    "sparse": "once unpacked",
    "many-files": "10000 files",
    "big-output": "output exceeded the limit",
    "shim-big-file": "uploaded more than the limit of 33554432 bytes",
    "timeout": "ran past its duration",
}


def assert_error_notes(own: dict[str, dict[str, Any]], names: Iterable[str]) -> None:
    """Each named test (under /tests) is an error whose note says what it did."""
    for name in names:
        result = own[f"/tests/{name}"]
        assert result["status"] == "error" and HOSTILE_NOTES[name] in result["note"], result


@pytest.mark.parametrize("with_host", [False, True], ids=["local", "local+host"])
def test_one_run_with_every_hostile_test_at_once(tmp_path, request, with_host):
    outside = tmp_path / "outside"
    tag = f"6{os.getpid() % 1000:03d}"
    hostile_tests = {
        **control_stream_abuse(outside),
        "alias-bomb": hostile("alias-bomb", result="custom"),
        "huge-results": hostile("huge-results-yaml", result="custom"),
        "many-partials": hostile("many-partials"),
        "sparse": hostile("sparse-archive"),
        "many-files": hostile("many-files"),
        "daemons": hostile("daemons", tag),
        "big-output": {"test": "head -c 5M /dev/zero; echo after"},
        # The tmt shims are a channel too: odd bytes in names, a file over the cap.
        "shim-names": {
            "test": "tmt-report-result \"/$(printf 'a\\377\\001b')\" PASS -o /etc/hostname"
        },
        "shim-big-file": {"test": "head -c 40M /dev/zero > big; tmt-file-submit -l big"},
        "timeout": {"test": f"setsid sleep {tag}9 & sleep {tag}8", "duration": "2s"},
    }
    tree = hostile_tree(tmp_path / "tree", hostile_tests, normal=4)
    run = tmp_path / "run"
    args = ["run", "-d", str(run), "--fmf-root", str(tree), "--max-upload", "32M"]
    args += ["--max-output", "1M"]
    expected = {"tree", "run"}
    if with_host:
        host = request.getfixturevalue("ssh_host")
        reserve_hosts(run, [host])
        assert atex("reserve", "-d", str(run), "--local", "2").returncode == 0
    else:
        args += ["--local", "3"]
    code, err, peak = run_measured(tmp_path, *args)
    assert code == 1, err
    assert "Traceback" not in err
    assert peak < MAX_CONTROLLER_RSS_KB, f"controller peaked at {peak} KiB"
    assert_valid_results(run)
    own = own_results(run)
    assert set(own) == {f"/tests/{n}" for n in [*hostile_tests, "ok-0", "ok-1", "ok-2", "ok-3"]}
    assert_normal_tests_pass(run, 4)
    # Each hostile test has its own result saying what it did.
    assert_error_notes(own, HOSTILE_NOTES)
    assert own["/tests/surrogate"]["status"] == "pass"
    assert own["/tests/escaping-names"]["status"] == "pass"
    assert own["/tests/many-partials"]["status"] == "pass"
    assert own["/tests/daemons"]["status"] == "pass"
    assert own["/tests/shim-names"]["status"] == "pass"
    shim = [r for r in results(run) if r["test"] == "/tests/shim-names" and r["name"]]
    # Result names are kept (invalid UTF-8 as U+FFFD); only file names are cleaned.
    assert [(r["name"], r["status"]) for r in shim] == [("/a\ufffd\x01b", "pass")]
    assert shim[0]["files"][0].endswith("/hostname")
    if with_host:
        assert atex("release", "-d", str(run)).returncode == 0
        assert [p for p in host.processes() if cmdline(p).startswith(f"sleep {tag}")] == []
    assert sleepers(tag) == []
    assert processes_of(run) == []
    assert_contained(tmp_path, outside, expected)


# -- class 6: what a test on a local slot can read of the controller ----------------------


@pytest.mark.parametrize("user", ["same user as root", "same user, not root"])
def test_a_local_slot_test_cannot_read_the_controllers_token(tmp_path, user):
    """The test looks where it can: its environment, /proc/<pid>/environ of every
    ancestor up to the controller, and the controller's memory (docs/test-limits.md)."""
    as_root = user == "same user as root"
    if os.geteuid() != 0:
        pytest.skip("needs root: to run as root, or to switch to another user")
    token = f"tf-token-{uuid.uuid4().hex}"
    # A directory the controller's user may use (tmp_path is root's alone).
    base = Path(tempfile.mkdtemp(prefix="atex-ci-secrets-", dir="/tmp"))
    try:
        tree = hostile_tree(
            base / "tree", {"read-secrets": hostile("read-secrets", token[::-1])}, 1
        )
        run = base / "run"
        env = {**os.environ, "TESTING_FARM_API_TOKEN": token, "XDG_CACHE_HOME": str(base)}
        command = [sys.executable, "-m", "atex_ci", "run", "-d", str(run), "--fmf-root",
                   str(tree), "--local", "1"]  # fmt: skip
        if not as_root:
            os.chmod(base, 0o777)
            command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == 0, proc.stderr
        seen = own_results(run)["/tests/read-secrets"]["extra"]
        # It found the controller among its ancestors; the token is in no environment.
        assert seen["controller"] is True
        assert seen["found"] == []
        if as_root:
            # The documented residual risk: root may read any process's memory.
            assert seen["memory"] == "found"
        else:
            # Not dumpable: /proc/<controller>/environ and mem are root's.
            assert seen["memory"] == "denied"
            assert "environ" in seen["denied"]
        for path in run.rglob("*"):
            assert not path.is_file() or token.encode() not in path.read_bytes(), path
    finally:
        shutil.rmtree(base, ignore_errors=True)
