"""The Provisioner interface: where machines come from and how they go away.

A provisioner reserves machines (recording them as ``Machine`` objects in
machines.json), builds a Transport for a machine, and releases machines.
``release`` is idempotent and safe to call from anywhere, including cleanup
after a failure. Implementations may only add arguments that have defaults.
"""

from __future__ import annotations

import abc

from ..model import Machine
from ..rundir import RunDir
from ..transport.base import Transport


class Provisioner(abc.ABC):
    #: The value stored in Machine.provisioner.
    kind: str = ""

    @abc.abstractmethod
    def transport(self, machine: Machine, rundir: RunDir) -> Transport:
        """A (not yet connected) transport to the machine."""

    @abc.abstractmethod
    def work_dir(self, machine: Machine, run_id: str) -> str:
        """The per-run work directory on the machine (tree, wrapper, test dirs)."""

    @abc.abstractmethod
    async def release(self, machine: Machine, rundir: RunDir) -> None:
        """Give the machine back. Idempotent; never raises for an already gone machine."""
