"""A provisioner of your own: lease hosts from a pool that several CI jobs share.

The pool is a JSON file that every job can reach (a shared disk, a mounted
volume): ``{"hosts": ["root@10.0.0.5", "ci@10.0.0.6:2222"], "leases": {}}``.
``reserve`` leases free hosts (the file is locked while it changes), checks
each over SSH and pins its host key; ``release`` gives the lease back.

    PYTHONPATH=examples atex-ci reserve -d run --provisioner leased_hosts:LeasedHosts \\
        --lease-pool /srv/ci/pool.json -o key=/srv/ci/id_ed25519 --count 2

``--lease-pool`` is an option this class declares (``options``): with
``--provisioner leased_hosts:LeasedHosts``, ``reserve --help`` shows it.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any

import click

from atex_ci.errors import InfraError
from atex_ci.model import Machine
from atex_ci.provision.base import Provisioner
from atex_ci.provision.static import HostSpec
from atex_ci.rundir import RunDir, now_iso


class LeasedHosts(Provisioner):
    kind = "leased-hosts"

    # Options come from the ones declared below and `-o KEY=VALUE` (strings),
    # and are recorded in run.json, so `atex-ci release` builds the same
    # object: no secrets here.
    def __init__(
        self,
        rundir: RunDir,
        platform: str = "default",
        lease_pool: str = "",
        key: str | None = None,
    ) -> None:
        super().__init__(rundir, platform)
        self.pool = Path(lease_pool).resolve()
        self.key = key

    @classmethod
    def options(cls) -> list[click.Option]:
        # The parameter name (lease_pool) is the keyword argument it fills.
        return [
            click.Option(
                ["--lease-pool", "lease_pool"],
                metavar="FILE",
                help="leased_hosts: the pool file that every CI job shares.",
            )
        ]

    def _locked(self, change: Callable[[dict[str, Any]], Any]) -> Any:
        """Apply change() to the pool file while holding its lock; return its result."""
        with open(self.pool, "r+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            data = json.load(f)
            result = change(data)
            f.seek(0)
            f.truncate()
            json.dump(data, f, indent=2)
            return result

    async def reserve(self, count: int) -> AsyncGenerator[Machine, None]:
        run_id = self.rundir.read_run()["id"]

        def take_one(data: dict[str, Any]) -> str | None:
            free = [h for h in data["hosts"] if h not in data["leases"]]
            if free:
                data["leases"][free[0]] = run_id
            return free[0] if free else None

        # One lease at a time: nothing is held that has not been yielded.
        for _ in range(count):
            lease = await asyncio.to_thread(self._locked, take_one)
            if lease is None:
                raise InfraError(f"no free host left in {self.pool}")
            spec = HostSpec.parse(lease)
            machine = Machine(
                id=self._unique_id(f"{self.platform}-{spec.host}-{spec.port}"),
                provisioner=self.kind,
                platform=self.platform,
                host=spec.host,
                port=spec.port,
                user=spec.user,
                key=self.key,
                handle={"lease": lease},
                reserved_at=now_iso(),
            )
            try:
                async with self.transport(machine) as transport:  # it answers
                    machine.host_key = transport.host_key  # and is pinned from now on
            except BaseException:
                await self.release(machine)  # give the lease back, then report
                raise
            yield self._reserved(machine)

    async def release(self, machine: Machine) -> None:
        lease, run_id = machine.handle["lease"], self.rundir.read_run()["id"]

        def give_back(data: dict[str, Any]) -> None:
            if data["leases"].get(lease) == run_id:  # idempotent: never another run's
                del data["leases"][lease]

        await asyncio.to_thread(self._locked, give_back)
        self._released(machine)
