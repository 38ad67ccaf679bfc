"""Helpers to build small fmf trees on disk and to run the atex-ci CLI for real."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "examples" / "demo"


def make_tree(
    root: Path, tests: dict[str, dict[str, Any]], plan: dict[str, Any] | None = None
) -> Path:
    """An fmf tree with one plan (/plan) and the given tests under /tests."""
    (root / ".fmf").mkdir(parents=True, exist_ok=True)
    (root / ".fmf" / "version").write_text("1\n")
    plan_data: dict[str, Any] = {"discover": {"how": "fmf"}, "execute": {"how": "tmt"}}
    plan_data.update(plan or {})
    (root / "plan.fmf").write_text(json.dumps(plan_data, indent=2))
    (root / "tests").mkdir(exist_ok=True)
    nodes = {f"/{name.strip('/')}": data for name, data in tests.items()}
    (root / "tests" / "main.fmf").write_text(json.dumps(nodes, indent=2))
    return root


def fails_once(marker: Path) -> str:
    """A test command that fails on its first run and passes on every later one."""
    return f"[ -e {marker} ] || {{ touch {marker}; exit 1; }}"


def barrier_tests(count: int, directory: Path) -> dict[str, dict[str, Any]]:
    """``count`` tests that each wait until all ``count`` of them run at once.

    They pass only if ``count`` machines run them side by side, which shows
    that every machine takes work without depending on how fast any of them
    is. ``directory`` must be visible to every machine: test hosts see the
    controller's /dev/shm (use a fresh directory there and remove it after);
    local slots see everything. A machine that never comes makes them fail
    after two minutes instead of hanging.
    """
    wait = (
        f'd={directory}; mkdir -p "$d"; touch "$d/$TMT_TEST_NAME_SAFE"; '
        f'for i in $(seq 2400); do [ "$(ls "$d" | wc -l)" -ge {count} ] && exit 0; '
        "sleep 0.05; done; "
        "echo 'the other machines never ran their part' >&2; exit 1"
    )
    return {
        f"barrier-{n}": {"test": wait.replace("$TMT_TEST_NAME_SAFE", f"barrier-{n}")}
        for n in range(1, count + 1)
    }


@contextlib.contextmanager
def shared_dir() -> Iterator[Path]:
    """A fresh directory in /dev/shm, which local slots and test hosts all see."""
    path = Path(tempfile.mkdtemp(prefix="atex-ci-barrier-", dir="/dev/shm"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def atex(
    *args: str,
    cwd: Path | None = None,
    timeout: float = 240,
    env: dict[str, str] | None = None,
    **kw: Any,
) -> subprocess.CompletedProcess[str]:
    """Run ``atex-ci ARGS`` as a real process; returns the completed process (text).

    ``env`` replaces the environment (default: this process's).
    """
    env = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "atex_ci", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
        **kw,
    )


def reserve_hosts(run: Path, hosts: list[Any], platform: str | None = None) -> None:
    """``atex-ci reserve`` of test hosts (tests/hosts.py), with the first one's key."""
    args = ["reserve", "-d", str(run), "--key", str(hosts[0].key_path)]
    for host in hosts:
        args += ["--host", f"root@{host.address}"]
    if platform:
        args += ["--platform", platform]
    proc = atex(*args)
    assert proc.returncode == 0, proc.stderr


def results(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def own_results(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Each test's own result (no sub-results), by test name; the last attempt wins."""
    return {r["test"]: r for r in results(run_dir) if r["name"] is None}


def statuses(own: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The status of each own result (see own_results), by test name without /tests/."""
    return {name.removeprefix("/tests/"): r["status"] for name, r in own.items()}


def signal_when(
    args: list[str],
    ready: Callable[[subprocess.Popen[str]], None],
    sig: signal.Signals = signal.SIGTERM,
    env: dict[str, str] | None = None,
) -> tuple[int, str]:
    """Start ``atex-ci ARGS``, wait for ``ready(proc)`` to return, send ``sig``;
    (exit code, stderr).

    The process is killed if it outlives the test, so nothing is left running.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "atex_ci", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        ready(proc)
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err


def wait_while_running(
    proc: subprocess.Popen[str], condition: Callable[[], bool], what: str, timeout: float = 60
) -> None:
    """Poll ``condition()`` until it is true; fails saying ``what`` did not
    happen after ``timeout`` seconds, or with the stderr of ``proc`` if it ends first."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.1)


def interrupt_run(
    run_dir: Path,
    tree: Path,
    started: Callable[[], bool],
    sig: signal.Signals = signal.SIGINT,
    extra: tuple[str, ...] = (),
) -> tuple[int, str]:
    """Start ``atex-ci run`` (with ``extra`` options), send ``sig`` once
    ``started()`` is true; (exit code, stderr)."""
    return signal_when(
        ["run", "-d", str(run_dir), "--fmf-root", str(tree), *extra],
        lambda proc: wait_while_running(proc, started, "the test never started"),
        sig,
    )


def git_repo(path: Path, files: dict[str, str], tag: str | None = None) -> str:
    """A real git repository at ``path`` with ``files`` committed on branch main
    (and ``tag``, if given); returns the commit hash. Call again to add a commit."""
    path.mkdir(parents=True, exist_ok=True)
    git = ["git", "-c", "user.name=atex", "-c", "user.email=atex@example.invalid", "-C", str(path)]
    if not (path / ".git").exists():
        subprocess.run([*git, "init", "-q", "-b", "main"], check=True)
    for name, content in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "commit"], check=True)
    if tag:
        subprocess.run([*git, "tag", "-f", tag], check=True, capture_output=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True)
    return head.stdout.strip()


def git_redirect_env(base: str, local_dir: Path) -> dict[str, str]:
    """Environment that makes git fetch ``base``... URLs from ``local_dir``
    (``url.<file URL>.insteadOf``), so a https URL in a tree stays offline."""
    return {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": f"url.file://{local_dir}/.insteadOf",
        "GIT_CONFIG_VALUE_0": base,
    }


def cmdline(pid: int) -> str:
    """A process's command line, arguments joined by spaces ("" once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def kill_where(hosts: list[Any], command: str, killed: list[Any]) -> threading.Thread:
    """Power off (``host.kill()``) whichever test host first runs ``command``,
    in a thread that the caller joins; the host is appended to ``killed``."""

    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            for host in hosts:
                if any(cmdline(p) == command for p in host.processes()):
                    host.kill()
                    killed.append(host)
                    return
            time.sleep(0.05)

    thread = threading.Thread(target=watch)
    thread.start()
    return thread
