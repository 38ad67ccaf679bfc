"""QEMU virtual machines: a cloud image booted on this host, reached over SSH.

``reserve --provisioner qemu --image PATH|URL --count N`` boots N VMs from one
cloud image (qcow2 or raw; a URL is downloaded once into a cache). Each VM
runs on its own copy-on-write qcow2 overlay, so the image itself is never
written. A cloud-init NoCloud seed (an ISO labelled ``cidata``) gives the VM
a host name and the run's SSH key for root; user-mode networking forwards a
port on 127.0.0.1 to the VM's port 22, and the machine is yielded once SSH
lets us in (its host key pinned from then on). KVM is used when /dev/kvm
answers; otherwise QEMU emulates the CPU (TCG) after a warning.

Everything of a VM lives in RUN/vms/<machine id>/: the overlay, the seed,
QEMU's pid file and QMP socket, and ``console.log``. The serial console goes
to a ring buffer inside QEMU (the guest may write without end: only the last
``CONSOLE_BYTES`` are kept), read into console.log when the VM is destroyed
or fails to boot. QEMU runs as a daemon, so a VM outlives the ``reserve``
command; its pid and overlay are recorded in the machine's handle, and
``release`` destroys it (QMP ``quit``, then SIGKILL), also after the
controller was killed. The overlay and seed are removed; console.log stays.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import platform as host_platform
import re
import shutil
import signal
import socket
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import masking
from ..errors import ConfigError, InfraError
from ..model import Machine, MachineState
from ..rundir import RunDir, now_iso
from ..transport.local import run_to_end
from ..workarea import safe_id
from .base import Provisioner, Recipe, RecipeReader, generate_run_key, try_ssh_login

if TYPE_CHECKING:
    import click

log = logging.getLogger("atex_ci")

#: Where a VM's files live, relative to the run directory.
VMS_DIR = "vms"
#: The console ring buffer inside QEMU, in bytes (a power of two, as QEMU
#: wants): a boot log of a cloud image is some tens of KiB, and a guest that
#: floods its console costs no more than this.
CONSOLE_BYTES = 1 << 20
#: Longest QMP reply read: the whole ring buffer in base64, with room to spare.
QMP_LINE_MAX = 2 * CONSOLE_BYTES
#: Seconds from QEMU's start until SSH must let us in: a cloud image boots
#: in well under a minute with KVM; emulated (TCG) it may take several.
BOOT_TIMEOUT = 600.0
#: Seconds between two SSH probes of a booting VM.
PROBE_INTERVAL = 1.0
#: Seconds a VM has to exit after QMP ``quit`` before it is killed.
QUIT_TIMEOUT = 10.0
#: Seconds any qemu-img or seed-making command may take.
TOOL_TIMEOUT = 120.0
#: Attempts at starting QEMU when the forwarded port was taken meanwhile.
PORT_ATTEMPTS = 5
#: Largest image a URL may give: a cloud image is a few hundred MiB; this
#: bounds what a wrong URL can put on the disk.
DOWNLOAD_MAX_BYTES = 20 << 30
#: Where downloaded images are kept (one per URL), unless XDG_CACHE_HOME says.
CACHE_SUBDIR = "atex-ci/images"
#: What the kernel command line is when --kernel is given without one.
DEFAULT_KERNEL_CMDLINE = "root=/dev/vda console=ttyS0"
#: Image formats an overlay can be put on (what cloud images come as).
IMAGE_FORMATS = ("qcow2", "raw")
#: Tools that make an ISO 9660 seed; all take mkisofs's options.
ISO_TOOLS = ("genisoimage", "xorrisofs", "mkisofs")
#: KVM_GET_API_VERSION (linux/kvm.h) and the only version KVM has answered.
_KVM_GET_API_VERSION = 0xAE00
_KVM_API_VERSION = 12

#: QEMU options of the two ways to run a VM: hardware virtualisation with the
#: host's CPU model, or emulation (TCG) of QEMU's most capable model.
ACCEL_KVM = ("-accel", "kvm", "-cpu", "host")
ACCEL_TCG = ("-accel", "tcg", "-cpu", "max")

_MEMORY = re.compile(r"^[1-9][0-9]*[MG]?$")
_QEMU_BINARIES = {"x86_64": "qemu-system-x86_64", "amd64": "qemu-system-x86_64"}


def kvm_usable() -> bool:
    """Whether /dev/kvm can be opened and answers KVM's API version."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return fcntl.ioctl(fd, _KVM_GET_API_VERSION) == _KVM_API_VERSION
    except OSError:
        return False
    finally:
        os.close(fd)


def qemu_binary() -> str:
    """The QEMU system emulator for this host; ConfigError if not installed."""
    name = _QEMU_BINARIES.get(host_platform.machine())
    if name is None:
        raise ConfigError(
            f"qemu: this host's architecture ({host_platform.machine()}) is not "
            "supported; VMs run on x86_64 hosts"
        )
    found = shutil.which(name)
    if found is None:
        raise ConfigError(f"qemu: {name} is not installed (Debian/Ubuntu: qemu-system-x86)")
    return found


def user_data(public_key: str) -> str:
    """cloud-init user-data: root logs in with the run's key, never a password."""
    return (
        "#cloud-config\n"
        "disable_root: false\n"
        "ssh_pwauth: false\n"
        "ssh_authorized_keys:\n"
        f"  - {json.dumps(public_key)}\n"
    )


def meta_data(instance_id: str, hostname: str) -> str:
    """cloud-init meta-data of a NoCloud seed."""
    return f"instance-id: {json.dumps(instance_id)}\nlocal-hostname: {json.dumps(hostname)}\n"


def hostname_for(machine_id: str) -> str:
    """A valid host name (RFC 1123 label) from a machine id."""
    name = re.sub(r"[^a-z0-9-]+", "-", machine_id.lower()).strip("-")[:63].strip("-")
    return name or "atex-ci-vm"


async def _tool(*argv: str, cwd: Path | None = None) -> str:
    """Run a command to completion; its stdout, or InfraError with its stderr."""
    try:
        returncode, out, err = await run_to_end(list(argv), TOOL_TIMEOUT, cwd)
    except OSError as exc:
        raise ConfigError(f"qemu: cannot run {argv[0]}: {exc.strerror or exc}") from None
    except TimeoutError:
        raise InfraError(f"qemu: {Path(argv[0]).name} did not end in {TOOL_TIMEOUT} s") from None
    if returncode != 0:
        detail = " ".join(err.decode(errors="replace").split())[:300]
        raise InfraError(f"qemu: {Path(argv[0]).name} failed ({returncode}): {detail}")
    return out.decode(errors="replace")


async def image_format(image: Path) -> str:
    """The image's format as qemu-img sees it; ConfigError if not qcow2 or raw."""
    info = json.loads(await _tool("qemu-img", "info", "--output=json", str(image)))
    fmt = info.get("format")
    if fmt not in IMAGE_FORMATS:
        raise ConfigError(f"qemu: {image} is a {fmt} image; use a qcow2 or raw cloud image")
    return str(fmt)


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / CACHE_SUBDIR


def _download(url: str) -> Path:
    """The image at ``url``, downloaded once into the cache (streamed, bounded)."""
    import requests

    digest = hashlib.sha256(url.encode()).hexdigest()[:24]
    name = safe_id(url.rsplit("/", 1)[-1].split("?", 1)[0] or "image")
    target = _cache_dir() / digest / name
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{name}.{os.getpid()}.partial")
    try:
        with requests.get(url, stream=True, timeout=60) as response:
            if response.status_code != 200:
                raise InfraError(f"qemu: downloading {url}: HTTP {response.status_code}")
            size = 0
            with open(partial, "wb") as f:
                for chunk in response.iter_content(1 << 20):
                    size += len(chunk)
                    if size > DOWNLOAD_MAX_BYTES:
                        raise InfraError(
                            f"qemu: {url} is larger than {DOWNLOAD_MAX_BYTES >> 30} GiB"
                        )
                    f.write(chunk)
        partial.replace(target)
    except requests.RequestException as exc:
        raise InfraError(f"qemu: downloading {url}: {exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    return target


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (QEMU binds it a moment later;
    if another process takes it meanwhile, QEMU fails and we try another)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_our_qemu(pid: int, overlay: str) -> bool:
    """Whether ``pid`` is the QEMU that runs ``overlay`` (not a reused pid)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(overlay.encode() in arg for arg in argv)


class _QMP:
    """A minimal QMP client over the VM's unix socket (ring buffer, quit)."""

    def __init__(self, vm_dir: Path) -> None:
        self.vm_dir = vm_dir

    async def commands(self, *commands: dict[str, Any]) -> list[Any]:
        """Send each command in turn; their ``return`` values (InfraError on error)."""
        # A unix socket path is limited to 108 bytes: reach the socket through
        # a descriptor of its directory, whatever the run directory's length.
        fd = os.open(self.vm_dir, os.O_PATH | os.O_DIRECTORY)
        try:
            reader, writer = await asyncio.open_unix_connection(
                f"/proc/self/fd/{fd}/qmp.sock", limit=QMP_LINE_MAX
            )
        finally:
            os.close(fd)
        try:
            await self._reply(reader)  # the greeting
            writer.write(b'{"execute": "qmp_capabilities"}\n')
            await self._reply(reader)
            answers = []
            for command in commands:
                writer.write(json.dumps(command).encode() + b"\n")
                await writer.drain()
                answers.append(await self._reply(reader))
            return answers
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    @staticmethod
    async def _reply(reader: asyncio.StreamReader) -> Any:
        while True:
            line = await reader.readline()
            if not line:
                return None  # QEMU closed the socket (after quit)
            message = json.loads(line)
            if "error" in message:
                raise InfraError(f"qemu: QMP: {message['error'].get('desc', message['error'])}")
            if "event" not in message:
                return message.get("return", message)


class QemuProvisioner(Provisioner):
    """Boots VMs from one cloud image with QEMU (see the module's docstring).

    ``image`` is a path or an http(s) URL; ``memory`` is QEMU's ``-m`` (MiB,
    or with an M or G suffix); ``cpus`` its ``-smp``. ``kernel``, ``initrd``
    and ``kernel_cmdline`` boot a kernel directly (for an image without a
    boot loader, e.g. a bare root file system).
    """

    kind = "qemu"

    def __init__(
        self,
        rundir: RunDir,
        platform: str = "default",
        image: str | None = None,
        memory: str = "1024",
        cpus: int = 1,
        kernel: str | None = None,
        initrd: str | None = None,
        kernel_cmdline: str | None = None,
    ) -> None:
        super().__init__(rundir, platform)
        self.image = image
        self.memory = str(memory)
        self.cpus = int(cpus)
        self.kernel = kernel
        self.initrd = initrd
        self.kernel_cmdline = kernel_cmdline
        #: QEMU's accelerator options for the next VM: KVM until it proves unusable.
        self.accel = ACCEL_KVM

    # -- how it is asked for and remembered -------------------------------------------

    @classmethod
    def options(cls) -> list[click.Option]:
        """``--image``, ``--memory``, ``--cpus`` and the direct kernel boot's three."""
        import click

        return [
            click.Option(
                ["--image"],
                multiple=True,  # as the container kinds declare it: one option, one shape
                metavar="PATH|URL",
                help="qemu: the cloud image to boot (qcow2 or raw; a URL is downloaded once).",
            ),
            click.Option(
                ["--memory"],
                metavar="SIZE",
                help="qemu: memory of each VM, in MiB or with M/G (default: 1024).",
            ),
            click.Option(
                ["--cpus"],
                type=click.IntRange(min=1),
                help="qemu: virtual CPUs of each VM (default: 1).",
            ),
            click.Option(
                ["--kernel"],
                type=click.Path(dir_okay=False, path_type=Path),
                help="qemu: boot this kernel directly instead of the image's boot loader.",
            ),
            click.Option(
                ["--initrd"],
                type=click.Path(dir_okay=False, path_type=Path),
                help="qemu: initial ramdisk for --kernel.",
            ),
            click.Option(
                ["--kernel-cmdline"],
                metavar="TEXT",
                help=f"qemu: command line for --kernel (default: {DEFAULT_KERNEL_CMDLINE}).",
            ),
        ]

    @classmethod
    def recipe_from_options(
        cls, kind: str, platform: str, values: dict[str, Any], extra: dict[str, str]
    ) -> Recipe:
        """Check the options; local paths are recorded absolute (a later
        ``run`` may start elsewhere)."""
        images = tuple(values.get("image") or ())
        if len(images) > 1:
            raise ConfigError("--provisioner qemu takes one --image")
        image = images[0] if images else None
        if not image:
            raise ConfigError("--provisioner qemu needs --image PATH|URL (a cloud image)")
        options: dict[str, Any] = {"image": _absolute(str(image))}
        memory = values.get("memory")
        if memory is not None:
            if not _MEMORY.match(str(memory)):
                raise ConfigError(f"invalid --memory {memory!r}: expected MiB, e.g. 2048 or 2G")
            options["memory"] = str(memory)
        if values.get("cpus") is not None:
            options["cpus"] = int(values["cpus"])
        for name in ("kernel", "initrd"):
            if values.get(name) is not None:
                path = Path(values[name])
                if not path.is_file():
                    raise ConfigError(f"--{name} {path}: no such file")
                options[name] = str(path.resolve())
        if values.get("kernel_cmdline") is not None:
            options["kernel_cmdline"] = str(values["kernel_cmdline"])
        if ("initrd" in options or "kernel_cmdline" in options) and "kernel" not in options:
            raise ConfigError("--initrd and --kernel-cmdline need --kernel")
        if "://" not in options["image"] and not Path(options["image"]).is_file():
            raise ConfigError(f"qemu: image {options['image']} does not exist")
        return Recipe(kind, platform, {**options, **extra})

    @classmethod
    def from_recipe(
        cls, rundir: RunDir, recorded: RecipeReader, platform: str | None = None
    ) -> Provisioner:
        """For a release (no ``platform``): no options, run.json unread (the
        machine's handle is all it needs). For a replacement: the recorded
        options, when they are for that platform."""
        if platform is None:
            return cls(rundir)
        found = recorded() or {}
        if found.get("platform", "default") != platform:
            return cls(rundir, platform)
        return cls(rundir, platform, **dict(found.get("options") or {}))

    def can_replace(self) -> bool:
        """Yes: another VM from the same image (when the recipe names one)."""
        return bool(self.image)

    # -- reserving -----------------------------------------------------------------------

    async def reserve(self, count: int) -> AsyncGenerator[Machine, None]:
        """Boot ``count`` VMs in parallel, yielding each once SSH lets us in."""
        if not self.image:
            raise ConfigError("--provisioner qemu needs --image PATH|URL (a cloud image)")
        if count < 1:
            return
        binary = qemu_binary()
        image = await self._local_image()
        fmt = await image_format(image)
        if not kvm_usable():
            self._emulate("/dev/kvm is not usable here")
        key, public_key = await asyncio.to_thread(generate_run_key, self.rundir, "qemu")
        # A VM directory of an earlier reservation that failed keeps its console.log.
        vms = self.rundir.path / VMS_DIR
        ids = {p.name for p in vms.iterdir()} if vms.is_dir() else set()
        tasks = []
        for _ in range(count):
            machine_id = self._unique_id(f"{self.platform}-qemu", ids)
            ids.add(machine_id)
            tasks.append(
                asyncio.ensure_future(self._boot(machine_id, binary, image, fmt, key, public_key))
            )
        yielded: set[asyncio.Future[Machine]] = set()
        try:
            pending = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task.exception() is None:
                        yielded.add(task)
                        yield self._reserved(task.result())
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for task in tasks:  # booted but never handed over (the caller stopped)
                if task not in yielded and not task.cancelled() and task.exception() is None:
                    await asyncio.shield(self.release(task.result()))
        failures = [e for t in tasks if not t.cancelled() and (e := t.exception()) is not None]
        if failures:
            first = failures[0]
            if not isinstance(first, InfraError):
                raise first
            why = str(first).removeprefix("qemu: ")
            raise InfraError(f"qemu: booted {len(yielded)} of {count} VM(s): {why}")

    async def _local_image(self) -> Path:
        assert self.image is not None
        if self.image.startswith(("http://", "https://")):
            return await asyncio.to_thread(_download, self.image)
        path = Path(self.image)
        if not path.is_file():
            raise ConfigError(f"qemu: image {path} does not exist")
        return path.resolve()

    async def _boot(
        self,
        machine_id: str,
        binary: str,
        image: Path,
        fmt: str,
        key: str,
        public_key: str,
    ) -> Machine:
        """Start one VM and wait until SSH lets us in; destroy it if it never does."""
        vm_dir = self.rundir.path / VMS_DIR / machine_id
        vm_dir.mkdir(parents=True, exist_ok=True)
        overlay = vm_dir / "overlay.qcow2"
        machine = Machine(
            id=machine_id,
            provisioner=self.kind,
            platform=self.platform,
            host="127.0.0.1",
            user="root",
            key=key,
            handle={"dir": f"{VMS_DIR}/{machine_id}", "overlay": str(overlay)},
            reserved_at=now_iso(),
        )
        machine.workdir = self.work_dir(machine, self.rundir.read_run()["id"])
        try:
            await _tool(
                "qemu-img", "create", "-q", "-f", "qcow2", "-F", fmt, "-b", str(image), str(overlay)
            )
            await self._make_seed(vm_dir, machine_id, public_key)
            await self._start(machine, binary, vm_dir)
            await self._wait_for_ssh(machine, vm_dir)
        except BaseException:
            await asyncio.shield(self._destroy(machine))
            raise
        return machine

    async def _make_seed(self, vm_dir: Path, machine_id: str, public_key: str) -> None:
        """seed.iso: the NoCloud data cloud-init reads (volume label ``cidata``)."""
        tool = next((t for t in ISO_TOOLS if shutil.which(t)), None)
        if tool is None:
            raise ConfigError(
                "qemu: making the cloud-init seed needs genisoimage or xorriso "
                "(Debian/Ubuntu: apt-get install genisoimage)"
            )
        seed = vm_dir / "seed"
        seed.mkdir(exist_ok=True)
        run_id = str(self.rundir.read_run()["id"])
        (seed / "meta-data").write_text(
            meta_data(f"{run_id}-{machine_id}", hostname_for(machine_id))
        )
        (seed / "user-data").write_text(user_data(public_key))
        await _tool(
            tool,
            "-quiet",
            "-output",
            str(vm_dir / "seed.iso"),
            "-volid",
            "cidata",
            "-joliet",
            "-rock",
            "user-data",
            "meta-data",
            cwd=seed,
        )
        shutil.rmtree(seed)

    def _command(self, binary: str, vm_dir: Path, accel: tuple[str, ...], port: int) -> list[str]:
        command = [
            binary,
            "-name",
            f"atex-ci-{vm_dir.name}",
            "-nodefaults",
            "-display",
            "none",
            *accel,
            "-m",
            self.memory,
            "-smp",
            str(self.cpus),
            "-drive",
            f"file={vm_dir / 'overlay.qcow2'},format=qcow2,if=virtio",
            "-drive",
            f"file={vm_dir / 'seed.iso'},format=raw,if=virtio,readonly=on",
            "-netdev",
            f"user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:22",
            "-device",
            "virtio-net-pci,netdev=net0",
            # sshd and cloud-init want entropy early; a VM without it may wait.
            "-device",
            "virtio-rng-pci",
            "-chardev",
            f"ringbuf,id=console,size={CONSOLE_BYTES}",
            "-serial",
            "chardev:console",
            "-qmp",
            "unix:qmp.sock,server=on,wait=off",
            "-pidfile",
            "qemu.pid",
            "-daemonize",
        ]
        if self.kernel:
            command += [
                "-kernel",
                self.kernel,
                "-append",
                self.kernel_cmdline or DEFAULT_KERNEL_CMDLINE,
            ]
            if self.initrd:
                command += ["-initrd", self.initrd]
        return command

    def _emulate(self, why: str) -> None:
        """From now on, emulate the CPU (TCG); warn once, saying why."""
        if self.accel == ACCEL_KVM:
            log.warning("qemu: %s; emulating the CPU (TCG), which is many times slower", why)
            self.accel = ACCEL_TCG

    async def _start(self, machine: Machine, binary: str, vm_dir: Path) -> None:
        """Start QEMU as a daemon (it outlives this command) and record its pid.
        If QEMU cannot start a VM with KVM (a /dev/kvm that answers but cannot
        run this CPU model), it is started again with TCG."""
        attempts = 0
        while True:
            port = _free_port()
            accel = self.accel
            start = asyncio.ensure_future(
                _tool(*self._command(binary, vm_dir, accel, port), cwd=vm_dir)
            )
            try:
                try:
                    await asyncio.shield(start)
                except asyncio.CancelledError:
                    # Let QEMU finish starting (a second or so): its pid file
                    # then names the daemon that must be destroyed.
                    with contextlib.suppress(Exception):
                        await start
                    raise
                break
            except InfraError as exc:
                attempts += 1
                if "forwarding" in str(exc) and attempts < PORT_ATTEMPTS:
                    continue  # the port was taken meanwhile
                if accel != ACCEL_KVM:
                    raise
                self._emulate(f"QEMU cannot start a VM with KVM ({exc})")
        machine.port = port
        pid = int((vm_dir / "qemu.pid").read_text().strip())
        machine.handle["pid"] = pid
        log.info("qemu: %s started (pid %d, SSH on 127.0.0.1:%d)", machine.id, pid, port)

    async def _wait_for_ssh(self, machine: Machine, vm_dir: Path) -> None:
        """Probe SSH until our key works, pinning the host key; InfraError with
        the console's last lines if the VM stops or never lets us in."""
        deadline = time.monotonic() + BOOT_TIMEOUT
        while True:
            last = await try_ssh_login(machine, self.rundir, connect_timeout=10.0)
            if last is None:
                return
            pid = machine.handle["pid"]
            if not _pid_alive(pid):
                raise InfraError(f"qemu: VM {machine.id} stopped while booting")
            if time.monotonic() >= deadline:
                tail = await self._save_console(machine, vm_dir)
                raise InfraError(
                    f"qemu: VM {machine.id} did not let us in over SSH within "
                    f"{BOOT_TIMEOUT:g} s ({last}); console.log ends: {tail}"
                )
            await asyncio.sleep(PROBE_INTERVAL)

    # -- releasing -----------------------------------------------------------------------

    async def release(self, machine: Machine) -> None:
        """Destroy the VM (console saved, overlay and seed removed), then forget it."""
        if machine.state != MachineState.RELEASED:
            await self._destroy(machine)
        self._released(machine)

    def _vm_dir(self, machine: Machine) -> Path | None:
        """The VM's directory as recorded, refused unless it is RUN/vms/<its id>."""
        handle = machine.handle if isinstance(machine.handle, dict) else {}
        if handle.get("dir") != f"{VMS_DIR}/{machine.id}" or safe_id(machine.id) != machine.id:
            log.warning(
                "qemu: %s has no VM directory of ours recorded; nothing to destroy", machine.id
            )
            return None
        return self.rundir.path / VMS_DIR / machine.id

    async def _destroy(self, machine: Machine) -> None:
        """Stop the VM's QEMU (QMP quit, SIGKILL if it lingers) and remove its
        disks; InfraError if it may still run."""
        vm_dir = self._vm_dir(machine)
        if vm_dir is None:
            return
        handle = machine.handle
        pid, overlay = handle.get("pid"), str(handle.get("overlay") or "")
        if pid is None:  # started but not recorded yet (the pid file says)
            with contextlib.suppress(OSError, ValueError):
                pid = int((vm_dir / "qemu.pid").read_text().strip())
        if isinstance(pid, int) and overlay and _is_our_qemu(pid, overlay):
            await self._save_console(machine, vm_dir)
            with contextlib.suppress(InfraError, OSError, asyncio.TimeoutError, ValueError):
                async with asyncio.timeout(QUIT_TIMEOUT):
                    await _QMP(vm_dir).commands({"execute": "quit"})
            await self._wait_gone(pid, overlay)
        for name in ("overlay.qcow2", "seed.iso", "qemu.pid", "qmp.sock"):
            (vm_dir / name).unlink(missing_ok=True)
        shutil.rmtree(vm_dir / "seed", ignore_errors=True)

    async def _wait_gone(self, pid: int, overlay: str) -> None:
        deadline = time.monotonic() + QUIT_TIMEOUT
        while _is_our_qemu(pid, overlay):
            if time.monotonic() >= deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + QUIT_TIMEOUT
                while _is_our_qemu(pid, overlay):
                    if time.monotonic() >= deadline:
                        raise InfraError(f"qemu: process {pid} does not end")
                    await asyncio.sleep(0.1)
                return
            await asyncio.sleep(0.1)

    async def _save_console(self, machine: Machine, vm_dir: Path) -> str:
        """Write what the console ring buffer holds to console.log (appended:
        a VM that reboots keeps its earlier output); its last line, for messages."""
        try:
            async with asyncio.timeout(QUIT_TIMEOUT):
                (answer,) = await _QMP(vm_dir).commands(
                    {
                        "execute": "ringbuf-read",
                        "arguments": {
                            "device": "console",
                            "size": CONSOLE_BYTES,
                            "format": "base64",
                        },
                    }
                )
            data = base64.b64decode(answer or "")
        except (InfraError, OSError, TimeoutError, ValueError) as exc:
            log.warning("qemu: cannot read the console of %s: %s", machine.id, exc)
            return "(unreadable)"
        data = masking.active().bytes(data)  # the guest may print a test's secrets
        with open(vm_dir / "console.log", "ab") as f:
            f.write(data)
        lines = [ln for ln in data.decode(errors="replace").splitlines() if ln.strip()]
        return " ".join(lines[-1].split())[:200] if lines else "(empty)"


def _absolute(image: str) -> str:
    """A URL as given (http or https only); a path made absolute."""
    if image.startswith(("http://", "https://")):
        return image
    if "://" in image:
        raise ConfigError(f"invalid --image {image!r}: a path, or an http(s) URL")
    return str(Path(image).expanduser().resolve())
