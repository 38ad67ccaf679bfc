"""SSHTransport: run commands on one machine over one persistent asyncssh connection.

This module owns everything SSH-specific about talking to a machine: the
connection and its keepalive, connect retries with backoff, host key pinning,
the limit on concurrent channels, and mapping asyncssh's errors onto
TransportError. Each ``run()`` is one SSH session channel on the shared
connection; nothing here starts helper processes or new connections per
command, because a test run issues thousands of small commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import shlex
import signal
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .asyncssh_import import load_asyncssh
from .base import KeyRejectedError, NotStartedError, OutputCallback, Transport, TransportError

if TYPE_CHECKING:
    import asyncssh
else:
    # Without the compiler probe that looks for liboqs (asyncssh_import.py).
    asyncssh = load_asyncssh()

log = logging.getLogger(__name__)

#: Concurrent commands per connection. OpenSSH's sshd allows 10 sessions per
#: connection (MaxSessions) and counts a session we have already seen closed
#: until its main loop has processed our close and cleaned up; our next open
#: can arrive in the same read. So up to this many closed-but-counted sessions
#: plus this many live ones must fit: 5. With 8, sshd refused ~10 % of opens
#: ("no more sessions") under a burst of short commands.
DEFAULT_MAX_CHANNELS = 5

#: Extra connect attempts after the first. sshd drops connections beyond
#: MaxStartups (10 unauthenticated at once by default) when many orchestrator
#: workers connect together, and a freshly booted machine refuses for a while.
DEFAULT_RETRIES = 5

#: First delay between connect attempts; it doubles up to MAX_BACKOFF and each
#: delay is randomised (50-100 %) so that workers do not retry in lockstep.
DEFAULT_BACKOFF = 0.5
DEFAULT_MAX_BACKOFF = 10.0

#: A session refused by sshd ("no more sessions") is tried again this many
#: times, after OPEN_RETRY_DELAY, doubling. See DEFAULT_MAX_CHANNELS.
OPEN_ATTEMPTS = 6
OPEN_RETRY_DELAY = 0.005

#: How long close() waits for the server to acknowledge the disconnect.
CLOSE_TIMEOUT = 5.0

#: Terminal type sent when a command asks for a pseudo-terminal.
TTY_TERM_TYPE = "xterm"


def _describe(exc: BaseException) -> str:
    """A one-line description of a connect/channel error for messages."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _describe_connect_error(exc: BaseException, timeout: float) -> str:
    """Like ``_describe``, and a timeout says what it waited for."""
    if isinstance(exc, TimeoutError):
        return f"no SSH answer in {timeout:g}s"
    return _describe(exc)


def _public_key_line(key: asyncssh.SSHKey) -> str:
    """The OpenSSH "type base64" line of a public key, without a comment."""
    kind, blob, *_comment = key.export_public_key("openssh").decode().split()
    return f"{kind} {blob}"


def _signal_status(name: str) -> int:
    """The exit status a shell reports for a process killed by signal ``name``."""
    number = getattr(signal, f"SIG{name}", None)
    return 128 + int(number) if number is not None else 255


#: AES-GCM first: asyncssh builds a new ChaCha20 context for every packet,
#: which costs more CPU per command than everything else atex-ci does; with
#: AES-NI, GCM is cheaper. Every algorithm asyncssh supports stays allowed.
PREFERRED_CIPHERS = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com"] + [
    alg.decode()
    for alg in asyncssh.encryption.get_encryption_algs()
    if alg not in (b"aes128-gcm@openssh.com", b"aes256-gcm@openssh.com")
]


class _CommandSession(asyncssh.SSHClientSession[bytes]):
    """The client side of one command's channel.

    asyncssh calls these methods from its packet handling, so output reaches
    the callbacks as it arrives with no reader tasks or queues in between.
    ``done`` resolves to the exit status when the channel closes.
    """

    def __init__(
        self,
        stdout: OutputCallback | None,
        stderr: OutputCallback | None,
        release_slot: Callable[[], None],
        describe: str,
    ) -> None:
        self.done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._stdout = stdout
        self._stderr = stderr
        self._release_slot: Callable[[], None] | None = release_slot
        self._describe = describe
        self._channel: asyncssh.SSHClientChannel[bytes] | None = None
        self._status: int | None = None

    def forget_slot(self) -> None:
        """Never give the slot back from here (the open failed; the caller owns it)."""
        self._release_slot = None

    def release_slot(self) -> None:
        """Give the channel slot back; safe to call more than once."""
        release, self._release_slot = self._release_slot, None
        if release is not None:
            release()

    def abort(self) -> None:
        """Close the channel now, discarding unsent stdin and unread output."""
        channel = self._channel
        if channel is not None:
            # The connection may already be gone; there is nothing left to close then.
            with contextlib.suppress(Exception):
                channel.abort()

    def connection_made(self, chan: asyncssh.SSHClientChannel[bytes]) -> None:
        self._channel = chan

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self.done.done():
            return  # a callback failed (or the call was cancelled): drop the rest
        callback = self._stdout if datatype is None else self._stderr
        if callback is None:
            return
        try:
            callback(data)
        except Exception as exc:
            # Raising here would make asyncssh drop the whole connection;
            # stop only this command and hand the error to run()'s caller.
            self.done.set_exception(exc)
            self.abort()

    def eof_received(self) -> bool:
        # True keeps our side open rather than answering with an EOF of our
        # own: the server closes the channel once the command has exited, and
        # that saves a packet for every command.
        return True

    def exit_status_received(self, status: int) -> None:
        self._status = status

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self._status = _signal_status(signal)

    def connection_lost(self, exc: Exception | None) -> None:
        # Called once when the channel is closed, whether by the server, by
        # us, or because the whole connection died.
        self.release_slot()
        if self.done.done():
            return
        if exc is not None:
            self.done.set_exception(
                TransportError(f"{self._describe}: connection lost: {_describe(exc)}")
            )
        elif self._status is None:
            self.done.set_exception(
                TransportError(f"{self._describe}: channel closed without an exit status")
            )
        else:
            self.done.set_result(self._status)


class SSHTransport(Transport):
    """Runs commands on one machine over one persistent SSH connection.

    Up to ``max_channels`` commands run at once (more wait their turn). The
    host key: when ``known_host_key`` (an OpenSSH public key line) is given,
    every (re)connect verifies it; when it is None, the first connect accepts
    whatever key the machine offers and pins it, so later reconnects verify
    that. The key found is in ``host_key``. ``key_path`` is the client's
    private key; without it asyncssh's defaults (~/.ssh keys, agent) apply.
    No OpenSSH client configuration file is read: the machine record is the
    whole truth about how to reach a machine.
    """

    #: A machine reached over SSH really reboots; see wait_disconnected().
    supports_reboot = True

    def __init__(
        self,
        host: str,
        port: int = 22,
        user: str = "root",
        key_path: str | Path | None = None,
        *,
        known_host_key: str | None = None,
        connect_timeout: float = 10.0,
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        max_channels: int = DEFAULT_MAX_CHANNELS,
        keepalive_interval: float = 5.0,
        keepalive_count_max: int = 3,
    ) -> None:
        if max_channels < 1:
            raise ValueError("max_channels must be at least 1")
        self.host = host
        self.port = port
        self.user = user
        self.key_path = Path(key_path) if key_path is not None else None
        self.host_key = known_host_key
        self.connect_timeout = connect_timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_channels = max_channels
        self.keepalive_interval = keepalive_interval
        self.keepalive_count_max = keepalive_count_max
        self._conn: asyncssh.SSHClientConnection | None = None
        # Whether the account's login shell is bash (probed on first connect).
        self._login_bash: bool | None = None
        self._connect_lock = asyncio.Lock()
        self._channels = asyncio.Semaphore(max_channels)

    def __repr__(self) -> str:
        return f"<SSHTransport {self._name}>"

    @property
    def _name(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        """True while the connection is open (it may still die any moment)."""
        return self._conn is not None and not self._conn.is_closed()

    # --- connecting ---

    async def connect(self) -> None:
        """Connect, retrying up to ``retries`` times with backoff.

        Does nothing when already connected. Raises TransportError when every
        attempt failed, at once when the host key does not match.
        """
        async with self._connect_lock:
            if self.connected:
                return
            await self._connect_retrying(attempts=self.retries + 1, deadline=None)

    async def reconnect(self, timeout: float) -> None:
        """Drop the old connection and connect again, retrying for up to ``timeout`` seconds."""
        async with self._connect_lock:
            await self._drop_connection()
            deadline = time.monotonic() + timeout
            await self._connect_retrying(attempts=None, deadline=deadline)

    async def _connect_retrying(self, attempts: int | None, deadline: float | None) -> None:
        """Try to connect until it works, ``attempts`` run out or ``deadline`` passes."""
        attempt = 0
        last_error: BaseException
        while True:
            attempt += 1
            timeout = self.connect_timeout
            if deadline is not None:
                timeout = min(timeout, max(deadline - time.monotonic(), 0.1))
            try:
                self._conn = await self._connect_once(timeout)
                return
            except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError) as exc:
                # Not transient either; never show the key, only its path.
                raise ConfigError(
                    f"cannot use the SSH key {self.key_path}: {exc}; a passphrase-protected "
                    "key must be loaded into ssh-agent instead"
                ) from None
            except asyncssh.PermissionDenied as exc:
                if deadline is None:
                    # Not transient on a first connect: retrying costs time and
                    # says nothing new. (Waiting for a reboot, a machine may
                    # refuse until it is fully up: that path retries.)
                    raise KeyRejectedError(
                        f"{self._name}: key rejected: {self._key_name()} "
                        f"({_describe(exc)}); check --key and the user name"
                    ) from None
                last_error = exc
            except asyncssh.HostKeyNotVerifiable:
                # Not transient: a different machine answers at this address.
                raise TransportError(
                    f"{self._name}: the host key does not match {self._key_kind()}; "
                    "the machine was replaced or this is not the reserved machine"
                ) from None
            except (OSError, TimeoutError, asyncssh.Error) as exc:
                last_error = exc
            delay = min(self.backoff * 2 ** (attempt - 1), self.max_backoff)
            delay *= random.uniform(0.5, 1.0)  # jitter: workers must not retry in lockstep
            out_of_attempts = attempts is not None and attempt >= attempts
            out_of_time = deadline is not None and time.monotonic() + delay >= deadline
            why = _describe_connect_error(last_error, timeout)
            if out_of_attempts or out_of_time:
                raise TransportError(
                    f"cannot connect to {self._name} after {attempt} attempts: {why}"
                ) from None
            # A first connect says each retry (a silent host would otherwise
            # cost a minute with no word); a reconnect after a reboot retries
            # as a matter of course.
            log.log(
                logging.WARNING if deadline is None else logging.DEBUG,
                "%s: connect attempt %d of %s failed (%s); trying again in %.1fs",
                self._name,
                attempt,
                attempts if attempts is not None else "?",
                why,
                delay,
            )
            await asyncio.sleep(delay)

    async def _connect_once(self, timeout: float) -> asyncssh.SSHClientConnection:
        options: dict[str, Any] = {}
        if self.key_path is not None:
            options["client_keys"] = [str(self.key_path)]
            options["agent_path"] = None  # only the given key: no agent surprises
        conn = await asyncssh.connect(
            self.host,
            self.port,
            username=self.user,
            encryption_algs=PREFERRED_CIPHERS,
            known_hosts=self._known_hosts(),
            config=None,
            preferred_auth="publickey",
            connect_timeout=timeout,
            keepalive_interval=self.keepalive_interval,
            keepalive_count_max=self.keepalive_count_max,
            **options,
        )
        if self.host_key is None:
            key = conn.get_server_host_key()
            if key is not None:
                self.host_key = _public_key_line(key)
        if self._login_bash is None:
            self._login_bash = await _login_shell_is_bash(conn)
        return conn

    def _known_hosts(self) -> asyncssh.SSHKnownHosts | None:
        """An in-memory known_hosts trusting only the pinned key, None before one is known."""
        if self.host_key is None:
            return None
        # This transport talks to one machine, so the entry matches any name.
        return asyncssh.import_known_hosts(f"* {self.host_key}\n")

    def _key_name(self) -> str:
        """The key we offer, as the user named it (never its contents)."""
        return str(self.key_path) if self.key_path is not None else "from your SSH agent/keys"

    def _key_kind(self) -> str:
        kind = self.host_key.split()[0] if self.host_key else "unknown"
        return f"the expected {kind} key"

    async def wait_disconnected(self, timeout: float) -> bool:
        """Wait until the connection drops (the machine went down for a reboot).

        Returns False if it is still up after ``timeout`` seconds. A machine
        that hangs instead of closing the socket is noticed by the keepalive.
        """
        conn = self._conn
        if conn is None or conn.is_closed():
            return True
        try:
            await asyncio.wait_for(conn.wait_closed(), timeout)
        except TimeoutError:
            return False
        return True

    async def _drop_connection(self) -> None:
        """Close the current connection (if any), waiting a bounded time. Never raises."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        conn.close()  # synchronous: the socket is released even if the wait is cut short
        with contextlib.suppress(TimeoutError, OSError, asyncssh.Error):
            await asyncio.wait_for(conn.wait_closed(), CLOSE_TIMEOUT)

    async def close(self) -> None:
        """Close the connection. Idempotent; never raises (except on cancellation)."""
        await self._drop_connection()

    # --- running commands ---

    async def run(
        self,
        command: str,
        *,
        stdin: bytes | None = None,
        stdout: OutputCallback | None = None,
        stderr: OutputCallback | None = None,
        tty: bool = False,
    ) -> int:
        """Run ``command`` with bash on the machine; see Transport.run.

        Raises TransportError when not connected or when the connection is
        lost before the exit status arrives. A process killed by a signal
        gives 128 + the signal number, as in a shell. After a cancellation
        (or a callback error) the channel slot comes back only once the
        remote command has ended: sshd keeps counting the session until then.
        """
        if stdin is None and not tty:
            # Stdin from /dev/null on the machine instead of an EOF message:
            # one packet less for every command.
            command = "exec </dev/null; " + command
        await self._channels.acquire()
        # _open_session gives the slot back if it fails; from then on the
        # session owns it and gives it back when the channel has closed, also
        # after a cancellation.
        session = await self._open_session(command, stdout, stderr, tty)
        try:
            if stdin is not None or tty:
                self._send_stdin(session, stdin)
            return await session.done
        finally:
            if not session.done.done():
                session.abort()  # cancelled

    async def _open_session(
        self,
        command: str,
        stdout: OutputCallback | None,
        stderr: OutputCallback | None,
        tty: bool,
    ) -> _CommandSession:
        """Open a channel running ``command``.

        The caller holds a channel slot; on any failure it is given back here
        (at once, or when a channel whose opening was cancelled has closed).
        """
        conn = self._conn
        if conn is None:
            self._channels.release()
            raise NotStartedError(f"{self._name}: not connected")
        # Whatever the login shell is, it only starts bash with the command
        # as one single-quoted word; when it is bash already, that extra bash
        # (a process start per command) is skipped.
        remote_command = command if self._login_bash else "bash -c " + shlex.quote(command)
        for attempt in range(OPEN_ATTEMPTS):
            session = _CommandSession(stdout, stderr, self._channels.release, self._name)
            opening = asyncio.ensure_future(
                conn.create_session(
                    lambda: session,  # noqa: B023 (called before the loop moves on)
                    remote_command,
                    encoding=None,
                    request_pty=tty,
                    term_type=TTY_TERM_TYPE if tty else None,
                )
            )
            try:
                # Shielded: a cancelled open still completes on the server, and
                # that channel must be closed, or sshd's session limit fills up.
                await asyncio.shield(opening)
                return session
            except asyncio.CancelledError:
                opening.add_done_callback(partial(_settle_cancelled_open, session))
                raise
            except asyncssh.ChannelOpenError as exc:
                session.forget_slot()  # kept for the next attempt, or released below
                refused = exc.code == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED
                if not refused or attempt == OPEN_ATTEMPTS - 1 or conn.is_closed():
                    self._channels.release()
                    raise NotStartedError(
                        f"{self._name}: cannot start a command: {_describe(exc)}"
                    ) from None
            except BaseException as exc:
                session.forget_slot()
                self._channels.release()
                if isinstance(exc, OSError | asyncssh.Error):
                    raise NotStartedError(
                        f"{self._name}: cannot start a command: {_describe(exc)}"
                    ) from None
                raise
            # sshd refused the session: it counts channels we already closed
            # until its main loop has cleaned them up. Wait a moment.
            try:
                await asyncio.sleep(OPEN_RETRY_DELAY * 2**attempt)
            except BaseException:
                self._channels.release()
                raise
        raise AssertionError("unreachable")

    @staticmethod
    def _send_stdin(session: _CommandSession, stdin: bytes | None) -> None:
        channel = session._channel
        if channel is None:
            return
        # The command may have finished (closing the channel) already; then
        # there is nobody left to read stdin and its exit status still counts.
        with contextlib.suppress(BrokenPipeError, OSError, asyncssh.Error):
            if stdin:
                channel.write(stdin)
            channel.write_eof()


def _settle_cancelled_open(session: _CommandSession, opening: asyncio.Future[Any]) -> None:
    """After a cancelled open: close the channel if it opened after all (the
    slot comes back when it has closed), else give the slot back now."""
    if opening.cancelled() or opening.exception() is not None:
        session.release_slot()
    else:
        session.abort()


async def _login_shell_is_bash(conn: asyncssh.SSHClientConnection) -> bool:
    """Ask the login shell whether it is bash (one round trip, once per machine)."""
    try:
        result = await conn.run('echo "${BASH_VERSION:-none}"', encoding=None, timeout=30)
    except (asyncssh.Error, OSError, TimeoutError):
        return False
    out = result.stdout if isinstance(result.stdout, bytes) else b""
    return result.exit_status == 0 and out.strip() not in (b"", b"none")
