"""Local slots: N parallel "machines" on this host, no server needed (the default).

Each slot has its own work directory under RUN/work/, so tests running in
parallel never share a scratch directory or a copy of the tree.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncGenerator

from ..model import Machine
from ..rundir import now_iso
from ..transport.base import Transport
from ..transport.local import LocalTransport
from .base import Provisioner


def default_slots() -> int:
    """Slots to use when no count is given: one per CPU."""
    return os.cpu_count() or 1


class LocalProvisioner(Provisioner):
    kind = "local"

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
            workdir = self.rundir.work_dir / slot_id
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
        return LocalTransport()

    def work_dir(self, machine: Machine, run_id: str) -> str:
        assert machine.workdir is not None
        return machine.workdir

    async def release(self, machine: Machine) -> None:
        if machine.workdir:
            await asyncio.to_thread(shutil.rmtree, machine.workdir, True)
        self._released(machine)
