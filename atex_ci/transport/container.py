"""Container transport: commands run in a running container, without sshd.

It owns how a command reaches a container (podman or docker) and what a
reboot is there. Each ``run()`` is one process on this host that runs
``bash -c`` inside the container, with the same pipes, stdin, exit codes and
cancellation as a local slot (``local.py``, which this builds on).

Not through ``podman exec`` when it can be avoided: there the container's
side of the pipes belongs to conmon, which keeps them open after our end is
gone, so a command never sees its channel close (no EPIPE, no SIGPIPE; tested
in tests/test_containers.py). tmt-reboot and every test that writes after the
controller stopped listening rely on that signal, as on SSH. So the command
runs through the OCI runtime's own ``exec`` (runc, crun), whose pipes are
ours; when that cannot be used (a runtime state directory we cannot find),
``ENGINE exec -i`` is the fallback, with a warning.

Every command first writes one byte (``STARTED``) to stderr, which is taken
out before the caller sees it: a command that ended without it never ran
(no container, container stopped), a ``NotStartedError``, whatever its
exit status, so a test's own ``exit 1`` and the runtime's "container not
running" are never confused.

A reboot is the container stopping (its PID 1 ending: ``reboot`` in the
container, see provision/container.py) and being started again:
``wait_disconnected`` waits for it to stop, ``reconnect`` starts it (and,
where systemd is PID 1, waits until it has booted).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import shlex
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from .base import NotStartedError, OutputCallback, TransportError
from .local import LocalTransport, run_to_end

log = logging.getLogger("atex_ci")

#: The byte every command writes to stderr first (see the module's doc).
STARTED = b"\x01"
#: What bash runs before the command itself, to write it.
_STARTED_LINE = "printf '\\001' >&2\n"

#: Waits until systemd, where it is PID 1, has booted (``degraded`` has
#: too); before its bus answers, ``is-system-running`` fails at once.
WAIT_FOR_SYSTEMD = (
    '[ "$(cat /proc/1/comm 2>/dev/null)" = systemd ] || exit 0\n'
    "until [[ $(systemctl is-system-running --wait 2>/dev/null) == @(running|degraded) ]]; do\n"
    "    sleep 0.1\n"
    "done"
)

#: Bound on one engine call (inspect, start): the engine answers in well
#: under a second; a minute means it hangs.
ENGINE_TIMEOUT = 60.0
#: Bytes of an engine's or runtime's error output kept for a message.
MESSAGE_BYTES = 1000
#: First delay between probes while a restarted container comes up (doubles).
PROBE_DELAY = 0.05
PROBE_MAX_DELAY = 1.0

#: Where docker keeps runc's state for its containers (runc ``--root``), by
#: docker version: tried in order.
DOCKER_RUNC_ROOTS = ("/run/docker/runtime-runc/moby", "/run/containerd/runc/moby")


async def engine_call(
    engine: Sequence[str], *args: str, timeout: float = ENGINE_TIMEOUT
) -> tuple[int, str, str]:
    """Run ``ENGINE ARGS...`` on this host; (status, stdout, stderr) as text.
    TransportError when the engine is missing or does not answer in time."""
    try:
        rc, out, err = await run_to_end([*engine, *args], timeout)
    except OSError as exc:
        raise TransportError(f"cannot run {engine[0]}: {exc.strerror or exc}") from None
    return (
        rc,
        out.decode(errors="replace"),
        err[-MESSAGE_BYTES:].decode(errors="replace").strip(),
    )


def engine_error(err: str) -> str:
    """An engine's error output as one line for a message."""
    lines = [line.strip() for line in err.splitlines() if line.strip()]
    return lines[-1].removeprefix("Error: ") if lines else "no message"


class _StartWatch:
    """A stderr callback that takes out the STARTED byte and remembers it;
    what comes before it (the runtime's own error) is kept for a message."""

    def __init__(self, callback: OutputCallback | None) -> None:
        self.callback = callback
        self.started = False
        self.before = b""

    def __call__(self, chunk: bytes) -> None:
        if not self.started:
            head, sep, chunk = chunk.partition(STARTED)
            if not sep:
                self.before = (self.before + head)[-MESSAGE_BYTES:]
                return
            self.started = True
            self.before += head
        if chunk and self.callback is not None:
            self.callback(chunk)


class ContainerTransport(LocalTransport):
    """Runs commands in one container of ``engine`` (``["podman"]``,
    ``["docker"]``, with any global options of theirs)."""

    supports_reboot = True

    def __init__(self, engine: Sequence[str], container: str) -> None:
        # Only what the runtime itself needs: the container's environment is
        # its own (the image's), never atex-ci's.
        super().__init__(env=None)
        self.engine = list(engine)
        self.container = container
        #: How a command is started in the container (None: not connected).
        self._exec: list[str] | None = None
        #: Whether that is the engine's own ``exec`` (the fallback).
        self.through_engine = False

    def __repr__(self) -> str:
        return f"<ContainerTransport {self.engine[0]} {self.container}>"

    # -- connecting -------------------------------------------------------------

    async def connect(self) -> None:
        """Find the running container and how to exec in it; TransportError if
        it is not there or not running."""
        if self._exec is not None:
            return
        self._exec = await self._find_exec()

    async def _inspect(self, template: str) -> list[str]:
        rc, out, err = await engine_call(
            self.engine, "inspect", "--type", "container", "-f", template, self.container
        )
        if rc != 0:
            raise TransportError(f"container {self.container}: {engine_error(err)}")
        return out.strip().split("\t")

    async def _find_exec(self) -> list[str]:
        name = Path(self.engine[0]).name
        if name == "podman":
            cid, running, runtime, conmon = await self._inspect(
                "{{.Id}}\t{{.State.Running}}\t{{.OCIRuntime}}\t{{.State.ConmonPid}}"
            )
            candidates = [[path, "exec"] for path in _podman_runtime(runtime, conmon)]
        else:
            cid, running, runtime = await self._inspect(
                "{{.Id}}\t{{.State.Running}}\t{{.HostConfig.Runtime}}"
            )
            path = shutil.which(runtime) if runtime in ("runc", "crun") else None
            candidates = [[path, "--root", root, "exec"] for root in DOCKER_RUNC_ROOTS if path]
        if running != "true":
            raise NotStartedError(f"container {self.container} is not running")
        for candidate in candidates:
            if await self._works([*candidate, cid]):
                self.through_engine = False
                return [*candidate, cid]
        log.warning(
            "container %s: running commands through '%s exec' (the runtime's own exec was not "
            "found): a command does not notice when atex-ci stops reading it",
            self.container,
            name,
        )
        self.through_engine = True
        return [*self.engine, "exec", "-i", cid]

    async def _works(self, prefix: list[str]) -> bool:
        self._exec = prefix
        try:
            return await self.run("true") == 0
        except NotStartedError:
            return False
        finally:
            self._exec = None

    async def reconnect(self, timeout: float) -> None:
        """Start the container if it stopped (a reboot), and wait until it runs
        commands; TransportError if that takes longer than ``timeout``."""
        deadline = time.monotonic() + timeout
        rc, _out, err = await engine_call(
            self.engine, "start", self.container, timeout=max(timeout, 1.0)
        )
        if rc != 0:
            raise TransportError(f"cannot start container {self.container}: {engine_error(err)}")
        delay = PROBE_DELAY
        while True:
            self._exec = None
            try:
                async with asyncio.timeout(max(deadline - time.monotonic(), 0.1)):
                    await self.connect()
                break
            except (TransportError, TimeoutError) as exc:
                if time.monotonic() + delay >= deadline:
                    if isinstance(exc, TransportError):
                        raise
                    raise TransportError(
                        f"container {self.container}: no answer within {timeout:g} s of its start"
                    ) from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, PROBE_MAX_DELAY)
        # A container that boots systemd is back once it has booted, as a
        # machine is once sshd answers (degraded counts: it has booted).
        wait = max(int(deadline - time.monotonic()), 1)
        await self.run(f"timeout {wait} bash -O extglob -c {shlex.quote(WAIT_FOR_SYSTEMD)}; true")

    async def wait_disconnected(self, timeout: float) -> bool:
        """Wait until the container has stopped (its PID 1 ended for a reboot)."""
        try:
            await engine_call(self.engine, "wait", self.container, timeout=max(timeout, 0.0))
        except TimeoutError:
            return False
        self._exec = None
        return True

    async def close(self) -> None:
        self._exec = None
        await super().close()

    # -- running commands -------------------------------------------------------

    def _abandon(self, proc: asyncio.subprocess.Process) -> None:
        """Close our end of the command's pipes, as closing an SSH channel
        does: a command that writes gets EPIPE (tmt-reboot waits for it).
        No signal: the runtime would pass it on to the command."""
        transport = getattr(proc, "_transport", None)  # asyncio has no public way
        if transport is not None:
            for fd in (0, 1, 2):
                pipe = transport.get_pipe_transport(fd)
                if pipe is not None:
                    pipe.close()
        self._orphans.add(proc)

    def _argv(self, command: str, tty: bool) -> list[str]:
        assert self._exec is not None
        if tty:
            # A terminal: the engine's own exec allocates it (stdout and
            # stderr are one stream then, as over SSH).
            return [*self.engine, "exec", "-i", "-t", self._exec[-1], "bash", "-c", command]
        return [*self._exec, "bash", "-c", _STARTED_LINE + command]

    async def run(
        self,
        command: str,
        *,
        stdin: bytes | None = None,
        stdout: OutputCallback | None = None,
        stderr: OutputCallback | None = None,
        tty: bool = False,
    ) -> int:
        if self._exec is None:
            raise NotStartedError(f"container {self.container}: not connected")
        if tty:
            return await super().run(command, stdin=stdin, stdout=stdout, stderr=stderr, tty=True)
        watch = _StartWatch(stderr)
        try:
            rc = await super().run(command, stdin=stdin, stdout=stdout, stderr=watch)
        except OSError as exc:
            raise NotStartedError(
                f"container {self.container}: cannot start a command: {exc.strerror or exc}"
            ) from None
        if not watch.started:
            why = engine_error(watch.before.decode(errors="replace")) if watch.before else ""
            raise NotStartedError(
                f"container {self.container}: cannot start a command (exit {rc})"
                + (f": {why}" if why else "")
            )
        return rc


def _podman_runtime(name: str, conmon_pid: str) -> list[str]:
    """The OCI runtime podman runs this container with: the path conmon was
    given (``-r``), else the runtime's name on PATH. runc's and crun's own
    default state directory is the one podman uses."""
    paths: list[str] = []
    with contextlib.suppress(OSError, ValueError):
        args = Path(f"/proc/{int(conmon_pid)}/cmdline").read_bytes().split(b"\0")
        for flag, value in itertools.pairwise(args):
            if flag in (b"-r", b"--runtime") and value:
                paths.append(os.fsdecode(value))
                break
    found = shutil.which(name) if name else None
    if found and found not in paths:
        paths.append(found)
    return paths


__all__ = ["ContainerTransport", "engine_call", "engine_error"]
