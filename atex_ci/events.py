"""The run's event stream: what happens during a run, as typed events, and who hears it.

The orchestrator, the machine pool and the executor say what happens by
emitting one ``Event`` at a time into an ``EventStream``; every subscriber (a
*sink*: any callable taking an event) receives each event, in order, as it
happens. A run's subscribers are the ``Recorder`` (the only writer of the run
directory while a run lasts), the progress display (``progress.ProgressSink``)
and any sink of the user's own (``RunOptions.sinks``; a dashboard upload, or
``examples/jsonl_sink.py``, which writes each event as one JSON line).

Events are frozen dataclasses holding the objects they speak of (a
``Machine``, a ``Test``, ``Result`` records); ``to_record`` gives a JSON-ready
dict of any event. A sink must not change what it receives. A sink that
raises stops the run as any error of atex-ci would: catch what your own sink
may meet.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .model import Machine, Plan, Result, RunState, Test
from .rundir import now_iso


@dataclass(frozen=True, kw_only=True)
class Event:
    """Something that happened during a run; ``kind`` names it in records."""

    kind: ClassVar[str] = "event"
    #: When it happened (ISO 8601, UTC).
    time: str = field(default_factory=now_iso)


# -- the run ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RunStarted(Event):
    """The run starts: its platforms and the plans each of them runs."""

    kind: ClassVar[str] = "run_started"
    platforms: list[str]
    plans: Mapping[str, list[Plan]]
    #: Test instances the run is to run (this shard's, not yet done).
    total: int


@dataclass(frozen=True)
class RunFinished(Event):
    """The run ended: finished, interrupted, or crashed on an error of atex-ci."""

    kind: ClassVar[str] = "run_finished"
    state: RunState


@dataclass(frozen=True)
class Notice(Event):
    """A line for the person watching, recorded nowhere (e.g. "reserving 2 of 4")."""

    kind: ClassVar[str] = "notice"
    text: str


# -- machines --------------------------------------------------------------------------


@dataclass(frozen=True)
class MachineReserved(Event):
    """A machine was reserved (and may replace one the run lost)."""

    kind: ClassVar[str] = "machine_reserved"
    machine: Machine
    replaces: Machine | None = None


@dataclass(frozen=True)
class MachineChanged(Event):
    """A machine's record changed (its host key, pinned on first contact)."""

    kind: ClassVar[str] = "machine_changed"
    machine: Machine


@dataclass(frozen=True)
class MachineReady(Event):
    """The run's tree is on the machine: it takes tests from now on."""

    kind: ClassVar[str] = "machine_ready"
    machine: Machine


@dataclass(frozen=True)
class MachineChecked(Event):
    """The machine's health check after a timeout (``note``: why it failed)."""

    kind: ClassVar[str] = "machine_checked"
    machine: Machine
    test: Test
    healthy: bool
    note: str | None = None


@dataclass(frozen=True)
class MachineLost(Event):
    """The machine is out of use: lost, failed setup, or discarded by the policy."""

    kind: ClassVar[str] = "machine_broken"
    machine: Machine
    note: str


@dataclass(frozen=True)
class MachineNotReplaced(Event):
    """A lost machine gets no replacement (the budget, its provisioner)."""

    kind: ClassVar[str] = "machine_not_replaced"
    machine: Machine
    note: str


@dataclass(frozen=True)
class ReservationFailed(Event):
    """Reserving for ``platform`` failed (``replaces``: the machine it was to replace)."""

    kind: ClassVar[str] = "reservation_failed"
    platform: str
    note: str
    replaces: Machine | None = None


@dataclass(frozen=True)
class MachineReleased(Event):
    """The machine's provisioner gave it back."""

    kind: ClassVar[str] = "machine_released"
    machine: Machine


# -- tests -----------------------------------------------------------------------------


@dataclass(frozen=True)
class TestStarted(Event):
    """``test`` starts on ``machine`` (its plan is prepared there)."""

    __test__: ClassVar[bool] = False  # not a pytest test class
    kind: ClassVar[str] = "test_started"
    test: Test
    platform: str
    machine: Machine
    attempt: int


@dataclass(frozen=True)
class TestResults(Event):
    """Result records of one test, as they are to be kept (results.jsonl)."""

    __test__: ClassVar[bool] = False
    kind: ClassVar[str] = "test_results"
    results: list[Result]


@dataclass(frozen=True)
class TestFinished(Event):
    """``test`` ran to an end on ``machine``; ``result`` stands for it (None: no result)."""

    __test__: ClassVar[bool] = False
    kind: ClassVar[str] = "test_finished"
    test: Test
    platform: str
    machine: Machine
    result: Result | None
    results: list[Result]


@dataclass(frozen=True)
class TestNotRun(Event):
    """``test`` will not run (no machine left, its plan aborted): ``result`` says why."""

    __test__: ClassVar[bool] = False
    kind: ClassVar[str] = "test_not_run"
    test: Test
    platform: str
    result: Result


@dataclass(frozen=True)
class TestRequeued(Event):
    """``test`` is queued again (a rerun, a retry after an infrastructure failure)."""

    __test__: ClassVar[bool] = False
    kind: ClassVar[str] = "test_requeued"
    test: Test
    platform: str
    machine: Machine
    note: str


@dataclass(frozen=True)
class PlanAborted(Event):
    """``test`` aborted its plan (tmt-abort): the plan's other tests will not run."""

    kind: ClassVar[str] = "plan_aborted"
    test: Test


@dataclass(frozen=True)
class PhaseFailed(Event):
    """A plan's finish phase failed on ``machine`` (prepare failures are results)."""

    kind: ClassVar[str] = "finish_failed"
    machine: Machine
    plan: str
    note: str


@dataclass(frozen=True)
class InternalError(Event):
    """atex-ci itself failed on ``test``: the traceback, for debugging."""

    kind: ClassVar[str] = "internal_error"
    test: Test
    traceback: str


#: A subscriber: receives every event of the stream, in order.
Sink = Callable[[Event], None]


class EventStream:
    """Hands every event to its sinks, in the order they subscribed.

    Sinks get one event at a time: an event emitted from a worker thread
    (the executor records results off the event loop) waits for the one
    being handed out. A stream is a sink itself (``stream(event)``), so a
    part that takes a sink takes a stream.
    """

    def __init__(self, sinks: Iterable[Sink] = ()) -> None:
        self._sinks: list[Sink] = list(sinks)
        self._lock = threading.RLock()

    def subscribe(self, sink: Sink) -> None:
        self._sinks.append(sink)

    def __call__(self, event: Event) -> None:
        with self._lock:
            for sink in self._sinks:
                sink(event)

    emit = __call__


def to_record(event: Event) -> dict[str, Any]:
    """The event as a JSON-ready dict: ``event`` (its kind), ``time`` and its
    fields, a machine as its id, a test as its name, plan and serial number,
    results as results.jsonl records, plans by name."""
    record: dict[str, Any] = {"event": event.kind}
    for f in dataclasses.fields(event):
        record[f.name] = _plain(getattr(event, f.name))
    return record


def _plain(value: object) -> Any:
    if isinstance(value, Machine):
        return value.id
    if isinstance(value, Test):
        return {"name": value.name, "plan": value.plan, "serial_number": value.serial_number}
    if isinstance(value, Result):
        return value.to_dict()
    if isinstance(value, Plan):
        return value.name
    if isinstance(value, RunState):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


__all__ = [
    "Event",
    "EventStream",
    "InternalError",
    "MachineChanged",
    "MachineChecked",
    "MachineLost",
    "MachineNotReplaced",
    "MachineReady",
    "MachineReleased",
    "MachineReserved",
    "Notice",
    "PhaseFailed",
    "PlanAborted",
    "ReservationFailed",
    "RunFinished",
    "RunStarted",
    "Sink",
    "TestFinished",
    "TestNotRun",
    "TestRequeued",
    "TestResults",
    "TestStarted",
    "to_record",
]
