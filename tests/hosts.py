"""Real OpenSSH test hosts: isolated sshd "machines" on loopback addresses.

Each ``SSHHost`` is an ``sshd`` running as root in its own mount, UTS and PID
namespace, listening on its own address ``127.0.0.N:22`` (N >= 2; Linux routes
all of 127.0.0.0/8 to ``lo``, so no configuration is needed). Inside a host:

- private tmpfs on /tmp, /run (with /run/sshd) and /usr/local/sbin, emptied by
  a reboot; a private /var/tmp that survives reboots, as on a real disk (tmt
  and atex-ci keep their work directories there across a test's reboots);
- its own hostname (``hostN``) and its own /proc (``ps`` sees only its processes);
- ``reboot`` in /usr/local/sbin (first in root's PATH under sshd) reboots it;
- an empty file bound over /root/.bashrc, whose ``pyenv init`` would cost
  about 95 ms per SSH session and swamp every measurement.

A host is "powered" by a small bash supervisor on the real host that boots the
namespace again whenever its PID 1 exits; that is what a reboot is: PID 1 dies
(the kernel then kills every process of the machine), and after a short delay
a fresh namespace starts on the same address with the same host keys. The host
keys and the client key pair are generated per pool in a temporary directory.

``HostPool`` allocates addresses (a counter from 2, skipping addresses that
another process holds a lock for or that already answer) and stops every host
it started. The pytest fixtures live in tests/conftest.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

SSHD = "/usr/sbin/sshd"

#: How long to wait for a (re)booted host's sshd to answer; sshd starts in
#: ~50 ms, so this only matters when something is wrong.
READY_TIMEOUT = 15.0

#: Pause between PID 1 dying and the next boot, like a machine's POST.
REBOOT_DELAY = 0.2

#: Where the host's state directory appears inside the host. /tmp is hidden
#: by the private tmpfs, so the state directory (under the real /tmp) is bound
#: here before that tmpfs is mounted.
STATE_INSIDE = "/run/atex-host"

#: Per-address lock files, so two test processes on one machine never pick
#: the same address (flock is released by the kernel if a process dies).
LOCK_DIR = Path(tempfile.gettempdir()) / "atex-ci-test-hosts.locks"

# PID 1 of a host. It records its PID as the parent namespace sees it (the
# /proc mounted here is still the parent's, and bash's `read` opens
# /proc/self without forking), builds the private mounts, then runs sshd.
# SIGUSR1 (sent by `reboot` inside the host) makes it exit: the machine dies.
INIT_SCRIPT = r"""#!/bin/bash
set -eu
state=$1 name=$2 boot=$3
read -r outer_pid _ < /proc/self/stat
hostname "$name"
mount -t proc proc /proc
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/sshd __STATE__
mount --bind "$state" __STATE__
mkdir -p "$state/var-tmp"
chmod 1777 "$state/var-tmp"
mount --bind "$state/var-tmp" /var/tmp
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=0755 tmpfs /usr/local/sbin
# A second, unprivileged user (SSHHost.other_user), only inside this machine:
# its own passwd and group, a fresh home and its authorized key on each boot.
mount --bind __STATE__/passwd /etc/passwd
mount --bind __STATE__/group /etc/group
install -d -o __UID__ -g __UID__ -m 0755 __HOME__
install -d -m 0755 /run/atex-keys
install -m 0644 __STATE__/authorized_keys /run/atex-keys/__USER__
install -m 0755 __STATE__/reboot /usr/local/sbin/reboot
if [ -e /root/.bashrc ]; then mount --bind __STATE__/empty /root/.bashrc; fi
cd /
echo "=== boot $boot ===" >> __STATE__/sshd.log
echo "$boot $outer_pid" > __STATE__/boot.tmp
mv __STATE__/boot.tmp __STATE__/boot
trap 'exit 0' USR1
trap 'exit 143' TERM
/usr/sbin/sshd -D -e -f __STATE__/sshd_config 2>> __STATE__/sshd.log &
wait $!
"""

#: The unprivileged user every test host has besides root (uid and gid
#: OTHER_UID, home in the machine's /run), reached with the pool's key.
OTHER_USER = "atexuser"
OTHER_UID = 4242
OTHER_HOME = f"/run/home-{OTHER_USER}"
INIT_SCRIPT = (
    INIT_SCRIPT.replace("__STATE__", STATE_INSIDE)
    .replace("__USER__", OTHER_USER)
    .replace("__UID__", str(OTHER_UID))
    .replace("__HOME__", OTHER_HOME)
)

# Keeps one host "powered": boots its namespace again whenever PID 1 exits.
# setpriv/--kill-child make the namespace die with the supervisor even if the
# supervisor is SIGKILLed, so nothing outlives it.
SUPERVISOR_SCRIPT = r"""#!/bin/bash
state=$1 name=$2 delay=$3 boot=$4
# kill() creates "poweroff" and then kills PID 1: no more boots.
while [ ! -e "$state/poweroff" ]; do
    boot=$((boot + 1))
    setpriv --pdeathsig KILL -- unshare --mount --uts --pid --fork \
        --propagation private --kill-child \
        /bin/bash "$state/init.sh" "$state" "$name" "$boot" >> "$state/console.log" 2>&1
    echo "boot $boot ended: exit status $?" >> "$state/console.log"
    [ -e "$state/poweroff" ] || sleep "$delay"
done
"""

REBOOT_SCRIPT = """#!/bin/bash
# Test host reboot: PID 1 exits on SIGUSR1, taking every process with it.
kill -USR1 1
# Like a real reboot, the caller never gets to continue.
exec sleep 60
"""

SSHD_CONFIG = """\
ListenAddress {address}:22
HostKey {state}/ssh_host_ed25519_key
PidFile {state}/sshd.pid
AuthorizedKeysFile {state}/authorized_keys /run/atex-keys/%u
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
PrintMotd no
PrintLastLog no
LogLevel INFO
Subsystem sftp /usr/lib/openssh/sftp-server
"""


class HostError(RuntimeError):
    """A test host could not be started or stopped."""


def _write_accounts(state_dir: Path) -> None:
    """The machine's /etc/passwd and /etc/group: the real ones plus OTHER_USER."""
    passwd = Path("/etc/passwd").read_text()
    group = Path("/etc/group").read_text()
    passwd += f"{OTHER_USER}:x:{OTHER_UID}:{OTHER_UID}::{OTHER_HOME}:/bin/bash\n"
    group += f"{OTHER_USER}:x:{OTHER_UID}:\n"
    (state_dir / "passwd").write_text(passwd)
    (state_dir / "group").write_text(group)
    (state_dir / "passwd").chmod(0o644)
    (state_dir / "group").chmod(0o644)


def missing_requirements() -> str | None:
    """Return why test hosts cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "test hosts need root (mount/PID namespaces, sshd on port 22)"
    for tool in (SSHD, "unshare", "setpriv", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"test hosts need {tool} (install openssh-server and util-linux)"
    return None


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )


def _public_key_line(path: Path) -> str:
    """The "type base64" part of an OpenSSH public key file (comment dropped)."""
    kind, blob, *_comment = path.read_text().split()
    return f"{kind} {blob}"


class PidNamespace:
    """A handle on one PID namespace (one boot of a host), to find its processes.

    The kernel reuses a namespace's id ("pid:[N]") once the namespace is gone,
    so a bare id could later name another boot; the open file descriptor held
    here keeps the id reserved until close().
    """

    def __init__(self, pid: int) -> None:
        self._fd = os.open(f"/proc/{pid}/ns/pid", os.O_RDONLY)
        info = os.fstat(self._fd)
        self.id = (info.st_dev, info.st_ino)

    def processes(self) -> list[int]:
        """PIDs (as seen here) of every process still in this namespace."""
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                info = os.stat(f"/proc/{entry}/ns/pid")
            except OSError:
                continue  # exited meanwhile, or a kernel thread
            if (info.st_dev, info.st_ino) == self.id:
                pids.append(int(entry))
        return pids

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> PidNamespace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def process_start_time(pid: int) -> int | None:
    """The start time of process ``pid`` (clock ticks since boot), None if it is gone.

    (pid, start time) names a process for good; a PID alone may be reused.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22; the command name (field 2) may contain spaces, so split after it.
    return int(stat.rsplit(")", 1)[1].split()[19])


def port_answers(address: str, port: int = 22, timeout: float = 1.0) -> bool:
    """True if something accepts TCP connections on ``address:port``."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def _ssh_banner(address: str, port: int, timeout: float) -> bytes:
    with socket.create_connection((address, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        return sock.recv(256)


class SSHHost:
    """One test machine: an sshd in its own namespaces on ``address:22``.

    Attributes the tests use: ``address``, ``port``, ``user``, ``key_path``
    (client private key), ``host_key`` (the host's public key line, for
    known_hosts), ``hostname``, ``boot_count``, ``sshd_log``, ``other_user`` (a
    user without privileges, reached with the same key).
    """

    port = 22
    user = "root"
    #: A user without privileges on the machine (same key as root).
    other_user = OTHER_USER

    def __init__(self, address: str, state_dir: Path, key_path: Path) -> None:
        self.address = address
        self.hostname = "host" + address.rsplit(".", 1)[1]
        self.state_dir = state_dir
        self.key_path = key_path
        self.sshd_log = state_dir / "sshd.log"
        self._supervisor: subprocess.Popen[bytes] | None = None
        state_dir.mkdir(mode=0o700)
        host_key = state_dir / "ssh_host_ed25519_key"
        _keygen(host_key, f"root@{self.hostname}")
        self.host_key = _public_key_line(host_key.with_suffix(".pub"))
        (state_dir / "authorized_keys").write_text(key_path.with_suffix(".pub").read_text())
        (state_dir / "sshd_config").write_text(
            SSHD_CONFIG.format(address=address, state=STATE_INSIDE)
        )
        (state_dir / "init.sh").write_text(INIT_SCRIPT)
        (state_dir / "supervisor.sh").write_text(SUPERVISOR_SCRIPT)
        (state_dir / "reboot").write_text(REBOOT_SCRIPT)
        (state_dir / "empty").write_bytes(b"")
        _write_accounts(state_dir)

    def __repr__(self) -> str:
        return f"<SSHHost {self.hostname} {self.address} boot {self.boot_count}>"

    # --- state the supervisor and PID 1 leave in the state directory ---

    def _boot_record(self) -> tuple[int, int]:
        """(boot number, PID 1 as seen from here) of the latest boot, or (0, 0)."""
        try:
            boot, pid = (self.state_dir / "boot").read_text().split()
        except (OSError, ValueError):
            return 0, 0
        return int(boot), int(pid)

    @property
    def boot_count(self) -> int:
        """How many times this host has booted (1 after start())."""
        return self._boot_record()[0]

    @property
    def init_pid(self) -> int:
        """PID 1 of the current boot, as seen from the real host (0 if none yet)."""
        return self._boot_record()[1]

    def _live_init_pid(self) -> int | None:
        """PID 1 of the current boot if it is still that process, else None.

        The boot record may be stale and its PID reused by an unrelated
        process, which must never be signalled: check its command line.
        """
        boot, pid = self._boot_record()
        if not pid:
            return None
        init = str(self.state_dir / "init.sh")
        expected = f"/bin/bash\0{init}\0{self.state_dir}\0{self.hostname}\0{boot}\0"
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_text()
        except OSError:
            return None
        return pid if cmdline == expected else None

    def namespace(self) -> PidNamespace:
        """A handle on the current boot's PID namespace (close it after use).

        Raises HostError if the host is not running.
        """
        pid = self._live_init_pid()
        try:
            if pid is None:
                raise OSError
            return PidNamespace(pid)
        except OSError:
            raise HostError(f"{self.hostname} is not running") from None

    @property
    def running(self) -> bool:
        return self._supervisor is not None and self._supervisor.poll() is None

    def processes(self) -> list[int]:
        """PIDs (as seen here) of every process of the current boot."""
        try:
            namespace = self.namespace()
        except HostError:
            return []
        with namespace:
            return namespace.processes()

    def log_tail(self, lines: int = 20) -> str:
        """The end of sshd's log (and the supervisor's console), for error messages."""
        parts = []
        for name in ("sshd.log", "console.log"):
            try:
                text = (self.state_dir / name).read_text(errors="replace")
            except OSError:
                continue
            parts.append(f"--- {name} ---\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(parts)

    # --- power ---

    def start(self, timeout: float = READY_TIMEOUT) -> None:
        """Power the host on and wait until its sshd answers."""
        self.wait_ready(self.spawn(), timeout)

    def spawn(self) -> int:
        """Power the host on without waiting; return the number of the coming boot."""
        if self.running:
            raise HostError(f"{self.hostname} is already running")
        # Boot numbers continue across kill()/start(), like a real machine's.
        last_boot = self.boot_count
        (self.state_dir / "poweroff").unlink(missing_ok=True)
        command = ["bash", str(self.state_dir / "supervisor.sh"), str(self.state_dir)]
        command += [self.hostname, str(REBOOT_DELAY), str(last_boot)]
        if threading.current_thread() is threading.main_thread():
            # The machine dies with this process even if it is SIGKILLed. Not
            # from other threads: the death signal follows the *thread* that
            # forked, and a worker thread (asyncio.to_thread) may exit first.
            command = ["setpriv", "--pdeathsig", "KILL", "--", *command]
        self._supervisor = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, killed as one
        )
        return last_boot + 1

    def wait_ready(self, boot: int | None = None, timeout: float = READY_TIMEOUT) -> None:
        """Wait until boot number ``boot`` (default: any) runs sshd that answers.

        Raises HostError with the end of sshd's log if it does not within
        ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        want = f"Server listening on {self.address} port 22"
        while time.monotonic() < deadline:
            if not self.running:
                raise HostError(f"{self.hostname} is not running\n{self.log_tail()}")
            current = self.boot_count
            if boot is None or current >= boot:
                log = self._current_boot_log(current)
                if "Cannot bind any address" in log:
                    raise HostError(
                        f"{self.hostname}: sshd cannot listen on {self.address}:22"
                        f"\n{self.log_tail()}"
                    )
                if want in log:
                    with contextlib.suppress(OSError):
                        if _ssh_banner(self.address, self.port, 1.0).startswith(b"SSH-2.0-"):
                            return
            time.sleep(0.01)
        raise HostError(
            f"{self.hostname} ({self.address}:22) did not come up within {timeout} s"
            f"\n{self.log_tail()}"
        )

    def _current_boot_log(self, boot: int) -> str:
        try:
            text = self.sshd_log.read_text(errors="replace")
        except OSError:
            return ""
        marker = f"=== boot {boot} ==="
        index = text.rfind(marker)
        return text[index:] if index >= 0 else ""

    def reboot(self, timeout: float = READY_TIMEOUT) -> None:
        """Hard-reset the host (SIGKILL its PID 1) and wait until it is back."""
        boot = self.boot_count
        pid = self._live_init_pid()
        if not self.running or pid is None:
            raise HostError(f"{self.hostname} is not running")
        with contextlib.suppress(ProcessLookupError):
            # PID 1 dying takes the whole namespace with it; the supervisor
            # then boots the next one.
            os.kill(pid, signal.SIGKILL)
        self.wait_ready(boot + 1, timeout)

    def wait_rebooted(self, after_boot: int, timeout: float = READY_TIMEOUT) -> None:
        """Wait until a reboot that started during boot ``after_boot`` completed."""
        self.wait_ready(after_boot + 1, timeout)

    def kill(self) -> None:
        """Power the host off for good (a lost machine): every process dies now."""
        supervisor = self._supervisor
        if supervisor is None:
            return
        (self.state_dir / "poweroff").touch()
        deadline = time.monotonic() + 10
        try:
            # Kill PID 1 of whatever boot is current until the supervisor sees
            # "poweroff" and exits: each parent then reaps its child at once
            # (orphans wait for the container's init, which can take seconds).
            while supervisor.poll() is None and time.monotonic() < deadline:
                try:
                    namespace = self.namespace()
                except HostError:
                    namespace = None
                if namespace is not None:
                    with namespace:
                        pid = self._live_init_pid()
                        if pid is not None and pid in namespace.processes():
                            with contextlib.suppress(ProcessLookupError):
                                os.kill(pid, signal.SIGKILL)
                        self._wait_empty(namespace)
                time.sleep(0.005)
        finally:
            # Normally all gone already; a hung supervisor goes here, with its
            # process group (setpriv/unshare and PID 1).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(supervisor.pid, signal.SIGKILL)
            supervisor.wait(timeout=10)
            self._supervisor = None

    def _wait_empty(self, namespace: PidNamespace, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while namespace.processes():
            if time.monotonic() > deadline:
                raise HostError(f"{self.hostname}: processes outlived its PID 1")
            time.sleep(0.01)

    def stop(self) -> None:
        """Kill the host and remove its state directory. Idempotent."""
        try:
            self.kill()
        finally:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def regenerate_host_key(self) -> None:
        """Give the host a new host key, used from its next boot on ("reinstalled")."""
        key = self.state_dir / "ssh_host_ed25519_key"
        key.unlink()
        key.with_suffix(".pub").unlink()
        _keygen(key, f"root@{self.hostname}")
        self.host_key = _public_key_line(key.with_suffix(".pub"))

    def freeze(self) -> None:
        """Stop every process of the host (SIGSTOP): it hangs without closing sockets."""
        self._signal_all(signal.SIGSTOP)

    def thaw(self) -> None:
        """Undo freeze()."""
        self._signal_all(signal.SIGCONT)

    def _signal_all(self, sig: signal.Signals) -> None:
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


def _addresses() -> Iterator[str]:
    """127.0.0.2, 127.0.0.3, ... 127.0.0.254, 127.0.1.2, ... (all loopback)."""
    for index in itertools.count():
        third, fourth = divmod(index, 253)
        yield f"127.0.{third % 256}.{fourth + 2}"


# One sequence per test process: hosts of different tests never share an
# address, even if a test leaked one. Only loopback addresses, ever.
_ADDRESSES = _addresses()
_ADDRESSES_LOCK = threading.Lock()


class HostPool:
    """Starts test hosts and stops every one of them in stop_all()."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="atex-ci-hosts-"))
        self.key_path = self.dir / "client_key"
        _keygen(self.key_path, "atex-ci-tests")
        self.hosts: list[SSHHost] = []
        self._locks: list[int] = []

    def start(self, count: int, timeout: float = READY_TIMEOUT) -> list[SSHHost]:
        """Start ``count`` hosts (booting in parallel) and wait until all answer."""
        hosts = []
        boots = []
        for _ in range(count):
            address = self._allocate_address()
            host = SSHHost(address, self.dir / address, self.key_path)
            self.hosts.append(host)
            boots.append(host.spawn())
            hosts.append(host)
        for host, boot in zip(hosts, boots, strict=True):
            host.wait_ready(boot, timeout)
        return hosts

    def _allocate_address(self) -> str:
        LOCK_DIR.mkdir(exist_ok=True)
        with _ADDRESSES_LOCK:
            for _ in range(10_000):
                address = next(_ADDRESSES)
                fd = os.open(LOCK_DIR / address, os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue  # another test process has it
                if port_answers(address, timeout=0.2):
                    os.close(fd)  # a leftover sshd (or anything else) is there
                    continue
                self._locks.append(fd)
                return address
        raise HostError("no free loopback address for a test host")

    def stop_all(self) -> None:
        """Stop every host this pool started, then remove its files. Never skips one."""
        errors = []
        for host in self.hosts:
            try:
                host.stop()
            except Exception as exc:  # keep stopping the others
                errors.append(f"{host.hostname}: {exc}")
        for fd in self._locks:
            os.close(fd)
        self._locks.clear()
        shutil.rmtree(self.dir, ignore_errors=True)
        if errors:
            raise HostError("stopping test hosts failed: " + "; ".join(errors))
