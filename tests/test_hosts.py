"""The test hosts themselves (tests/hosts.py), checked with the OpenSSH client.

The plain ``ssh`` client is used on purpose: these tests must not depend on
the transport they are later used to test.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import StartHosts
from tests.hosts import (
    LOCK_DIR,
    HostPool,
    SSHHost,
    missing_requirements,
    port_answers,
    process_start_time,
)

REPO = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def address_lock(address: str) -> Iterator[bool]:
    """Hold the test-host lock of ``address`` if no other process holds it; say whether."""
    LOCK_DIR.mkdir(exist_ok=True)
    fd = os.open(LOCK_DIR / address, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
        else:
            yield True
    finally:
        os.close(fd)


def ssh(host: SSHHost, command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run ``command`` on ``host`` with the OpenSSH client, checking its host key."""
    known_hosts = host.state_dir.parent / f"known_hosts-{host.address}"
    known_hosts.write_text(f"{host.address} {host.host_key}\n")
    return subprocess.run(
        [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            str(host.key_path),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={known_hosts}",
            "-o",
            "ConnectTimeout=5",
            "-p",
            str(host.port),
            f"{host.user}@{host.address}",
            command,
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ssh_ok(host: SSHHost, command: str) -> str:
    result = ssh(host, command)
    assert result.returncode == 0, f"{command!r} on {host}: {result.stderr}\n{host.log_tail()}"
    return result.stdout


def test_hosts_are_separate_machines(ssh_hosts: StartHosts) -> None:
    first, second = ssh_hosts(2)
    assert first.address != second.address
    assert first.address.startswith("127.") and second.address.startswith("127.")
    assert ssh_ok(first, "hostname").strip() == first.hostname
    assert ssh_ok(second, "hostname").strip() == second.hostname
    assert first.hostname != second.hostname

    name = f"atex-marker-{uuid.uuid4().hex}"
    ssh_ok(first, f"touch /tmp/{name} /var/tmp/{name}")
    assert ssh_ok(first, f"ls /tmp/{name} /var/tmp/{name}")
    assert ssh(second, f"ls /tmp/{name}").returncode != 0
    assert ssh(second, f"ls /var/tmp/{name}").returncode != 0
    assert not Path("/tmp", name).exists()
    assert not Path("/var/tmp", name).exists()


def test_host_sees_only_its_own_processes(ssh_hosts: StartHosts) -> None:
    first, second = ssh_hosts(2)
    ssh_ok(second, "nohup sleep 600 >/dev/null 2>&1 &")
    pid1 = ssh_ok(first, "cat /proc/1/cmdline | tr '\\0' ' '")
    assert "init.sh" in pid1 and first.hostname in pid1
    assert "sleep 600" not in ssh_ok(first, "ps ax")
    assert "sleep 600" in ssh_ok(second, "ps ax")


def test_reboot_is_first_in_roots_path(ssh_host: SSHHost) -> None:
    path = ssh_ok(ssh_host, "echo $PATH").strip()
    assert path.split(":")[0] == "/usr/local/sbin"
    assert ssh_ok(ssh_host, "command -v reboot").strip() == "/usr/local/sbin/reboot"
    # The real host's reboot (a symlink to systemctl) is left alone.
    assert os.readlink("/usr/sbin/reboot").endswith("systemctl")
    assert not Path("/usr/local/sbin/reboot").exists()


def test_bashrc_is_empty_inside_only(ssh_host: SSHHost) -> None:
    assert ssh_ok(ssh_host, "wc -c < /root/.bashrc").strip() == "0"
    if Path("/root/.bashrc").exists():
        assert Path("/root/.bashrc").stat().st_size > 0


def test_reboot_from_inside(ssh_host: SSHHost) -> None:
    host = ssh_host
    assert host.boot_count == 1
    ssh_ok(host, "touch /tmp/before-reboot /var/tmp/kept; nohup sleep 600 >/dev/null 2>&1 &")
    assert "sleep 600" in ssh_ok(host, "ps ax")

    with host.namespace() as old_boot:
        assert len(old_boot.processes()) >= 3  # init, sshd, sleep
        result = ssh(host, "reboot")
        assert result.returncode == 255  # the connection dies with the machine
        host.wait_rebooted(1)
        assert old_boot.processes() == []
        with host.namespace() as new_boot:
            assert new_boot.id != old_boot.id

    assert host.boot_count == 2
    assert "sleep 600" not in ssh_ok(host, "ps ax")
    assert ssh_ok(host, "ls -A /tmp").strip() == ""
    assert ssh_ok(host, "ls -A /var/tmp").strip() == "kept"  # a disk, not a tmpfs
    assert ssh_ok(host, "hostname").strip() == host.hostname


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline:
                found.append(int(entry.name))
    return found


def test_reboot_from_fixture_keeps_address_and_host_key(ssh_host: SSHHost) -> None:
    host = ssh_host
    ssh_ok(host, "touch /tmp/before-reboot")
    with host.namespace() as old_boot:
        host.reboot()  # waits (bounded) until the new boot answers
        assert old_boot.processes() == []
    assert host.boot_count == 2
    # ssh() checks the host key against host.host_key.
    assert ssh_ok(host, "ls -A /tmp").strip() == ""


def test_kill_makes_host_unreachable_and_start_boots_again(ssh_host: SSHHost) -> None:
    host = ssh_host
    with host.namespace() as boot:
        assert boot.processes()
        host.kill()
        assert boot.processes() == []
    assert not host.running
    assert not port_answers(host.address)
    assert ssh(host, "true").returncode == 255
    # Nothing is left that could boot it again: no supervisor, no init.
    assert processes_mentioning(str(host.state_dir)) == []
    assert not port_answers(host.address)

    host.start()
    assert host.boot_count == 2
    assert ssh_ok(host, "hostname").strip() == host.hostname


def test_freeze_keeps_port_open_but_silent(ssh_host: SSHHost) -> None:
    host = ssh_host
    host.freeze()
    try:
        result = subprocess.run(
            ["ssh-keyscan", "-T", "1", host.address], capture_output=True, timeout=10
        )
        assert result.stdout == b""
        assert port_answers(host.address)  # the kernel still accepts
    finally:
        host.thaw()
    assert ssh_ok(host, "echo ok").strip() == "ok"


def test_pool_stop_leaves_no_process_behind() -> None:
    reason = missing_requirements()
    if reason is not None:
        pytest.skip(reason)
    pool = HostPool()
    namespaces = []
    try:
        hosts = pool.start(2)
        namespaces = [host.namespace() for host in hosts]
        ssh_ok(hosts[0], "nohup setsid sleep 600 >/dev/null 2>&1 &")
        assert all(len(namespace.processes()) >= 2 for namespace in namespaces)
    finally:
        pool.stop_all()
    for namespace in namespaces:
        with namespace:
            assert namespace.processes() == []
    for host in hosts:
        assert not port_answers(host.address)
        assert not host.running
    assert not pool.dir.exists()


INNER_TEST = """
import json, os
from tests.hosts import process_start_time

def test_fails_with_hosts(ssh_hosts):
    hosts = ssh_hosts(2)
    record = [[h.address, h.init_pid, process_start_time(h.init_pid)] for h in hosts]
    with open(os.environ["ATEX_HOSTS_RECORD"], "w") as file:
        json.dump(record, file)
    assert False, "deliberate failure"
"""


def test_fixture_stops_hosts_when_the_test_fails(tmp_path: Path) -> None:
    reason = missing_requirements()
    if reason is not None:
        pytest.skip(reason)
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(INNER_TEST))
    record = tmp_path / "record.json"
    env = dict(os.environ, PYTHONPATH=str(REPO), ATEX_HOSTS_RECORD=str(record))
    pytest_command = [sys.executable, "-m", "pytest", "-p", "tests.conftest"]
    pytest_command += ["-p", "no:cacheprovider", "--rootdir", str(tmp_path), "-q", "test_inner.py"]
    result = subprocess.run(
        pytest_command,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "deliberate failure" in result.stdout

    hosts = json.loads(record.read_text())
    assert len(hosts) == 2
    for address, init_pid, start_time in hosts:
        assert start_time is not None
        # PID 1 of a PID namespace is reaped only after every other process
        # in it, so PID 1 gone means the whole machine is gone.
        assert process_start_time(init_pid) != start_time
        # Nothing answers there any more, unless another test process has
        # since taken the freed address for a host of its own (its lock says so).
        with address_lock(address) as ours:
            if ours:
                assert not port_answers(address)
