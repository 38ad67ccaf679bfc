"""Scheduling policy: which test a free machine takes next, and what to do with
the machine after a test. Pure: no asyncio, no I/O, so it is unit-tested
directly and a custom policy is a subclass.

The orchestrator talks to a scheduler only through these methods::

    add_machine(machine_id)
    next_test(machine_id) -> Test | None      # None: nothing left for it
    test_finished(machine_id, test, machine_ok=...) -> MachineAction
    remove_machine(machine_id)                 # lost/broken machine
    pending() -> list[Test]                    # what is still queued
    abort_plan(plan) -> list[Test]             # tmt-abort: drop the plan's queue
    drain() -> list[Test]                      # no machine left: take the rest

Ad hoc by design: a machine asks for work only when it is free, so a slow
test never holds back tests queued "behind" it on the same machine, and
nothing is split N/M up front.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable

from .model import Test


class MachineAction(enum.Enum):
    KEEP = "keep"  # give it the next test
    DISCARD = "discard"  # stop using it (broken, timed out, lost)


class Scheduler:
    """First-come, first-served over a queue in discovery order (tmt's order).

    Subclasses may override ``order`` (queue order) or ``pick`` (which queued
    test a given machine takes).
    """

    def __init__(self, tests: Iterable[Test]) -> None:
        self._queue: deque[Test] = deque(self.order(list(tests)))
        self._machines: set[str] = set()
        self._running: dict[str, Test] = {}

    def order(self, tests: list[Test]) -> list[Test]:
        """The order tests are handed out in; discovery order by default."""
        return tests

    def pick(self, machine_id: str, queue: deque[Test]) -> Test | None:
        """Choose (and remove) the next test for this machine."""
        return queue.popleft() if queue else None

    def add_machine(self, machine_id: str) -> None:
        self._machines.add(machine_id)

    def remove_machine(self, machine_id: str) -> None:
        self._machines.discard(machine_id)
        self._running.pop(machine_id, None)

    def next_test(self, machine_id: str) -> Test | None:
        if machine_id not in self._machines:
            return None
        test = self.pick(machine_id, self._queue)
        if test is not None:
            self._running[machine_id] = test
        return test

    def test_finished(
        self, machine_id: str, test: Test, *, machine_ok: bool = True
    ) -> MachineAction:
        """Record the end of ``test`` on the machine and decide the machine's fate."""
        self._running.pop(machine_id, None)
        if not machine_ok:
            self.remove_machine(machine_id)
            return MachineAction.DISCARD
        return MachineAction.KEEP

    def abort_plan(self, plan: str) -> list[Test]:
        """Remove every queued test of ``plan``; returns them."""
        dropped = [t for t in self._queue if t.plan == plan]
        self._queue = deque(t for t in self._queue if t.plan != plan)
        return dropped

    def has_pending(self) -> bool:
        return bool(self._queue)

    def pending(self) -> list[Test]:
        return list(self._queue)

    def drain(self) -> list[Test]:
        """Remove and return every queued test (no machines left to run them)."""
        tests = list(self._queue)
        self._queue.clear()
        return tests

    @property
    def machines(self) -> frozenset[str]:
        return frozenset(self._machines)
