"""Containers: machines made from images with podman or docker on this host.

``--provisioner podman`` (or ``docker``) with ``--image [PLATFORM=]IMAGE``
(repeatable: each image is a platform) and ``--count N`` (containers of each
image). Each container runs atex-ci's own PID 1 (a shell that waits; no
sshd, no systemd), with /tmp a tmpfs, and is reached through
``transport/container.py``. ``reboot`` in a container ends that PID 1: the
container stops and the controller starts it again (a reboot keeps the
container's files, /tmp is empty, as on a machine). With ``--systemd``
(podman) the image's systemd is PID 1 instead, and its own reboot stops the
container.

Every container carries the labels ``atex-ci.run`` (the run id) and
``atex-ci.machine``, and a name made of both: ``release`` removes the
machine's container, and with it any container of the run that no recorded
machine holds (one made by a controller that was killed before it could
record it). A container is cheap: a discarded one is replaced by a new one
of the same image.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import shlex
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import ConfigError, InfraError
from ..model import Machine, MachineState
from ..rundir import RunDir, now_iso
from ..transport.base import Transport, TransportError
from ..transport.container import (
    WAIT_FOR_SYSTEMD,
    ContainerTransport,
    engine_call,
    engine_error,
)
from ..workarea import is_valid_id, safe_id
from .base import Provisioner, Recipe, RecipeReader

if TYPE_CHECKING:
    import click

log = logging.getLogger("atex_ci")

#: The labels every container of a run carries.
RUN_LABEL = "atex-ci.run"
MACHINE_LABEL = "atex-ci.machine"

#: The container's PID 1: waits, and ends on SIGTERM (``reboot``, ``stop``).
INIT = 'trap "exit 0" TERM; while :; do sleep 3600 & wait $!; done'
#: ``reboot`` in a container: end PID 1, so that the container stops; the
#: controller starts it again. Put first in PATH (/usr/local/sbin), so that
#: an image's own reboot, which needs a running systemd, is not used.
REBOOT_SHIM = "/usr/local/sbin/reboot"
_SETUP = (
    "command -v bash >/dev/null && mkdir -p /usr/local/sbin && "
    f"printf '#!/bin/sh\\nkill -TERM 1\\n' > {REBOOT_SHIM} && chmod 755 {REBOOT_SHIM}"
)

#: Seconds systemd may take to boot in a container before it is used as it is.
SYSTEMD_BOOT_TIMEOUT = 120

#: With --systemd: the image's own reboot works; wait until it has booted
#: (``degraded`` is booted too: a unit that fails in a container is common).
_SYSTEMD_SETUP = (
    "command -v bash >/dev/null && "
    f"{{ timeout {SYSTEMD_BOOT_TIMEOUT} bash -O extglob -c {shlex.quote(WAIT_FOR_SYSTEMD)}; "
    'test "$(cat /proc/1/comm)" = systemd; }'
)

#: Bound on making one container ready (the image is local or pulled once;
#: a pull of a large image over a slow link takes minutes).
CREATE_TIMEOUT = 900.0
#: Bound on removing one container.
REMOVE_TIMEOUT = 60.0

#: An image reference as the engines take it (name[:tag][@digest]), and a
#: platform name given for it.
_IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,511}")

#: Containers this process is making and has not yielded yet, by name: never
#: taken for a killed controller's leftovers (see ``_sweep``).
_CREATING: set[str] = set()


def parse_images(values: tuple[str, ...] | list[str], platform: str) -> dict[str, str]:
    """``--image [PLATFORM=]IMAGE`` values as {platform: image}. One image
    without a platform of its own is ``platform``'s; with several, each is
    named after its image (``fedora:41`` is ``fedora-41``)."""
    images: dict[str, str] = {}
    for value in values:
        name, sep, image = value.strip().rpartition("=")
        if not _IMAGE.fullmatch(image):
            raise ConfigError(f"invalid --image {value!r}: expected [PLATFORM=]IMAGE")
        if not sep:
            name = platform if len(values) == 1 else _platform_of(image)
        elif not is_valid_id(name):
            raise ConfigError(f"invalid platform {name!r} in --image {value!r}")
        if name in images:
            raise ConfigError(
                f"--image: two images for platform {name!r}; name them PLATFORM=IMAGE"
            )
        images[name] = image
    return images


def _platform_of(image: str) -> str:
    """A platform name for an image: its last path component, tag included."""
    last = image.rsplit("/", 1)[-1].split("@", 1)[0]
    return safe_id(last.replace(":", "-"))


def container_name(run_id: str, machine_id: str) -> str:
    """The container's name: the run and the machine (what engines allow of it)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", machine_id)
    if name != machine_id:  # two ids must not map to one name
        name += "-" + hashlib.sha256(machine_id.encode()).hexdigest()[:8]
    return f"atex-ci-{run_id}-{name}"


class ContainerProvisioner(Provisioner):
    """Containers of one engine; ``images`` is {platform: image}."""

    #: The engine's command (podman or docker).
    engine: ClassVar[str] = ""

    def __init__(
        self,
        rundir: RunDir,
        platform: str = "default",
        images: dict[str, str] | None = None,
        systemd: bool = False,
    ) -> None:
        super().__init__(rundir, platform)
        self.images = dict(images or {})
        for name, image in self.images.items():
            # Also what run.json gave back: never an option to the engine.
            if not is_valid_id(name) or not _IMAGE.fullmatch(str(image)):
                raise ConfigError(f"invalid image {image!r} for platform {name!r}")
        #: Boot the image's systemd as PID 1 instead of atex-ci's own.
        self.systemd = bool(systemd)

    # -- asked for and remembered ----------------------------------------------------

    @classmethod
    def options(cls) -> list[click.Option]:
        """``--image`` (shared by the container kinds: see options.py)."""
        import click

        return [
            click.Option(
                ["--image"],
                multiple=True,
                metavar="[PLATFORM=]IMAGE",
                help="podman, docker: the image to run containers of (repeatable: one "
                "platform per image; --count containers of each). qemu: the cloud image "
                "to boot (PATH or URL, once).",
            ),
            click.Option(
                ["--systemd"],
                is_flag=True,
                default=None,
                help="podman: boot the image's systemd (/sbin/init) in each container, instead "
                "of atex-ci's own PID 1; a reboot boots it again.",
            ),
        ]

    @classmethod
    def recipe_from_options(
        cls, kind: str, platform: str, values: dict[str, Any], extra: dict[str, str]
    ) -> Recipe:
        images = parse_images(tuple(values.get("image") or ()), platform)
        if not images:
            raise ConfigError(f"--provisioner {kind} needs --image IMAGE")
        if values.get("systemd"):
            if cls.engine != "podman":
                raise ConfigError(f"--systemd is for --provisioner podman, not {kind}")
            return Recipe(kind, platform, {"images": images, "systemd": True})
        return Recipe(kind, platform, {"images": images})

    @classmethod
    def from_recipe(
        cls, rundir: RunDir, recorded: RecipeReader, platform: str | None = None
    ) -> Provisioner:
        """For a release: no images needed, run.json unread. For a replacement:
        the image recorded for that platform (none: cannot replace)."""
        if platform is None:
            return cls(rundir)
        found = recorded() or {}
        options = found.get("options") or {}
        images = {p: i for p, i in dict(options.get("images") or {}).items() if p == platform}
        return cls(rundir, platform, images, systemd=bool(options.get("systemd")))

    def platforms(self) -> set[str]:
        return set(self.images) or {self.platform}

    def can_replace(self) -> bool:
        return bool(self.images)

    # -- machines --------------------------------------------------------------------

    def transport(self, machine: Machine) -> Transport:
        handle = machine.handle if isinstance(machine.handle, dict) else {}
        return ContainerTransport([self.engine], str(handle.get("container") or machine.id))

    async def reserve(self, count: int) -> AsyncGenerator[Machine, None]:
        """``count`` new containers of each image, each yielded once it runs commands."""
        run_id = self.rundir.read_run()["id"]
        taken = {m.id for m in self.rundir.read_machines()} | set(self.reserved)
        planned: list[Machine] = []
        for platform, image in self.images.items():
            n = 0
            for _ in range(count):
                n += 1
                while f"{platform}-{n}" in taken:
                    n += 1
                machine_id = safe_id(f"{platform}-{n}")
                taken.add(machine_id)
                planned.append(self._planned(run_id, machine_id, platform, image))
        tasks = {asyncio.ensure_future(self._create(m)): m for m in planned}
        handed: set[str] = set()
        errors: list[str] = []
        try:
            for next_done in asyncio.as_completed(tasks):
                try:
                    machine = await next_done
                except InfraError as exc:
                    errors.append(str(exc))
                    continue
                handed.add(machine.id)
                _CREATING.discard(machine.handle["container"])
                yield self._reserved(machine)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            left = [m for m in planned if m.id not in handed]
            # Shielded and bounded: what was made and not handed over goes.
            await asyncio.shield(self._remove_all(left))
        if errors:
            more = f" ({len(errors) - 1} more failed)" if len(errors) > 1 else ""
            raise InfraError(f"{errors[0]}{more}")

    def _planned(self, run_id: str, machine_id: str, platform: str, image: str) -> Machine:
        name = container_name(run_id, machine_id)
        machine = Machine(
            id=machine_id,
            provisioner=self.kind,
            platform=platform,
            host=None,
            user="root",
            handle={"container": name, "image": image, "run": run_id},
            reserved_at=now_iso(),
        )
        machine.workdir = self.work_dir(machine, run_id)
        return machine

    async def _create(self, machine: Machine) -> Machine:
        """Make the machine's container and wait until it runs commands."""
        name = machine.handle["container"]
        _CREATING.add(name)
        image = machine.handle["image"]
        try:
            async with asyncio.timeout(CREATE_TIMEOUT):
                rc, _out, err = await engine_call(
                    [self.engine],
                    *self._run_args(machine, name),
                    image,
                    *([] if self.systemd else ["-c", INIT]),
                    timeout=CREATE_TIMEOUT,
                )
                if rc != 0:
                    raise InfraError(
                        f"{self.engine}: cannot start a container of {image}: {engine_error(err)}"
                    )
                transport = ContainerTransport([self.engine], name)
                try:
                    await transport.connect()
                    rc, _o, err_b = await transport.output(
                        _SYSTEMD_SETUP if self.systemd else _SETUP
                    )
                finally:
                    await transport.close()
                if rc != 0:
                    raise InfraError(
                        f"{image}: the image has no bash, or / is not writable "
                        f"({err_b.decode(errors='replace').strip()[:200] or f'exit {rc}'})"
                    )
        except TimeoutError:
            raise InfraError(
                f"{self.engine}: a container of {image} was not ready in {CREATE_TIMEOUT:g} s"
            ) from None
        except TransportError as exc:
            raise InfraError(f"{self.engine}: container of {image}: {exc}") from None
        return machine

    def _run_args(self, machine: Machine, name: str) -> list[str]:
        hostname = re.sub(r"[^a-z0-9-]", "-", machine.id.lower()).strip("-")[:63] or "atex-ci"
        return [
            "run",
            "--detach",
            "--name",
            name,
            "--hostname",
            hostname,
            "--label",
            f"{RUN_LABEL}={machine.handle['run']}",
            "--label",
            f"{MACHINE_LABEL}={machine.id}",
            # systemd: podman mounts /tmp, /run... as systemd expects them.
            *(["--systemd=always"] if self.systemd else ["--tmpfs", "/tmp"]),
            "--entrypoint",
            "/sbin/init" if self.systemd else "/bin/sh",
        ]

    # -- releasing -------------------------------------------------------------------

    async def release(self, machine: Machine) -> None:
        """Remove the machine's container (one that is gone is fine), then
        any container of the run that no recorded machine holds."""
        if machine.state == MachineState.RELEASED:
            return
        handle = machine.handle if isinstance(machine.handle, dict) else {}
        name = handle.get("container")
        run_id = handle.get("run")
        if isinstance(name, str) and isinstance(run_id, str):
            if name != container_name(run_id, machine.id):
                raise ConfigError(
                    f"machine {machine.id}: machines.json names container {name!r}, which "
                    "atex-ci would not have made; refusing to remove it"
                )
            await self._remove(name)
            with contextlib.suppress(InfraError, OSError, ValueError):
                await self._sweep(run_id, machine.id)
        self._released(machine)

    async def _remove(self, name: str) -> None:
        """Remove a container, running or not; one that is gone is fine."""
        try:
            rc, _out, err = await engine_call(
                [self.engine], "rm", "--force", name, timeout=REMOVE_TIMEOUT
            )
        except (TimeoutError, TransportError) as exc:
            raise InfraError(f"cannot remove container {name}: {exc or 'timed out'}") from None
        if rc != 0 and "no such container" not in err.lower():
            raise InfraError(f"cannot remove container {name}: {engine_error(err)}")

    async def _remove_all(self, machines: list[Machine]) -> None:
        async def one(machine: Machine) -> None:
            name = machine.handle["container"]
            try:
                await self._remove(name)
            except InfraError as exc:
                log.warning("%s", exc)
            finally:
                _CREATING.discard(name)

        await asyncio.gather(*(one(m) for m in machines))

    async def _sweep(self, run_id: str, releasing: str) -> None:
        """Remove the run's containers that no machine in machines.json holds
        (made by a controller that was killed before recording them)."""
        held = {
            container_name(run_id, m.id)
            for m in self.rundir.read_machines()
            if m.state != MachineState.RELEASED and m.id != releasing
        }
        rc, out, _err = await engine_call(
            [self.engine],
            "ps",
            "--all",
            "--filter",
            f"label={RUN_LABEL}={run_id}",
            "--format",
            "{{.Names}}",
        )
        if rc != 0:
            return
        prefix = f"atex-ci-{run_id}-"
        for name in out.split():
            if name.startswith(prefix) and name not in held and name not in _CREATING:
                log.info("removing container %s, which no machine of the run holds", name)
                await self._remove(name)


class PodmanProvisioner(ContainerProvisioner):
    kind = "podman"
    engine = "podman"


class DockerProvisioner(ContainerProvisioner):
    kind = "docker"
    engine = "docker"


__all__ = [
    "ContainerProvisioner",
    "DockerProvisioner",
    "PodmanProvisioner",
    "container_name",
    "parse_images",
]
