"""The Transport interface: how atex-ci runs commands on one machine.

A transport runs shell commands (interpreted by bash on the machine) with
separate stdout and stderr byte streams, feeds stdin, and can be reconnected
after the machine reboots. Implementations: ``local.py`` (asyncio
subprocesses on this host, for local slots), ``ssh.py`` (asyncssh, one
persistent connection per machine with many channels) and ``container.py``
(the OCI runtime's exec into a podman or docker container).

Everything is bytes: output that is not UTF-8 must never break a transport.
Implementations may only add constructor/method arguments that have defaults.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

from ..errors import InfraError

#: Called with each chunk of output as it arrives. It may raise; the transport
#: then stops the command (closing its channel/killing it) and re-raises.
OutputCallback = Callable[[bytes], None]


class TransportError(InfraError):
    """The machine could not be reached or the connection was lost."""


class KeyRejectedError(TransportError):
    """The machine answered but refused our key (or user): a configuration to
    fix, not a machine to retry, so the CLI's exit code is 2."""

    exit_code = 2


class NotStartedError(TransportError):
    """The command could not be started at all (no connection, channel refused):
    nothing ran on the machine, so it is safe to reconnect and try again."""


class Transport(abc.ABC):
    """Runs commands on one machine. Safe to use from many tasks at once."""

    #: The machine's host key (OpenSSH public key line) once known, else None.
    host_key: str | None = None

    #: Whether the machine can really reboot. Where it cannot (local slots), a
    #: test's reboot request restarts the test without rebooting anything.
    supports_reboot: bool = False

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open the connection (retrying with backoff); raise TransportError on failure."""

    @abc.abstractmethod
    async def run(
        self,
        command: str,
        *,
        stdin: bytes | None = None,
        stdout: OutputCallback | None = None,
        stderr: OutputCallback | None = None,
        tty: bool = False,
    ) -> int:
        """Run ``command`` with bash on the machine and return its exit status.

        Output chunks go to the callbacks as they arrive (dropped when a
        callback is None). ``stdin`` is written then closed (EOF). Raises
        TransportError if the connection is lost before the exit status
        arrives. Cancelling the call closes the channel; it does not
        necessarily kill the remote processes (the caller kills them by
        process group, see the executor).
        """

    async def output(self, command: str, *, stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
        """Run ``command`` and collect its stdout and stderr."""
        out: list[bytes] = []
        err: list[bytes] = []
        rc = await self.run(command, stdin=stdin, stdout=out.append, stderr=err.append)
        return rc, b"".join(out), b"".join(err)

    async def put_tar(self, tar: bytes, dest: str) -> None:
        """Unpack a tar archive into directory ``dest`` on the machine (created if needed)."""
        from shlex import quote

        rc, _out, err = await self.output(
            f"mkdir -p {quote(dest)} && tar -x -f - -C {quote(dest)}", stdin=tar
        )
        if rc != 0:
            raise TransportError(
                f"unpacking files into {dest} failed: {err.decode(errors='replace').strip()}"
            )

    @abc.abstractmethod
    async def reconnect(self, timeout: float) -> None:
        """Drop the old connection and connect again, retrying for up to ``timeout`` seconds."""

    async def wait_disconnected(self, timeout: float) -> bool:
        """Wait until the connection drops (the machine went down for a reboot).

        Returns False if it is still up after ``timeout`` seconds.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot reboot machines")

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the connection. Idempotent; never raises."""

    async def __aenter__(self) -> Transport:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
