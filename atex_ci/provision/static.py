"""Static hosts: machines that already exist and answer over SSH (``--host``).

Reserving checks that each host answers and records its host key; every
later connection verifies that key. Releasing removes the run's work
directory from the host (best effort) and forgets the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, InfraError
from ..execute.reaper import reap_command, run_owner
from ..model import Machine, MachineState
from ..rundir import RunDir, now_iso
from ..transport.base import Transport
from .base import Provisioner

#: Seconds release may spend cleaning a host before it just forgets it.
RELEASE_TIMEOUT = 15.0

_HOST_SPEC = re.compile(
    r"^(?:(?P<user>[^@\s]+)@)?(?P<host>\[[^\]]+\]|[^:@\s\[\]]+)(?::(?P<port>\d+))?$"
)


@dataclass
class HostSpec:
    host: str
    port: int = 22
    user: str = "root"

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
    kind = "static"

    async def reserve(
        self, rundir: RunDir, hosts: list[HostSpec], key: str | None, platform: str = "default"
    ) -> list[Machine]:
        """Check that every host answers over SSH and record it.

        Raises InfraError naming a host that does not answer.
        """
        if key is not None and not Path(key).is_file():
            raise ConfigError(f"SSH key {key} does not exist")
        taken = {m.id for m in rundir.read_machines()}
        run_id = rundir.read_run()["id"]
        machines = []
        for spec in hosts:
            base_id = machine_id = f"{platform}-{spec.host}-{spec.port}"
            n = 1
            while machine_id in taken:
                n += 1
                machine_id = f"{base_id}-{n}"
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
            machines[-1].workdir = self.work_dir(machines[-1], run_id)

        async def check(machine: Machine) -> None:
            transport = self.transport(machine, rundir)
            try:
                await transport.connect()
                rc, _out, err = await transport.output("true")
                if rc != 0:
                    raise InfraError(
                        f"host {machine.user}@{machine.host}:{machine.port} answers but cannot "
                        f"run commands: {err.decode(errors='replace').strip()}"
                    )
                machine.host_key = transport.host_key
            except InfraError as exc:
                raise InfraError(
                    f"host {machine.user}@{machine.host}:{machine.port} is unreachable: {exc}"
                ) from None
            finally:
                await transport.close()

        async with asyncio.TaskGroup() as tg:
            for machine in machines:
                tg.create_task(check(machine))
        return machines

    def transport(self, machine: Machine, rundir: RunDir) -> Transport:
        from ..transport.ssh import SSHTransport

        assert machine.host is not None
        key = machine.key
        if key and not Path(key).is_absolute():
            key = str(rundir.path / key)
        return SSHTransport(
            machine.host,
            machine.port,
            machine.user,
            key,
            known_host_key=machine.host_key,
        )

    def work_dir(self, machine: Machine, run_id: str) -> str:
        if machine.workdir:
            return machine.workdir
        # The machine id too: one host may be reserved twice (two workers on it).
        return f"/var/tmp/atex-ci/{run_id}/{machine.id}"

    async def release(self, machine: Machine, rundir: RunDir) -> None:
        if machine.state != MachineState.RELEASED:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(RELEASE_TIMEOUT):
                    async with self.transport(machine, rundir) as transport:
                        work = machine.workdir or self.work_dir(machine, rundir.read_run()["id"])
                        parent = work.rsplit("/", 1)[0]
                        # Every process the run started there ends first (also
                        # those of a controller that was killed); the run's
                        # directory goes too once its last machine is gone.
                        await transport.run(
                            f"{reap_command(run_owner(work))}\n"
                            f"rm -rf {shlex.quote(work)}; rmdir {shlex.quote(parent)} 2>/dev/null"
                        )
        machine.state = MachineState.RELEASED
        machine.released_at = machine.released_at or now_iso()
