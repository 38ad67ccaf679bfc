"""Local slots: N parallel "machines" on this host, no server needed (the default).

Each slot has its own work directory under RUN/work/, so tests running in
parallel never share a scratch directory or a copy of the tree.
"""

from __future__ import annotations

import asyncio
import os
import shutil

from ..execute.reaper import reap_command, run_owner
from ..model import Machine, MachineState
from ..rundir import RunDir, now_iso
from ..transport.base import Transport
from ..transport.local import LocalTransport, slot_environment
from .base import Provisioner

#: Bound on ending a slot's leftover processes at release.
REAP_TIMEOUT = 30.0


class LocalProvisioner(Provisioner):
    kind = "local"

    def reserve(
        self, rundir: RunDir, count: int | None = None, platform: str = "default"
    ) -> list[Machine]:
        """Record ``count`` slots (default: the number of CPUs)."""
        count = count or os.cpu_count() or 1
        existing = {m.id for m in rundir.read_machines()}
        machines: list[Machine] = []
        n = 0
        while len(machines) < count:
            n += 1
            slot_id = f"local-{n}"
            if slot_id in existing:
                continue
            workdir = rundir.work_dir / slot_id
            workdir.mkdir(parents=True, exist_ok=True)
            machines.append(
                Machine(
                    id=slot_id,
                    provisioner=self.kind,
                    platform=platform,
                    host=None,
                    user=os.environ.get("USER", ""),
                    workdir=str(workdir.resolve()),
                    reserved_at=now_iso(),
                )
            )
        return machines

    def transport(self, machine: Machine, rundir: RunDir) -> Transport:
        return LocalTransport(env=slot_environment(os.environ))

    def work_dir(self, machine: Machine, run_id: str) -> str:
        assert machine.workdir is not None
        return machine.workdir

    async def release(self, machine: Machine, rundir: RunDir) -> None:
        if machine.workdir:
            # Every process the run started in this slot ends first (also
            # those of a controller that was killed, and setsid daemons).
            await _reap(machine.workdir)
            await asyncio.to_thread(shutil.rmtree, machine.workdir, True)
        machine.state = MachineState.RELEASED
        machine.released_at = machine.released_at or now_iso()


async def _reap(workdir: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        reap_command(run_owner(workdir)),
        stdin=asyncio.subprocess.DEVNULL,
        env=slot_environment(os.environ),
    )
    try:
        async with asyncio.timeout(REAP_TIMEOUT):
            await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()
