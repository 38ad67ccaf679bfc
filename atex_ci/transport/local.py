"""Local transport: commands run as bash subprocesses on this host (local slots).

It offers the same interface as the SSH transport, so the executor, the
wrapper and the tmt shims behave the same on a local slot as on a remote
machine. There is no connection: ``connect``/``reconnect``/``close`` only
track state, and a "reboot" cannot happen (see the executor).

``run_to_end`` runs one short command of atex-ci's own on this host (an
engine or an image tool), bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any

from .base import OutputCallback, Transport

#: Read size for output pipes; large enough that a 100 MB output costs few wakeups.
READ_CHUNK = 256 * 1024
#: Bytes of stdin handed to a pipe at a time (the most a command's stdin
#: buffers in atex-ci besides the caller's own data).
STDIN_CHUNK = 64 * 1024
#: How long close() waits for each abandoned command to end.
CLOSE_TIMEOUT = 5.0

#: Variables of atex-ci's own environment that a test on a local slot gets;
#: everything else (tokens, credentials, CI secrets) stays with atex-ci. A
#: test gets what makes a shell work as the user's (where programs are, whose
#: home, language, terminal), as a login on a machine would; the tmt and
#: atex-ci variables are set for each test on top (docs/test-limits.md).
TEST_ENVIRONMENT = frozenset(
    {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "LANG", "TZ", "TMPDIR"}
)
#: Prefixes of variables passed through as well (locale categories).
TEST_ENVIRONMENT_PREFIXES = ("LC_",)


def slot_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment a local slot's commands start with: the allow-list
    above taken from ``environ``, and a default PATH if it has none."""
    env = {
        key: value
        for key, value in environ.items()
        if key in TEST_ENVIRONMENT or key.startswith(TEST_ENVIRONMENT_PREFIXES)
    }
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    return env


async def run_to_end(
    argv: list[str], timeout: float, cwd: Path | None = None
) -> tuple[int, bytes, bytes]:
    """Run ``argv`` with no stdin; (exit status, stdout, stderr). TimeoutError
    after ``timeout`` seconds; the process is killed on any error or
    cancellation. OSError if it cannot be started."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out, err


class LocalTransport(Transport):
    """Runs commands with ``bash -c`` in a new session (so a terminal's Ctrl-C
    reaches only atex-ci, which then cleans up in order)."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self._env = env
        self._orphans: set[asyncio.subprocess.Process] = set()

    async def connect(self) -> None:
        return None

    async def reconnect(self, timeout: float) -> None:
        return None

    async def close(self) -> None:
        """Collect commands abandoned by a cancelled or failed run() (bounded)."""
        orphans, self._orphans = self._orphans, set()
        for proc in orphans:
            try:
                await asyncio.wait_for(_reap(proc), CLOSE_TIMEOUT)
            except Exception:
                # A process that escaped every kill still holds the pipes.
                # Stop reading them now, while the loop runs (asyncio has no
                # public way: the transport is the Process's own).
                transport = getattr(proc, "_transport", None)
                if transport is not None:
                    transport.close()

    def _argv(self, command: str, tty: bool) -> list[str]:
        """The program and arguments that run ``command`` (a subclass may run
        it elsewhere, see container.py)."""
        return ["bash", "-c", command]

    async def run(
        self,
        command: str,
        *,
        stdin: bytes | None = None,
        stdout: OutputCallback | None = None,
        stderr: OutputCallback | None = None,
        tty: bool = False,
    ) -> int:
        proc = await asyncio.create_subprocess_exec(
            *self._argv(command, tty),
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            env=self._env,
        )
        try:
            assert proc.stdout is not None and proc.stderr is not None
            pipes = [_pump(proc.stdout, stdout), _pump(proc.stderr, stderr)]
            if stdin is not None:
                pipes.append(_feed(proc, stdin))
            await _all_or_first_error(pipes)
            return await proc.wait()
        except BaseException:
            self._abandon(proc)
            raise

    def _abandon(self, proc: asyncio.subprocess.Process) -> None:
        """A command whose run() was cancelled or failed: let it go."""
        # Like closing an SSH channel: only the bash we started is
        # signalled; the test's own process group is the executor's to
        # kill. Its pipes stay open until then, so waiting for it here
        # would only wait for that kill: close() collects it instead.
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGHUP)
        # Also when bash has exited: a process it left may hold the pipes.
        self._orphans.add(proc)


async def _all_or_first_error(coros: list[Coroutine[Any, Any, None]]) -> None:
    """Run ``coros`` as tasks until all end or one raises; then cancel the
    rest, wait for them, and raise that task's own exception.

    Not a TaskGroup: on Python 3.11 a child that fails while the group is
    already exiting (here: a callback raising while the body only waits) has
    the group cancel its parent after the group took its own cancellation
    back, so one cancellation request stays counted on the caller's task for
    good. Python 3.11.2's ``asyncio.timeout`` then turns every later expiry
    in that task (the executor's test deadline) into CancelledError instead
    of TimeoutError (3.11.3 counts from where the timeout was entered).
    """
    tasks = [asyncio.create_task(coro) for coro in coros]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()
        # Cancelled tasks end at their next await: bounded by the reads.
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error


async def _reap(proc: asyncio.subprocess.Process) -> None:
    """Read an abandoned command's pipes to their end and wait for it, so its
    transport closes while the event loop still runs."""

    async def drain(reader: asyncio.StreamReader | None) -> None:
        if reader is not None:
            while await reader.read(READ_CHUNK):
                pass

    await asyncio.gather(drain(proc.stdout), drain(proc.stderr))
    await proc.wait()


async def _feed(proc: asyncio.subprocess.Process, data: bytes) -> None:
    assert proc.stdin is not None
    view = memoryview(data)
    try:
        # A piece at a time: what the pipe does not take at once is copied
        # into the transport's buffer, so writing all of it in one go would
        # cost every slot a copy of the data (a tree uploaded to 64 slots
        # at once, 64 copies).
        for start in range(0, len(view), STDIN_CHUNK):
            proc.stdin.write(view[start : start + STDIN_CHUNK])
            await proc.stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the command did not read all of it; its exit status tells
    finally:
        proc.stdin.close()


async def _pump(reader: asyncio.StreamReader, callback: OutputCallback | None) -> None:
    while chunk := await reader.read(READ_CHUNK):
        if callback is not None:
            callback(chunk)
