"""Local slots: N parallel "machines" on this host, no server needed (the default).

Each slot has its own work directory under RUN/work/, so tests running in
parallel never share a scratch directory or a copy of the tree.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncGenerator

from ..execute.reaper import reap_command, run_owner
from ..model import Machine
from ..rundir import RunDir, now_iso
from ..transport.base import Transport
from ..transport.local import LocalTransport, slot_environment
from .base import Provisioner, RecipeReader

#: Bound on ending a slot's leftover processes at release.
REAP_TIMEOUT = 30.0


def default_slots() -> int:
    """Slots to use when no count is given: one per CPU."""
    return os.cpu_count() or 1


class LocalProvisioner(Provisioner):
    kind = "local"

    @classmethod
    def from_recipe(
        cls, rundir: RunDir, recorded: RecipeReader, platform: str | None = None
    ) -> Provisioner:
        """No recipe: releasing (and making) a slot needs nothing recorded."""
        return cls(rundir, platform or "default")

    async def reserve(self, count: int) -> AsyncGenerator[Machine, None]:
        """Yield ``count`` new slots, each with its own empty work directory."""
        taken = {m.id for m in self.rundir.read_machines()} | set(self.reserved)
        n = 0
        for _ in range(count):
            n += 1
            while f"local-{n}" in taken:
                n += 1
            slot_id = f"local-{n}"
            taken.add(slot_id)
            workdir = self.rundir.slot_dir(slot_id)
            workdir.mkdir(parents=True, exist_ok=True)
            yield self._reserved(
                Machine(
                    id=slot_id,
                    provisioner=self.kind,
                    platform=self.platform,
                    host=None,
                    user=os.environ.get("USER", ""),
                    workdir=str(workdir.resolve()),
                    reserved_at=now_iso(),
                )
            )

    def transport(self, machine: Machine) -> Transport:
        return LocalTransport(env=slot_environment(os.environ))

    def work_dir(self, machine: Machine, run_id: str) -> str:
        """RUN/work/<id>, computed, never the recorded path: a run directory
        from elsewhere must not name what release deletes (workarea.py)."""
        return str(self.rundir.slot_dir(machine.id).resolve())

    async def release(self, machine: Machine) -> None:
        if machine.workdir:
            workdir = self.work_dir(machine, "")
            # Every process the run started in this slot ends first (also
            # those of a controller that was killed, and setsid daemons).
            await _reap(workdir)
            await asyncio.to_thread(shutil.rmtree, workdir, True)
        self._released(machine)


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
