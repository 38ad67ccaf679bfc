"""Static hosts: machines that already exist and answer over SSH.

They come from ``reserve --host`` or an inventory file (``reserve --hosts``,
see ``inventory.py``). Reserving checks that each host answers and records
its host key; every later connection verifies that key. Releasing removes
the run's work directory from the host (best effort) and forgets the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shlex
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError, InfraError
from ..execute.reaper import reap_command, run_owner
from ..model import Machine, MachineState
from ..rundir import RunDir, now_iso
from ..transport.base import KeyRejectedError
from ..workarea import check_machine
from .base import Provisioner, RecipeReader

if TYPE_CHECKING:
    import click

log = logging.getLogger("atex_ci")

#: Seconds release may spend cleaning a host before it just forgets it.
RELEASE_TIMEOUT = 15.0

#: Extra connect attempts when checking a host at reserve time (about 3 s of
#: backoff in all): enough for a host that is briefly busy, short enough that
#: a dead host in a fleet costs little with --skip-unreachable.
CHECK_RETRIES = 3

_HOST_SPEC = re.compile(
    r"^(?:(?P<user>[^@\s]+)@)?(?P<host>\[[^\]]+\]|[^:@\s\[\]]+)(?::(?P<port>\d+))?$"
)


@dataclass
class HostSpec:
    """One existing machine: where it is, and optionally its own key and platform."""

    host: str
    port: int = 22
    user: str = "root"
    #: Path of the private key for this host (None: the provisioner's key or the agent).
    key: str | None = None
    #: Platform this host provides (None: the provisioner's platform).
    platform: str | None = None

    @classmethod
    def parse(cls, text: str) -> HostSpec:
        """Parse ``[user@]host[:port]`` (IPv6 in brackets); ConfigError if malformed."""
        match = _HOST_SPEC.match(text.strip())
        if not match:
            raise ConfigError(f"invalid host {text!r}: expected [user@]host[:port]")
        port = int(match["port"] or 22)
        if not 0 < port < 65536:
            raise ConfigError(f"invalid port in host {text!r}")
        return cls(host=match["host"].strip("[]"), port=port, user=match["user"] or "root")

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}:{self.port}"


class StaticProvisioner(Provisioner):
    """Hands out existing hosts, each after checking that it answers over SSH.

    ``key`` is the private key for hosts whose spec names none (None: your
    SSH agent and keys). With ``skip_unreachable`` a host that does not answer
    is skipped with a warning and every other host is yielded as soon as it
    answers; without it, every host is checked first and one that does not
    answer is an InfraError naming it, with nothing yielded.
    """

    kind = "static"

    def __init__(
        self,
        rundir: RunDir,
        platform: str = "default",
        hosts: list[HostSpec] | None = None,
        key: str | None = None,
        *,
        skip_unreachable: bool = False,
    ) -> None:
        super().__init__(rundir, platform)
        self.hosts = list(hosts or [])
        self.key = key
        self.skip_unreachable = skip_unreachable

    def _machines(self) -> list[Machine]:
        taken: set[str] = set()
        machines = []
        for spec in self.hosts:
            key = spec.key or self.key
            if key is not None and not Path(key).is_file():
                raise ConfigError(f"SSH key {key} for host {spec} does not exist")
            platform = spec.platform or self.platform
            machine_id = self._unique_id(f"{platform}-{spec.host}-{spec.port}", taken)
            taken.add(machine_id)
            machines.append(
                Machine(
                    id=machine_id,
                    provisioner=self.kind,
                    platform=platform,
                    host=spec.host,
                    port=spec.port,
                    user=spec.user,
                    key=str(Path(key).resolve()) if key else None,
                    reserved_at=now_iso(),
                )
            )
            # Recorded, so that release finds the work directory (and the
            # processes that carry it, see execute/reaper.py) even when
            # run.json is damaged.
            machines[-1].workdir = self.work_dir(machines[-1], self.rundir.read_run()["id"])
        return machines

    async def reserve(self, count: int) -> AsyncGenerator[Machine, None]:
        """Yield up to ``count`` of the hosts, each once it answers over SSH."""
        machines = self._machines()[:count]
        if not self.skip_unreachable:
            # All or nothing: a fleet with a dead host is a configuration to fix.
            outcomes = await asyncio.gather(
                *(self._check(m) for m in machines), return_exceptions=True
            )
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
            for machine in machines:
                yield self._reserved(machine)
            return
        checks = {asyncio.ensure_future(self._check(m)): m for m in machines}
        try:
            pending = set(checks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    machine = checks[task]
                    error = task.exception()
                    if error is None:
                        yield self._reserved(machine)
                    elif isinstance(error, InfraError) and not isinstance(error, KeyRejectedError):
                        log.warning("skipping unreachable %s", error)
                    else:
                        raise error
        finally:
            for task in checks:
                task.cancel()
            await asyncio.gather(*checks, return_exceptions=True)

    async def _check(self, machine: Machine) -> None:
        """Connect, run ``true``, pin the host key; InfraError naming the host if not."""
        from ..transport.ssh import SSHTransport

        assert machine.host is not None
        where = machine.address
        transport = SSHTransport(
            machine.host, machine.port, machine.user, machine.key, retries=CHECK_RETRIES
        )
        try:
            await transport.connect()
            rc, _out, err = await transport.output("true")
            if rc != 0:
                raise InfraError(
                    f"host {where} answers but cannot run commands: "
                    f"{err.decode(errors='replace').strip()}"
                )
            machine.host_key = transport.host_key
        except KeyRejectedError:
            raise  # says which host and key; a configuration to fix (exit 2)
        except InfraError as exc:
            if str(exc).startswith(f"host {where}"):
                raise
            raise InfraError(f"host {where} is unreachable: {exc}") from None
        finally:
            await transport.close()

    @classmethod
    def options(cls) -> list[click.Option]:
        """``--host``, ``--hosts``, ``--skip-unreachable``, ``--key`` (see
        ``options.Reservation``, which makes the provisioner from them)."""
        import click

        return [
            click.Option(
                ["--host", "hosts"],
                multiple=True,
                metavar="[USER@]HOST[:PORT]",
                help="An existing machine reachable over SSH (repeatable).",
            ),
            click.Option(
                ["--hosts", "inventory"],
                type=click.Path(dir_okay=False, path_type=Path),
                metavar="FILE",
                help="Inventory of existing machines (YAML or JSON list of host, port, user, "
                "key, platform); see docs/provisioners.md.",
            ),
            click.Option(
                ["--skip-unreachable"],
                is_flag=True,
                help="With --host/--hosts: skip a host that does not answer (with a warning) "
                "instead of failing.",
            ),
            click.Option(
                ["--key"],
                type=click.Path(dir_okay=False, path_type=Path),
                help="SSH private key for --host machines (default: your SSH agent/keys).",
            ),
        ]

    @classmethod
    def from_recipe(
        cls, rundir: RunDir, recorded: RecipeReader, platform: str | None = None
    ) -> Provisioner:
        """No recipe: releasing (and making) a host needs nothing recorded."""
        return cls(rundir, platform or "default")

    def platforms(self) -> set[str]:
        """Each host's own platform (an inventory may give one), else ours."""
        return {spec.platform or self.platform for spec in self.hosts} or {self.platform}

    def can_replace(self) -> bool:
        """No: an existing host that was lost has no stand-in."""
        return False

    def work_dir(self, machine: Machine, run_id: str) -> str:
        """The work directory recorded at reservation (older records: computed);
        ConfigError for one atex-ci would not have made (see workarea.py)."""
        if machine.workdir:
            check_machine(machine, "machines.json")
            return machine.workdir
        return super().work_dir(machine, run_id)

    def _recorded_work_dir(self, machine: Machine) -> str | None:
        """The machine's work directory (ConfigError if it is not atex-ci's),
        or None when a record without one meets a damaged run.json."""
        if machine.workdir:
            return self.work_dir(machine, "")
        try:  # recorded before work directories were
            run_id = self.rundir.read_run().get("id")
        except (OSError, ValueError):
            log.warning("%s: run.json is unreadable; its work directory is left", machine.id)
            return None
        return self.work_dir(machine, run_id if isinstance(run_id, str) else "")

    async def release(self, machine: Machine) -> None:
        """Reap the run's processes and remove its work directory (best effort),
        then forget the host. ConfigError, touching nothing, for a work
        directory atex-ci would not have made."""
        work = None if machine.state == MachineState.RELEASED else self._recorded_work_dir(machine)
        if work is not None:
            parent = work.rsplit("/", 1)[0]
            with contextlib.suppress(Exception):
                async with asyncio.timeout(RELEASE_TIMEOUT):
                    async with self.transport(machine) as transport:
                        # Every process the run started there ends first (also
                        # those of a controller that was killed); the run's
                        # directory goes too once its last machine is gone.
                        await transport.run(
                            f"{reap_command(run_owner(work))}\n"
                            f"rm -rf {shlex.quote(work)}; rmdir {shlex.quote(parent)} 2>/dev/null"
                        )
        self._released(machine)
