"""Run bookkeeping: what any runner writes into a run directory, in one place.

``RunDir`` knows the files (run.json, machines.json, results.jsonl,
events.jsonl, artifacts/); the ``Recorder`` knows what goes into them while a
run happens: the run's state (``RunState``), each machine's record and its
events (reserved, ready, broken, replaced, released), each test's events
(started, finished, queued again) and results with their attempt numbers.
A runner of your own that records through it writes a run directory that
``report``, ``collect``, ``release`` and ``run --resume`` accept.

Which results count is decided here too, for every reader (a test
instance is a ``model.TestId``): the latest attempt of each
(``final_results``) and the exit code those final results mean
(``exit_code``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .errors import ConfigError, StorageError
from .events import (
    Event,
    InternalError,
    MachineChanged,
    MachineChecked,
    MachineLost,
    MachineNotReplaced,
    MachineReady,
    MachineReleased,
    MachineReserved,
    PhaseFailed,
    ReservationFailed,
    RunFinished,
    RunStarted,
    TestFinished,
    TestNotRun,
    TestRequeued,
    TestResults,
    TestStarted,
)
from .model import (
    Machine,
    MachineState,
    Reason,
    Result,
    RunState,
    Status,
    Test,
    TestId,
    as_read_back,
)
from .rundir import ArtifactTree, RunDir, atomic_write_json


def final_results(results: Iterable[Result]) -> list[Result]:
    """The results of each test instance's latest attempt, in stable order.

    A test instance is identified by ``TestId.of_result``. Only results of its
    highest ``attempt`` are kept, so a sub-result that only an earlier attempt
    reported cannot linger next to a passing rerun. Within that attempt, one
    result per ``name`` is kept (the last one seen, e.g. after ``--resume``
    wrote it again). Results are returned in the order their
    ``(test key, name)`` first appeared in ``results``.
    """
    results = list(results)
    latest: dict[TestId, int] = {}
    for result in results:
        key = TestId.of_result(result)
        latest[key] = max(latest.get(key, result.attempt), result.attempt)

    # A dict keeps first-appearance order; values are filled by the chosen attempt.
    chosen: dict[tuple[TestId, str | None], Result | None] = {}
    for result in results:
        key = TestId.of_result(result)
        slot = (key, result.name)
        chosen.setdefault(slot, None)
        if result.attempt == latest[key]:
            chosen[slot] = result
    return [result for result in chosen.values() if result is not None]


def standing_result(results: Iterable[Result]) -> Result | None:
    """The result that stands for one run of one test (``results``: that run's).

    Its own result (``name`` None). A test with sub-results only has none:
    tmt's ``result: custom`` whose results file has no ``/`` entry, where
    tmt 1.78 records each entry as a result of its own and none for the test.
    The worst of them (first on a tie) then stands for the test, so it is
    scheduled, shown and counted as run, not as lost. None without results.
    """
    results = list(results)
    own = next((r for r in results if r.name is None), None)
    if own is not None or not results:
        return own
    worst = Status.worst(r.status for r in results)
    return next(r for r in results if r.status is worst)


#: Exit codes of a finished run (docs/cli.md, "Exit codes").
EXIT_PASSED = 0
EXIT_TEST_FAILURES = 1
EXIT_INFRA = 3


def exit_code(final: Iterable[Result]) -> int:
    """The exit code the final results mean, and nothing else.

    ``EXIT_INFRA`` when any final result is an infrastructure error (a lost
    machine, no machine left, a failed prepare); else ``EXIT_TEST_FAILURES``
    when any final result, a sub-result included, is fail or error (a timeout,
    an interrupted test, a protocol violation, an internal error of atex-ci
    on that test); else ``EXIT_PASSED`` (pass, warn, info and skip). So a run
    never exits 0 while one of its final results is fail or error.
    """
    code = EXIT_PASSED
    for result in final:
        if not result.status.is_failure:
            continue
        if result.reason is Reason.INFRA:
            return EXIT_INFRA
        code = EXIT_TEST_FAILURES
    return code


class Attempts:
    """Attempt numbers: a test instance run again gets one more than its
    highest recorded attempt, so no attempt's results or artifacts are
    overwritten and readers keep the last one."""

    def __init__(self, results: Iterable[Result] = ()) -> None:
        self._latest: dict[TestId, int] = {}
        for result in results:
            self.seen(result)

    def seen(self, result: Result) -> None:
        key = TestId.of_result(result)
        self._latest[key] = max(self._latest.get(key, 0), result.attempt)

    def next(self, key: TestId) -> int:
        """Take the next attempt number of ``key``."""
        self._latest[key] = self._latest.get(key, 0) + 1
        return self._latest[key]


class Recorder:
    """Writes a run's bookkeeping into its ``RunDir``; hold the run's lock.

    During a run it is a subscriber of the run's event stream (call it with
    each ``events.Event``) and the only writer of the run directory; its
    methods serve commands outside a run (``reserve``, ``release``,
    ``collect``). Every method writes at once (results and events are
    appended and flushed, machines.json and run.json are replaced
    atomically), so a run cut short leaves a run directory that says how far
    it got. Test files go where ``artifacts`` says.
    """

    def __init__(self, rundir: RunDir) -> None:
        self.rundir = rundir
        self._attempts: Attempts | None = None

    def __call__(self, event: Event) -> None:
        """Record one event of the run's stream (what is only news for a
        person, e.g. a ``Notice``, is not recorded)."""
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)

    @property
    def artifacts(self) -> ArtifactTree:
        """Where each test run's files go (RUN/artifacts/)."""
        return self.rundir.artifacts

    @property
    def attempts(self) -> Attempts:
        """The attempt numbers so far (read from results.jsonl when first needed)."""
        if self._attempts is None:
            self._attempts = Attempts(self.rundir.read_results())
        return self._attempts

    # -- the run --------------------------------------------------------------------

    def state(self, state: RunState, **fields: Any) -> None:
        """Set run.json's ``state`` (and any other fields, e.g. ``platforms``)."""
        self.rundir.update_run(state=str(RunState(state)), **fields)

    def set_aside_run(self) -> Path:
        """Move the earlier run's files to previous/N/ (``run --restart``); returns where."""
        return self.rundir.set_aside_run()

    def run_info(self, **fields: Any) -> None:
        """Set fields of run.json (e.g. ``fmf``: what the run discovers from)."""
        self.rundir.update_run(**fields)

    def selection(self, name: str, record: dict[str, Any]) -> None:
        """Write one of the files that say which tests the run selected
        (split.json, selection.json: ``selection.py``), replacing it at once."""
        atomic_write_json(self.rundir.path / name, record)

    def event(self, event: str, **fields: Any) -> None:
        """Append one event to events.jsonl (``time`` is added)."""
        self.rundir.append_event(event, **fields)

    def copied_event(self, record: dict[str, Any]) -> None:
        """Append an event of another run, its own ``time`` kept (``collect``)."""
        self.rundir.append_event_record(record)

    def delete_keys(self) -> None:
        """Delete the run's private keys (keys/): call it once no machine needs them."""
        keys = self.rundir.path / "keys"
        if keys.is_dir():
            for key in keys.iterdir():
                with contextlib.suppress(OSError):
                    key.unlink()
            with contextlib.suppress(OSError):
                keys.rmdir()

    # -- results ----------------------------------------------------------------------

    def next_attempt(self, platform: str, test: Test) -> int:
        """The attempt number for the next run of ``test`` on ``platform``."""
        return self.attempts.next(TestId.of(platform, test))

    def result(self, result: Result) -> None:
        """Append a result (its attempt number taken from ``next_attempt``)."""
        self.rundir.append_result(result)
        self.attempts.seen(result)

    def final(self, selected: set[tuple[str, str, str]] | None = None) -> list[Result]:
        """The latest attempt of every test in results.jsonl; with ``selected``,
        of those ``(platform, plan, test)`` only."""
        final = final_results(self.rundir.read_results())
        if selected is None:
            return final
        wanted = {tuple(as_read_back(part) for part in key) for key in selected}
        return [r for r in final if (r.platform, r.plan, r.test) in wanted]

    # -- tests ------------------------------------------------------------------------

    def test_started(self, test: Test, machine: Machine) -> None:
        self.event("test_started", test=test.name, plan=test.plan, machine=machine.id)

    def test_finished(self, test: Test, machine: Machine, status: str | None) -> None:
        self.event(
            "test_finished", test=test.name, plan=test.plan, machine=machine.id, status=status
        )

    def test_requeued(self, test: Test, platform: str, machine: Machine, why: str) -> None:
        """``test`` is queued again (a rerun, a retry after an infrastructure failure)."""
        self.event(
            "test_requeued",
            test=test.name,
            plan=test.plan,
            platform=platform,
            machine=machine.id,
            note=why,
        )

    # -- machines -----------------------------------------------------------------

    def machine_reserved(self, machine: Machine) -> None:
        """Record a machine the moment it is ready to take tests."""
        self.rundir.update_machine(machine)
        self.event("machine_reserved", machine=machine.id, provisioner=machine.provisioner)

    def machine_changed(self, machine: Machine) -> None:
        """Rewrite a machine's record (e.g. its host key, pinned on first contact)."""
        self.rundir.update_machine(machine)

    def machine_ready(self, machine: Machine) -> None:
        """The run's tree is on the machine: it takes tests from now on."""
        self.event("machine_ready", machine=machine.id)

    def machine_broken(self, machine: Machine, why: str) -> None:
        """The machine is out of use (lost, failed setup, discarded by the policy)."""
        machine.state = MachineState.BROKEN
        self.rundir.update_machine(machine)
        self.event("machine_broken", machine=machine.id, note=why)

    def machine_replaced(self, machine: Machine, replacement: Machine) -> None:
        self.event("machine_replaced", machine=machine.id, replacement=replacement.id)

    def machine_not_replaced(self, machine: Machine, why: str) -> None:
        self.event("machine_not_replaced", machine=machine.id, note=why)

    def reservation_failed(self, platform: str, why: str, replaces: Machine | None) -> None:
        self.event(
            "reservation_failed",
            platform=platform,
            replaces=replaces.id if replaces else None,
            note=why,
        )

    def machine_released(self, machine: Machine) -> None:
        """Record a machine its provisioner gave back (state and released_at set)."""
        self.rundir.update_machine(machine)
        self.event("machine_released", machine=machine.id)


# -- the Recorder as a subscriber of the run's event stream -------------------------------


def _run_started(rec: Recorder, e: RunStarted) -> None:
    rec.rundir.write_tests(dict(e.plans))
    rec.state(RunState.RUNNING, platforms=e.platforms)


def _run_finished(rec: Recorder, e: RunFinished) -> None:
    with contextlib.suppress(StorageError, ConfigError):
        if all(m.state == MachineState.RELEASED for m in rec.rundir.read_machines()):
            rec.delete_keys()  # no machine is left that needs them
    rec.state(e.state)


def _machine_reserved(rec: Recorder, e: MachineReserved) -> None:
    rec.machine_reserved(e.machine)
    if e.replaces is not None:
        rec.machine_replaced(e.replaces, e.machine)


def _machine_checked(rec: Recorder, e: MachineChecked) -> None:
    rec.event(
        "machine_checked",
        machine=e.machine.id,
        test=e.test.name,
        healthy=e.healthy,
        **({"note": e.note} if e.note else {}),
    )


def _test_results(rec: Recorder, e: TestResults) -> None:
    for result in e.results:
        rec.result(result)


def _test_finished(rec: Recorder, e: TestFinished) -> None:
    rec.test_finished(e.test, e.machine, str(e.result.status) if e.result else None)


def _phase_failed(rec: Recorder, e: PhaseFailed) -> None:
    rec.event("finish_failed", machine=e.machine.id, plan=e.plan, note=e.note)


def _internal_error(rec: Recorder, e: InternalError) -> None:
    rec.event("internal_error", test=e.test.name, plan=e.test.plan, traceback=e.traceback)


_HANDLERS: dict[type[Any], Callable[[Recorder, Any], None]] = {
    RunStarted: _run_started,
    RunFinished: _run_finished,
    MachineReserved: _machine_reserved,
    MachineChanged: lambda rec, e: rec.machine_changed(e.machine),
    MachineReady: lambda rec, e: rec.machine_ready(e.machine),
    MachineChecked: _machine_checked,
    MachineLost: lambda rec, e: rec.machine_broken(e.machine, e.note),
    MachineNotReplaced: lambda rec, e: rec.machine_not_replaced(e.machine, e.note),
    ReservationFailed: lambda rec, e: rec.reservation_failed(e.platform, e.note, e.replaces),
    MachineReleased: lambda rec, e: rec.machine_released(e.machine),
    TestStarted: lambda rec, e: rec.test_started(e.test, e.machine),
    TestResults: _test_results,
    TestFinished: _test_finished,
    TestNotRun: lambda rec, e: rec.result(e.result),
    TestRequeued: lambda rec, e: rec.test_requeued(e.test, e.platform, e.machine, e.note),
    PhaseFailed: _phase_failed,
    InternalError: _internal_error,
}


__all__ = [
    "EXIT_INFRA",
    "EXIT_PASSED",
    "EXIT_TEST_FAILURES",
    "Attempts",
    "Recorder",
    "RunState",
    "exit_code",
    "final_results",
    "standing_result",
]
