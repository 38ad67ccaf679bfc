"""The run's machines as a pool: each machine from its request to its release.

The pool reserves machines in the background (each is handed to the
orchestrator the moment its provisioner yields it, recorded first), reserves
a replacement when a machine is lost or discarded and a queued test needs one,
cancels reservations nothing is left for, releases a machine as soon as
nothing is left for it (or keeps the ones ``atex-ci reserve`` recorded, with
``keep_machines``), and at the end releases whatever the run reserved itself.
It decides a run's default local slots, and tells the scheduler which
platforms can still get a replacement (``replaceable``).

The budget bounds reservations: ``max_machines`` machines in all (the ones
the run started with included), and ``max_failed_setups`` machines that
could not be had or broke before finishing a test. Once the budget is spent,
nothing more is reserved; the scheduler then works with the machines left.

A machine recorded by ``atex-ci reserve`` is replaced through the provisioner
that made it, rebuilt from run.json (``get_provisioner``); a provisioner class
says whether its machines can be replaced at all (a static host cannot).
What happens is said on the run's event stream (``events.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from .errors import AtexError, ConfigError, InfraError, StorageError
from .events import (
    Event,
    MachineNotReplaced,
    MachineReleased,
    MachineReserved,
    Notice,
    ReservationFailed,
)
from .model import Machine, MachineState
from .provision import get_provisioner, record_reservations
from .provision.base import Provisioner
from .provision.local import LocalProvisioner, default_slots
from .recorder import Recorder
from .rundir import RunDir
from .schedule import Scheduler
from .transport.base import KeyRejectedError

log = logging.getLogger("atex_ci")

#: Machines that may fail (a reservation that gave fewer machines than asked,
#: a setup or a plan's prepare that failed) before the run stops asking for
#: more: a broken image or a dead pool fails three times, not a hundred.
MAX_FAILED_SETUPS = 3

#: Shortest sleep between two looks at the time budget: a test that ends
#: exactly at the deadline still fits, so the next look comes a little later.
BUDGET_WAKE_MIN = 0.1


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
    """One run's machines, from request to release (see the module's docstring).

    ``emit`` hears what happens (the run's event stream; by default a
    ``Recorder`` of ``rundir``). ``begin`` starts the pool inside the run's
    task group; ``done_with`` takes a machine back from its worker;
    ``release_reserved`` ends the run's own machines, whatever happened.
    """

    def __init__(
        self,
        rundir: RunDir,
        limits: PoolLimits | None = None,
        *,
        emit: Callable[[Event], None] | None = None,
        keep_machines: bool = False,
    ) -> None:
        self.rundir = rundir
        self.limits = limits or PoolLimits()
        self.emit = emit or Recorder(rundir)
        #: Keep the machines ``atex-ci reserve`` recorded when nothing is left for them.
        self.keep_machines = keep_machines
        #: Machines the run has had so far (started with, reserved, replacements).
        self.used = 0
        #: Failed machines so far.
        self.failed = 0
        # The instance that made each machine this run reserved itself.
        self._made_by: dict[str, Provisioner] = {}
        # Machines this run reserved itself: released when done and at the
        # end, whatever happens.
        self._reserved_here: dict[str, Machine] = {}
        # Reservations under way (task -> platforms), which platforms have a
        # provisioner that can replace a machine, and why a platform has no
        # machine (a failed reservation).
        self._reservations: dict[asyncio.Task[None], set[str]] = {}
        self._replacer: dict[str, bool] = {}
        self._no_machine_why: dict[str, str] = {}
        self._sched: Scheduler | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._start: Callable[[Machine], None] = lambda machine: None
        self._changed: Callable[[], None] = lambda: None

    # -- the run's machines -----------------------------------------------------------

    def sources(
        self,
        recorded: list[Machine],
        sources: list[tuple[Provisioner, int]],
        platforms: list[str],
        *,
        local_slots: int | None,
        pending: bool,
    ) -> list[tuple[Provisioner, int]]:
        """What the run reserves from: ``sources``, or, when the run directory
        has no ready machine and tests are ``pending``, local slots (they cost
        nothing: as many per platform as before, or ``local_slots``).
        InfraError when the machines ``atex-ci reserve`` recorded are gone."""
        if any(m.state == MachineState.READY for m in recorded) or sources or not pending:
            return list(sources)
        if any(m.provisioner != LocalProvisioner.kind for m in recorded):
            raise InfraError(
                f"no machine in {self.rundir.path / 'machines.json'} is ready (they broke, or "
                "were released when an earlier run no longer needed them); reserve new "
                "ones with 'atex-ci reserve' (or keep them with 'run --keep-machines')"
            )
        local: list[tuple[Provisioner, int]] = []
        for platform in platforms:
            before = sum(1 for m in recorded if m.platform == platform)
            slots = local_slots or before or default_slots()
            local.append((LocalProvisioner(self.rundir, platform), slots))
        return local

    def begin(
        self,
        tg: asyncio.TaskGroup,
        scheduler: Scheduler,
        platforms: list[str],
        machines: list[Machine],
        sources: list[tuple[Provisioner, int]],
        start: Callable[[Machine], None],
        changed: Callable[[], None],
    ) -> None:
        """Hand the ready ``machines`` to ``start`` and reserve from ``sources``
        in ``tg``; each reserved machine goes to ``start`` the moment it is
        ready. ``changed`` is called whenever the scheduler may answer anew."""
        self._tg, self._sched, self._start, self._changed = tg, scheduler, start, changed
        self.used += len(machines)
        for platform in platforms:
            # Whether a lost machine of this platform has a provisioner that
            # can replace it (the budget is checked when it comes to that).
            same = [m for m in machines if m.platform == platform]
            self._replacer[platform] = any(
                platform in p.platforms() and p.can_replace() for p, _ in sources
            ) or any(self.replacement(m)[0] is not None for m in _one_per_kind(same))
        self._update_replaceable()
        for machine in machines:
            start(machine)
        for provisioner, count in sources:
            self.reserve(provisioner, count)
        self.stop_reserving_if_done()

    def replaceable(self, platform: str) -> bool:
        """Whether a lost machine of ``platform`` could still be replaced."""
        return not self.spent() and self._replacer.get(platform, False)

    def no_machine_why(self, platform: str) -> str:
        """Why ``platform`` has no machine ("" if no reservation for it failed)."""
        return self._no_machine_why.get(platform, "")

    async def done_with(self, machine: Machine, finished: bool) -> None:
        """The worker is done with ``machine``. ``finished`` (nothing is left
        for it): it goes back now, not when the last test of the long tail
        ends (unless kept for more runs). Else it went out of use: replaced if
        a queued test needs it, released if the run reserved it (a broken
        machine costs money as well)."""
        if finished:
            if machine.id in self._reserved_here or not self.keep_machines:
                await asyncio.shield(self.release(machine))
        else:
            self._replace(machine)
            if machine.id in self._reserved_here:
                await asyncio.shield(self.release(machine))
        self.stop_reserving_if_done()

    async def release(self, machine: Machine) -> None:
        try:
            provisioner = self.provisioner(machine)
        except ConfigError as exc:
            log.warning("releasing %s: %s", machine.id, exc)
            return
        await release_machine(self.rundir, machine, provisioner, emit=self.emit)

    async def release_reserved(self) -> None:
        """Release every machine this run reserved itself: none outlives it."""
        await asyncio.gather(*(self.release(m) for m in list(self._reserved_here.values())))

    # -- the budget -----------------------------------------------------------------

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

    # -- reservations and replacements ----------------------------------------------

    def reserve(
        self, provisioner: Provisioner, count: int, replaces: Machine | None = None
    ) -> None:
        """Reserve ``count`` machines in the background (within the budget)."""
        platform = ", ".join(sorted(provisioner.platforms()))
        if self._tg is None:
            raise RuntimeError("MachinePool.reserve before begin()")

        def ready(machine: Machine) -> None:
            self._reserved_here[machine.id] = machine
            self._start(machine)

        def record(machine: Machine) -> None:
            self.emit(MachineReserved(machine, replaces))

        async def reserve() -> None:
            try:
                await self._request(provisioner, count, record, ready)
            except (StorageError, KeyRejectedError):
                raise  # the run directory is gone, or a configuration to fix: the run stops
            except Exception as exc:  # a provisioner's failure ends its reservation, not the run
                why = str(exc) if isinstance(exc, AtexError) else f"{type(exc).__name__}: {exc}"
                for one in provisioner.platforms():
                    self._no_machine_why[one] = why
                self.emit(ReservationFailed(platform, why, replaces))
            finally:
                self._reservations.pop(task, None)
                self._update_replaceable()
                self._changed()

        room = self.room()
        if room is not None and room < count and replaces is None:
            self.emit(
                Notice(
                    f"atex-ci: reserving {room} of {count} machine(s) for platform {platform}: "
                    + (self.spent() or "the rest is over --max-machines")
                )
            )
        task = self._tg.create_task(reserve())
        self._reservations[task] = provisioner.platforms()

    def stop_reserving_if_done(self) -> None:
        """Cancel reservations for platforms where nothing is queued and no
        running test may come back (the provisioner gives back what it had
        requested and not yet handed over)."""
        if not self._reservations or self._sched is None:
            return
        scheduler = self._sched
        may_come_back = {
            job.platform for job in scheduler.running().values() if scheduler.may_come_back(job)
        }
        for task, platforms in list(self._reservations.items()):
            if not any(p in may_come_back or scheduler.wants_machine(p) for p in platforms):
                task.cancel()

    async def watch_budget(self, scheduler: Scheduler) -> None:
        """Look again whenever a queued test stops fitting the time budget
        (``Scheduler.budget_wake``): reservations no test waits for any more
        are cancelled and free machines leave, even while no machine is ready
        to ask for work. Runs until cancelled or nothing is queued."""
        while (at := scheduler.budget_wake()) is not None:
            await asyncio.sleep(max(at - scheduler.clock(), BUDGET_WAKE_MIN))
            self.stop_reserving_if_done()
            self._changed()

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

    def _replace(self, machine: Machine) -> None:
        """A machine went out of use: reserve another like it, if a queued test
        needs one and the budget allows (a test that comes back later, its own
        machine lost, brings about a replacement of that machine)."""
        if self._sched is None or not self._sched.wants_machine(machine.platform):
            return  # nothing a replacement could do
        provisioner, why = self.replacement(machine)
        if provisioner is None:
            self.emit(MachineNotReplaced(machine, why))
            self._update_replaceable()
            self._changed()
            return
        self.reserve(provisioner, 1, replaces=machine)

    def _update_replaceable(self) -> None:
        """Tell the scheduler which platforms can still get a replacement."""
        if self._sched is None:
            return
        for platform in self._replacer:
            self._sched.replacements(platform, self.replaceable(platform))

    async def _request(
        self,
        provisioner: Provisioner,
        count: int,
        record: Callable[[Machine], None],
        on_ready: Callable[[Machine], None],
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
            await record_reservations(
                self.rundir, provisioner, count, ready, give_back_ready=False, record=record
            )
        except Exception:
            self.failed += 1
            raise
        finally:
            self.used -= count - got  # what never came does not count


def _one_per_kind(machines: list[Machine]) -> list[Machine]:
    """One machine per provisioner kind (a fleet of static hosts is one look)."""
    return list({m.provisioner: m for m in machines}.values())


async def release_machine(
    rundir: RunDir,
    machine: Machine,
    provisioner: Provisioner | None = None,
    *,
    emit: Callable[[Event], None] | None = None,
) -> bool:
    """Release one machine through its provisioner and record it (through
    ``emit``; by default a Recorder of ``rundir``); never raises.

    Returns False (and logs why) when the machine may still be held, e.g. a
    Testing Farm request that could not be cancelled: it stays unreleased in
    machines.json so that the next ``release`` tries again. If the run
    directory cannot be written (disk full, read-only), the machine is
    released all the same and a warning says the record is missing.
    """
    if machine.state == MachineState.RELEASED:
        return True
    try:
        provisioner = provisioner or get_provisioner(machine.provisioner, rundir)
        await provisioner.release(machine)
    except (ConfigError, OSError, InfraError) as exc:
        log.warning("releasing %s: %s", machine.id, exc)
        return False
    try:
        (emit or Recorder(rundir))(MachineReleased(machine))
    except (StorageError, ConfigError) as exc:
        log.warning("released %s, but could not record it: %s", machine.id, exc)
    return True


async def release_all(rundir: RunDir) -> list[Machine]:
    """Release every machine of the run and delete the run's private keys.

    Raises InfraError naming the machines that may still be held (after
    releasing every other one and deleting the keys), or ConfigError for a
    record atex-ci would not have written (``RunDir.read_machines``): that one
    is never touched, every other machine is released first.
    """
    refused: list[str] = []
    machines = rundir.read_machines(refused=refused)
    released = await asyncio.gather(*(release_machine(rundir, m) for m in machines))
    Recorder(rundir).delete_keys()
    if refused:
        more = f" ({len(refused) - 1} more refused)" if len(refused) > 1 else ""
        raise ConfigError(f"{refused[0]}{more}; every other machine was released")
    held = [m.id for m, ok in zip(machines, released, strict=True) if not ok]
    if held:
        raise InfraError(
            f"could not release {', '.join(held)} (see the warnings above); "
            "run 'atex-ci release' again"
        )
    return machines


__all__ = [
    "BUDGET_WAKE_MIN",
    "MAX_FAILED_SETUPS",
    "MachinePool",
    "PoolLimits",
    "release_all",
    "release_machine",
]
