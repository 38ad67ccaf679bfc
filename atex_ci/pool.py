"""The run's machines as a pool: where each came from, what the run may still
reserve, and what replaces a machine that was lost or discarded.

The orchestrator asks the pool for machines (``reserve``: each machine is
handed over the moment its provisioner yields it, recorded in machines.json
first) and for a replacement when the scheduler discards a machine or one is
lost (``replacement``). The budget bounds both: ``max_machines`` machines in
all (the ones the run started with included), and ``max_failed_setups``
machines that could not be had or broke before finishing a test. Once the
budget is spent, nothing more is reserved; the scheduler then works with the
machines that are left.

A machine recorded by ``atex-ci reserve`` is replaced through the provisioner
that made it, rebuilt from run.json (``get_provisioner``); a provisioner class
says whether its machines can be replaced at all (``Provisioner.replaceable``:
a static host cannot).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from .errors import AtexError
from .model import Machine
from .provision import get_provisioner, record_reservations
from .provision.base import Provisioner
from .rundir import RunDir

log = logging.getLogger("atex_ci")

#: Machines that may fail (a reservation that gave fewer machines than asked,
#: a setup or a plan's prepare that failed) before the run stops asking for
#: more: a broken image or a dead pool fails three times, not a hundred.
MAX_FAILED_SETUPS = 3


@dataclass
class PoolLimits:
    """The run's machine budget (``run --max-machines``, ``--max-failed-setups``)."""

    #: Machines the run may use in all, the ones it starts with and every
    #: replacement included; None: no limit beyond ``max_failed_setups``.
    max_machines: int | None = None
    #: Failed machines (see MAX_FAILED_SETUPS) after which nothing more is reserved.
    max_failed_setups: int = MAX_FAILED_SETUPS

    def __post_init__(self) -> None:
        if self.max_machines is not None and self.max_machines < 1:
            raise ValueError("max_machines must be at least 1")
        if self.max_failed_setups < 0:
            raise ValueError("max_failed_setups must not be negative")


class MachinePool:
    """Bookkeeping of one run's machines; ``reserve`` is its only I/O."""

    def __init__(self, rundir: RunDir, limits: PoolLimits | None = None) -> None:
        self.rundir = rundir
        self.limits = limits or PoolLimits()
        #: Machines the run has had so far (started with, reserved, replacements).
        self.used = 0
        #: Failed machines so far.
        self.failed = 0
        # The instance that made each machine this run reserved itself.
        self._made_by: dict[str, Provisioner] = {}

    # -- the budget -----------------------------------------------------------------

    def adopt(self, machines: list[Machine]) -> None:
        """Count machines the run starts with (recorded by ``atex-ci reserve``)."""
        self.used += len(machines)

    def room(self) -> int | None:
        """Machines that may still be reserved (None: no limit)."""
        if self.failed >= self.limits.max_failed_setups:
            return 0
        if self.limits.max_machines is None:
            return None
        return max(0, self.limits.max_machines - self.used)

    def spent(self) -> str:
        """Why nothing more can be reserved ("" while something can)."""
        if self.failed >= self.limits.max_failed_setups:
            return (
                f"{self.failed} machine(s) failed (--max-failed-setups "
                f"{self.limits.max_failed_setups})"
            )
        if self.room() == 0:
            return f"the run has used {self.used} machine(s) (--max-machines)"
        return ""

    def setup_failed(self) -> None:
        """A machine could not be set up (connection, tree, a plan's prepare)."""
        self.failed += 1

    def provisioner(self, machine: Machine) -> Provisioner:
        """The instance that manages ``machine``: the one that made it in this
        run, or one rebuilt from the run directory (ConfigError if it cannot be)."""
        made_by = self._made_by.get(machine.id)
        return made_by if made_by is not None else get_provisioner(machine.provisioner, self.rundir)

    # -- replacements -----------------------------------------------------------------

    def replacement(self, machine: Machine) -> tuple[Provisioner | None, str]:
        """The provisioner that can replace ``machine``, or None and why not."""
        if why := self.spent():
            return None, why
        provisioner = self._made_by.get(machine.id)
        if provisioner is None:
            try:
                provisioner = get_provisioner(machine.provisioner, self.rundir, machine.platform)
            except (AtexError, ValueError, OSError) as exc:  # run.json damaged meanwhile
                return None, f"cannot rebuild its provisioner: {exc}"
        if not provisioner.can_replace():
            return None, f"{machine.provisioner} machines cannot be replaced"
        return provisioner, ""

    def replaceable(self, machines: list[Machine]) -> bool:
        """Whether any of these machines (a platform's) could be replaced now;
        one look per provisioner kind (a fleet of static hosts is one)."""
        one_per_kind = {m.provisioner: m for m in machines}.values()
        return any(self.replacement(m)[0] is not None for m in one_per_kind)

    async def reserve(
        self, provisioner: Provisioner, count: int, on_ready: Callable[[Machine], None]
    ) -> None:
        """Reserve up to ``count`` machines (within the budget), handing each to
        ``on_ready`` once it is recorded; raises what the provisioner raised
        (AtexError: fewer machines than asked), after counting it as a failure.
        Cancelled, the provisioner gives back what it had requested and not
        yielded; the machines handed over stay the caller's to release."""
        room = self.room()
        count = count if room is None else min(count, room)
        if count <= 0:
            return
        self.used += count  # reserved up front: parallel requests stay within the budget
        got = 0

        def ready(machine: Machine) -> None:
            nonlocal got
            got += 1
            self._made_by[machine.id] = provisioner
            on_ready(machine)

        try:
            await record_reservations(self.rundir, provisioner, count, ready, give_back_ready=False)
        except Exception:
            self.failed += 1
            raise
        finally:
            self.used -= count - got  # what never came does not count
