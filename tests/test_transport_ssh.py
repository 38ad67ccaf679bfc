"""SSHTransport against real sshd test hosts (tests/hosts.py)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
import re
import socket
import subprocess
import tarfile
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from atex_ci.transport.base import KeyRejectedError, TransportError
from atex_ci.transport.ssh import SSHTransport
from tests.conftest import StartHosts
from tests.hosts import SSHHost

T = TypeVar("T")


def set_on_output(event: asyncio.Event) -> Callable[[bytes], None]:
    """An output callback that sets ``event`` (the command has started)."""
    return lambda _data: event.set()


async def wait_for_status(
    transport: SSHTransport, command: str, status: int, limit: float = 60
) -> int:
    """Run ``command`` until it exits with ``status`` (or ``limit`` s pass); its last status."""
    deadline = time.monotonic() + limit
    while True:
        rc = await transport.run(command)
        if rc == status or time.monotonic() > deadline:
            return rc
        await asyncio.sleep(0.05)


async def helper_run(host: SSHHost, command: str) -> int:
    """Run one command on ``host`` over a connection of its own."""
    async with transport_for(host) as helper:
        return await helper.run(command)


def run_async(main: Callable[[], Awaitable[T]]) -> T:
    async def wrapper() -> T:
        return await main()

    return asyncio.run(wrapper())


def transport_for(host: SSHHost, **options: Any) -> SSHTransport:
    options.setdefault("known_host_key", host.host_key)
    return SSHTransport(host.address, host.port, host.user, host.key_path, **options)


def test_stdout_stderr_exit_status_and_bytes(ssh_host: SSHHost) -> None:
    async def main() -> None:
        async with transport_for(ssh_host) as transport:
            assert await transport.output("echo out; echo err >&2; exit 3") == (
                3,
                b"out\n",
                b"err\n",
            )
            assert await transport.output("printf '\\xff\\xfe\\x00a'; printf '\\x80' >&2") == (
                0,
                b"\xff\xfe\x00a",
                b"\x80",
            )
            for status in (0, 1, 42, 254, 255):
                assert await transport.run(f"exit {status}") == status
            # Killed by a signal: the status a shell would report.
            assert await transport.run("kill -KILL $$") == 128 + 9
            assert await transport.run("kill -TERM $$") == 128 + 15

    run_async(main)


def test_command_runs_under_bash_with_quoting_intact(ssh_host: SSHHost) -> None:
    command = """x='it'"'"'s'; y="$x \\"q\\" \\$HOME"
[[ -n $BASH_VERSION ]] && printf '%s|%s\\n' "$x" "$y"
echo $'tab\\there'"""

    async def main() -> None:
        async with transport_for(ssh_host) as transport:
            rc, out, err = await transport.output(command)
            assert (rc, err) == (0, b"")
            assert out == b"it's|it's \"q\" $HOME\ntab\there\n"

    run_async(main)


def test_stdin_is_written_then_closed(ssh_host: SSHHost) -> None:
    big = bytes(range(256)) * 20_000  # 5 MB, every byte value

    async def main() -> None:
        async with transport_for(ssh_host) as transport:
            assert await transport.output("cat", stdin=b"a\x00\xffb") == (0, b"a\x00\xffb", b"")
            # No stdin: the command sees EOF at once instead of hanging.
            assert await transport.output("cat") == (0, b"", b"")
            rc, out, _ = await transport.output("sha256sum", stdin=big)
            assert rc == 0
            assert out.split()[0].decode() == hashlib.sha256(big).hexdigest()
            # A command that ignores its stdin still gives its status.
            assert await transport.run("exit 7", stdin=big) == 7

    run_async(main)


def test_big_output_is_streamed_in_chunks(ssh_host: SSHHost) -> None:
    size = 20 * 1024 * 1024

    async def main() -> None:
        chunks: list[int] = []
        digest = hashlib.sha256()

        def on_stdout(data: bytes) -> None:
            chunks.append(len(data))
            digest.update(data)

        async with transport_for(ssh_host) as transport:
            command = f"head -c {size} /dev/urandom | tee >(sha256sum >&2)"
            err: list[bytes] = []
            rc = await transport.run(command, stdout=on_stdout, stderr=err.append)
            assert rc == 0
            assert sum(chunks) == size
            assert len(chunks) > 100  # streamed, not collected into one piece
            assert b"".join(err).split()[0].decode() == digest.hexdigest()

    run_async(main)


def test_output_arrives_while_the_command_runs(ssh_host: SSHHost) -> None:
    # The command cannot finish before the test has seen its first line: the
    # test only releases it (by creating a file) once that line has arrived.
    async def main() -> None:
        arrivals: list[bytes] = []
        first_seen: asyncio.Event = asyncio.Event()

        def on_stdout(data: bytes) -> None:
            arrivals.append(data)
            first_seen.set()

        async with transport_for(ssh_host) as transport, transport_for(ssh_host) as helper:
            command = asyncio.create_task(
                transport.run(
                    "rm -f /tmp/go; echo first; until [ -e /tmp/go ]; do sleep 0.01; done;"
                    " echo second >&2",
                    stdout=on_stdout,
                    stderr=arrivals.append,
                )
            )
            await asyncio.wait_for(first_seen.wait(), 60)
            assert arrivals == [b"first\n"]
            assert not command.done()
            assert await helper.run("touch /tmp/go") == 0
            assert await asyncio.wait_for(command, 60) == 0
        assert arrivals == [b"first\n", b"second\n"]

    run_async(main)


def test_tty(ssh_host: SSHHost) -> None:
    async def main() -> None:
        async with transport_for(ssh_host) as transport:
            assert await transport.run("test -t 0 && test -t 1", tty=True) == 0
            assert await transport.run("test -t 0 || test -t 1") == 1

    run_async(main)


def test_many_concurrent_runs_share_one_connection(ssh_host: SSHHost) -> None:
    max_channels = 4

    async def one(transport: SSHTransport, index: int) -> int:
        # Each command counts the commands running with it (itself included).
        rc, out, _ = await transport.output(
            f"touch /tmp/active/{index}; sleep 0.2; ls /tmp/active | wc -l; rm /tmp/active/{index}"
        )
        assert rc == 0
        return int(out)

    async def main() -> None:
        async with transport_for(ssh_host, max_channels=max_channels) as transport:
            await transport.run("mkdir /tmp/active")
            counts = await asyncio.gather(*(one(transport, index) for index in range(30)))
            assert max(counts) == max_channels  # in parallel, and never more
            # Bursts of short commands at the limit: sshd never refuses one.
            results = await asyncio.gather(*(transport.run("true") for _ in range(300)))
            assert results == [0] * 300

    run_async(main)
    log = ssh_host.sshd_log.read_text()
    assert log.count("Accepted publickey") == 1
    assert "no more sessions" not in log


def test_default_channel_limit_survives_bursts(ssh_host: SSHHost) -> None:
    async def main() -> None:
        async with transport_for(ssh_host) as transport:
            results = await asyncio.gather(*(transport.run("true") for _ in range(500)))
            assert results == [0] * 500

    run_async(main)


def test_put_tar(ssh_host: SSHHost) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in (("a.txt", b"alpha\n"), ("sub/b.bin", b"\xff\x00beta")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

    async def main() -> None:
        async with transport_for(ssh_host) as transport:
            await transport.put_tar(buffer.getvalue(), "/var/tmp/work dir/tree")
            assert await transport.output("cat '/var/tmp/work dir/tree/a.txt'") == (
                0,
                b"alpha\n",
                b"",
            )
            rc, out, _ = await transport.output("cat '/var/tmp/work dir/tree/sub/b.bin'")
            assert (rc, out) == (0, b"\xff\x00beta")
            with pytest.raises(TransportError, match="unpacking files into /proc/x"):
                await transport.put_tar(buffer.getvalue(), "/proc/x")

    run_async(main)


def test_host_key_recorded_then_verified(ssh_host: SSHHost) -> None:
    async def main() -> None:
        first = transport_for(ssh_host, known_host_key=None)
        assert first.host_key is None
        async with first:
            assert first.host_key == ssh_host.host_key
        async with transport_for(ssh_host, known_host_key=first.host_key) as second:
            assert await second.run("true") == 0

    run_async(main)


def test_wrong_host_key_fails_at_once(ssh_hosts: StartHosts) -> None:
    host, other = ssh_hosts(2)

    async def main() -> None:
        # A retry would first wait an hour: failing within the test's time
        # limit at all shows that a wrong key is never retried.
        transport = transport_for(host, known_host_key=other.host_key, retries=5, backoff=3600.0)
        with pytest.raises(TransportError, match="host key does not match"):
            await asyncio.wait_for(transport.connect(), 120)
        assert not transport.connected

    run_async(main)


def test_pinned_key_is_checked_on_reconnect(ssh_host: SSHHost) -> None:
    async def main() -> None:
        transport = transport_for(ssh_host, known_host_key=None)
        async with transport:
            pinned = transport.host_key
            ssh_host.regenerate_host_key()
            ssh_host.reboot()
            with pytest.raises(TransportError, match="host key does not match"):
                await transport.reconnect(10)
            assert transport.host_key == pinned

    run_async(main)


def test_reconnect_after_reboot(ssh_host: SSHHost) -> None:
    async def main() -> None:
        async with transport_for(ssh_host) as transport:
            await transport.run("touch /tmp/before")
            with pytest.raises(TransportError, match="connection lost"):
                await transport.run("reboot")
            with pytest.raises(TransportError):
                await transport.run("true")
            await transport.reconnect(30)
            assert ssh_host.boot_count == 2
            assert await transport.run("test -e /tmp/before") == 1
            assert await transport.output("hostname") == (0, f"{ssh_host.hostname}\n".encode(), b"")

    run_async(main)


def test_wait_disconnected_sees_the_machine_go_down(ssh_host: SSHHost) -> None:
    async def main() -> None:
        async with transport_for(ssh_host) as transport:
            assert transport.supports_reboot
            assert await transport.wait_disconnected(0.3) is False
            # The reboot waits for a file that is only created once the wait
            # below is under way, so it cannot have seen an earlier event.
            assert await transport.run("rm -f /tmp/go") == 0
            reboot = asyncio.create_task(
                transport.run("until [ -e /tmp/go ]; do sleep 0.01; done; reboot")
            )
            waiting = asyncio.create_task(transport.wait_disconnected(60))
            await asyncio.sleep(0)  # the wait has started
            assert not waiting.done()
            assert await helper_run(ssh_host, "touch /tmp/go") == 0
            assert await waiting is True
            with pytest.raises(TransportError):
                await reboot
            await transport.reconnect(30)
            assert ssh_host.boot_count == 2
            assert await transport.wait_disconnected(0.1) is False

    run_async(main)


def test_killed_host_fails_running_command_then_reconnect_times_out(ssh_host: SSHHost) -> None:
    async def main() -> None:
        async with transport_for(ssh_host, connect_timeout=1) as transport:
            started: asyncio.Event = asyncio.Event()
            task = asyncio.create_task(
                transport.run("echo started; sleep 60", stdout=set_on_output(started))
            )
            await asyncio.wait_for(started.wait(), 10)
            await asyncio.to_thread(ssh_host.kill)
            # Bounded by the caller's own limits: the test's limit is only a
            # safety net against a hang.
            with pytest.raises(TransportError, match="connection lost"):
                await asyncio.wait_for(task, 120)
            with pytest.raises(TransportError, match="cannot connect"):
                await asyncio.wait_for(transport.reconnect(2), 120)

    run_async(main)


def test_keepalive_detects_a_hung_host(ssh_host: SSHHost) -> None:
    async def main() -> None:
        transport = transport_for(ssh_host, keepalive_interval=0.5, keepalive_count_max=2)
        async with transport:
            started: asyncio.Event = asyncio.Event()
            task = asyncio.create_task(
                transport.run("echo started; sleep 60", stdout=set_on_output(started))
            )
            await asyncio.wait_for(started.wait(), 10)
            ssh_host.freeze()  # the socket stays open, nothing answers
            try:
                # Without keepalives the command would wait its 60 s and more.
                with pytest.raises(TransportError, match="connection lost"):
                    await asyncio.wait_for(task, 50)
            finally:
                ssh_host.thaw()

    run_async(main)


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_connect_to_dead_address_gives_up_after_retries() -> None:
    async def main() -> None:
        transport = SSHTransport("127.0.0.1", free_loopback_port(), retries=3, backoff=0.01)
        with pytest.raises(TransportError, match="after 4 attempts") as error:
            await asyncio.wait_for(transport.connect(), 120)
        assert "127.0.0.1" in str(error.value)

    run_async(main)


def test_connect_timeout_bounds_a_silent_server() -> None:
    async def main() -> None:
        with socket.socket() as silent:
            # The kernel completes the TCP handshake; nobody ever sends a banner.
            silent.bind(("127.0.0.1", 0))
            silent.listen(8)
            port = silent.getsockname()[1]
            transport = SSHTransport("127.0.0.1", port, connect_timeout=0.5, retries=1, backoff=0.1)
            # Without a connect timeout this would wait for the banner forever.
            with pytest.raises(TransportError, match="after 2 attempts"):
                await asyncio.wait_for(transport.connect(), 120)

    run_async(main)


def test_each_retry_of_a_silent_server_is_said(caplog: pytest.LogCaptureFixture) -> None:
    """A host that accepts TCP and never answers must not cost a minute in silence."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]

        async def main() -> None:
            transport = SSHTransport("127.0.0.1", port, connect_timeout=0.3, retries=2, backoff=0.1)
            with pytest.raises(TransportError, match=r"after 3 attempts: no SSH answer in 0\.3s"):
                await asyncio.wait_for(transport.connect(), 120)

        with caplog.at_level(logging.WARNING, logger="atex_ci"):
            run_async(main)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    for n, line in enumerate(lines, start=1):
        assert re.fullmatch(
            rf"root@127\.0\.0\.1:{port}: connect attempt {n} of 3 failed "
            r"\(no SSH answer in 0\.3s\); trying again in \d+\.\ds",
            line,
        ), line


def test_a_rejected_key_fails_at_once_as_a_configuration_error(
    ssh_host: SSHHost, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    other = tmp_path / "other_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
        check=True,
        capture_output=True,
    )

    async def main() -> None:
        transport = SSHTransport(ssh_host.address, ssh_host.port, ssh_host.user, other)
        with pytest.raises(KeyRejectedError, match=f"key rejected: {other} ") as error:
            await asyncio.wait_for(transport.connect(), 120)
        assert error.value.exit_code == 2
        assert isinstance(error.value, TransportError)  # mid-run: the machine's problem

    with caplog.at_level(logging.WARNING, logger="atex_ci"):
        run_async(main)
    assert not caplog.records  # no retry


def test_run_before_connect_fails_clearly() -> None:
    async def main() -> None:
        with pytest.raises(TransportError, match="not connected"):
            await SSHTransport("127.0.0.1").run("true")

    run_async(main)


class CallbackFailed(Exception):
    pass


def test_callback_raising_closes_the_channel(ssh_host: SSHHost) -> None:
    def fail(_data: bytes) -> None:
        raise CallbackFailed

    async def main() -> None:
        async with transport_for(ssh_host, max_channels=2) as transport:
            for _ in range(5):  # more than max_channels: each slot comes back
                with pytest.raises(CallbackFailed):
                    await asyncio.wait_for(transport.run("exec yes", stdout=fail), 10)
            assert await asyncio.wait_for(transport.run("true"), 10) == 0
            # Closing the channel closed the pipe: `yes` died of SIGPIPE.
            assert await wait_for_status(transport, "pgrep -x yes", 1) == 1

    run_async(main)


def test_cancellation_closes_the_channel(ssh_host: SSHHost) -> None:
    async def main() -> None:
        async with (
            transport_for(ssh_host, max_channels=2) as transport,
            transport_for(ssh_host) as helper,
        ):
            for _ in range(5):  # more than max_channels: each slot comes back
                started: asyncio.Event = asyncio.Event()
                task = asyncio.create_task(
                    transport.run("echo started; exec sleep 60", stdout=set_on_output(started))
                )
                await asyncio.wait_for(started.wait(), 60)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                # sshd keeps the session (and so the slot) until the command
                # ends; killing it is the caller's job (by process group).
                # "started" is printed before bash execs sleep: wait for it.
                assert await wait_for_status(helper, "pkill -x sleep", 0) == 0
            assert await asyncio.wait_for(transport.run("true"), 60) == 0

            # Cancelled while waiting for a slot: nothing leaks either. Both
            # blockers hold their slot once they have printed; they end when
            # the test creates the file.
            await helper.run("rm -f /tmp/go")
            ready = [asyncio.Event(), asyncio.Event()]
            blockers = [
                asyncio.create_task(
                    transport.run(
                        "echo started; until [ -e /tmp/go ]; do sleep 0.01; done",
                        stdout=set_on_output(event),
                    )
                )
                for event in ready
            ]
            await asyncio.wait_for(asyncio.gather(*(event.wait() for event in ready)), 60)
            waiting = asyncio.create_task(transport.run("true"))
            await asyncio.sleep(0)  # it is now queued for a slot
            waiting.cancel()
            assert await helper.run("touch /tmp/go") == 0
            assert await asyncio.wait_for(asyncio.gather(*blockers), 60) == [0, 0]
            assert waiting.cancelled()
            results = await asyncio.wait_for(
                asyncio.gather(transport.run("true"), transport.run("true")), 10
            )
            assert results == [0, 0]

    run_async(main)


def test_cancelling_while_the_channel_opens_leaks_no_session(ssh_host: SSHHost) -> None:
    # A channel whose opening was cancelled still opens on the server; unless
    # it is closed, sshd's MaxSessions (10) fills up and nothing starts.
    async def main() -> list[int]:
        async with transport_for(ssh_host) as transport:
            for n in range(150):
                task = asyncio.create_task(transport.run("true"))
                await asyncio.sleep((n % 4) * 0.001)  # cut in at various stages
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            return await asyncio.wait_for(
                asyncio.gather(*[transport.run("sleep 0.2") for _ in range(5)]), 30
            )

    assert run_async(main) == [0, 0, 0, 0, 0]


def test_close_is_idempotent_and_bounded(ssh_host: SSHHost) -> None:
    async def main() -> None:
        transport = transport_for(ssh_host)
        await transport.close()  # never connected
        await transport.connect()
        await transport.connect()  # already connected: no second connection
        assert transport.connected
        ssh_host.freeze()
        try:
            # A frozen host never answers: close must give up by itself.
            await asyncio.wait_for(transport.close(), 120)
            await asyncio.wait_for(transport.close(), 120)
        finally:
            ssh_host.thaw()
        assert not transport.connected
        with pytest.raises(TransportError, match="not connected"):
            await transport.run("true")

    run_async(main)
    assert ssh_host.sshd_log.read_text().count("Accepted publickey") == 1
