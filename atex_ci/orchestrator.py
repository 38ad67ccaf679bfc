"""The async driver: one worker per machine, each asking the scheduler for its
next test whenever it is free, running it through an Executor, and saying
what happened on the run's event stream (``events.py``), which the Recorder,
the progress display and the user's sinks hear. Machines come from the pool
(``pool.py``: reservation, replacement, release); policy lives in
``schedule.py``; a plan's phases in ``execute/phases.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import traceback
from pathlib import Path

from . import masking
from .errors import ConfigError, StorageError, first_atex_error
from .events import (
    Event,
    EventStream,
    InternalError,
    MachineChanged,
    MachineChecked,
    MachineLost,
    MachineReady,
    Notice,
    PhaseFailed,
    PlanAborted,
    RunFinished,
    RunStarted,
    TestFinished,
    TestNotRun,
    TestRequeued,
    TestResults,
    TestStarted,
)
from .execute.executor import Executor, TestOutcome
from .execute.outcome import RunFacts, internal_error, not_run
from .execute.phases import PhaseError, PlanPhases
from .execute.staging import build_remote_tar, build_tree_tar
from .model import Machine, MachineState, Plan, Reason, Result, Status, Test
from .pool import MachinePool
from .progress import ProgressSink, expected_left
from .recorder import Recorder, RunState, standing_result
from .run_options import RunOptions, RunSummary
from .rundir import RunDir, now_iso
from .schedule import Decision, History, Job, Next, Outcome, Scheduler
from .selection import Selection, select_jobs
from .transport.base import Transport, TransportError

#: Bound on each clean-up step of a machine the run is done with (one plan's
#: finish phases, ending every process the run left there): longer than a
#: test's clean-up (executor.TEST_CLEANUP_TIMEOUT) since finish scripts do
#: real work, yet a machine that cannot finish in a minute is let go.
MACHINE_CLEANUP_TIMEOUT = 60.0

#: Bound on the health check of a machine after a timeout (reconnecting with
#: its retries, killing the test's leftovers): a machine that cannot answer
#: in a minute is not one to give more tests to.
HEALTH_CHECK_TIMEOUT = 60.0


def run_platforms(recorded: list[Machine], options: RunOptions) -> list[str]:
    """The platforms a run's tests run on: those of the ready machines among
    ``recorded`` and those the provisioners it reserves from name
    (``Provisioner.platforms()``, known before any machine is up). Without
    either, those of machines an earlier run released (their tests may all be
    done, ``--resume``, or need new machines); else ``default``."""
    platforms = {m.platform for m in recorded if m.state == MachineState.READY}
    platforms |= {p for source, _ in options.sources for p in source.platforms()}
    return sorted(platforms) or sorted({m.platform for m in recorded}) or ["default"]


class Orchestrator:
    """Runs the discovered plans on the run directory's machines."""

    def __init__(
        self,
        rundir: RunDir,
        fmf_root: Path,
        plans: list[Plan] | dict[str, list[Plan]],
        options: RunOptions | None = None,
    ) -> None:
        """``plans``: the same plans for every platform, or each platform's own
        (discovered with that platform's context); every platform that has
        machines must then have an entry."""
        self.rundir = rundir
        self.fmf_root = fmf_root
        self._plans_by_platform = plans if isinstance(plans, dict) else None
        self.plan_list = (
            plans
            if isinstance(plans, list)
            else [plan for platform_plans in plans.values() for plan in platform_plans]
        )
        self.options = options or RunOptions()
        self.results: list[Result] = []
        self.run_id = rundir.read_run()["id"]
        # Set (and replaced) whenever the scheduler's state changes.
        self._state_changed = asyncio.Event()
        # The run directory's only writer, the progress display, this
        # invocation's results and the user's sinks hear every event.
        self.recorder = Recorder(rundir)
        self.display = ProgressSink(self.options.progress, show_starts=self.options.show_starts)
        self.events = EventStream([self.recorder, self._collect, self.display, *self.options.sinks])
        self.pool = MachinePool(
            rundir, self.options.pool, emit=self.events, keep_machines=self.options.keep_machines
        )

    async def run(self) -> RunSummary:
        recorded = self.rundir.read_machines()
        machines = [m for m in recorded if m.state == MachineState.READY]
        platforms = run_platforms(recorded, self.options)
        by_platform = self._plans_by_platform
        missing = [p for p in platforms if by_platform is not None and p not in by_platform]
        if missing:
            raise ConfigError(f"no tests were discovered for platform(s) {', '.join(missing)}")
        scheduler = self._sched = self._scheduler(platforms)
        sources = self.pool.sources(
            recorded,
            self.options.sources,
            platforms,
            local_slots=self.options.local_slots,
            pending=bool(scheduler.pending()),
        )
        plans = {p: self._platform_plans(p) for p in platforms}
        self.events(RunStarted(platforms, plans, total=len(scheduler.pending())))
        state = RunState.CRASHED  # unless we get to say otherwise
        failed = True
        # Owned here and cancelled in the finally below, whatever happens.
        ticker = asyncio.create_task(self._tick_status(len(machines) or 1))
        watcher = asyncio.create_task(self.pool.watch_budget(scheduler))
        try:
            self._tree_tar, self._remote_tars = await asyncio.to_thread(self._tars, platforms)
            try:
                async with asyncio.TaskGroup() as tg:
                    self._tg = tg
                    self.pool.begin(
                        tg, scheduler, platforms, machines, sources, self._start, self._changed
                    )
            except BaseExceptionGroup as group:
                # The run directory could not be written (disk full, read-only,
                # removed): the workers stopped (their tests were recorded as
                # interrupted where that was still possible); say it in one line.
                storage = first_atex_error(group, StorageError)
                if storage is None:
                    raise
                raise storage from None
            self._record_stopped(scheduler)
            for platform in platforms:
                # A job queued again (a rerun, an infra retry) that found no
                # machine keeps its last attempt's result: it says more.
                why = self.pool.no_machine_why(platform)
                self._not_run(
                    [job for job in scheduler.no_machine_left(platform) if job.runs == 0],
                    f"not run: no usable machine left for platform {platform}"
                    + (f" ({why})" if why else ""),
                    Status.ERROR,
                )
            state = RunState.FINISHED
            failed = False
        except asyncio.CancelledError:
            state = RunState.INTERRUPTED
            raise
        finally:
            for task in (ticker, watcher):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await asyncio.shield(self.pool.release_reserved())
            try:
                self.events(RunFinished(state))
            except StorageError:
                if not failed:
                    raise
                # The run already fails with its own error; that one is the news.
        return RunSummary(self.results, final=self._final(platforms))

    def _collect(self, event: Event) -> None:
        """This invocation's results (``RunSummary.results``)."""
        if isinstance(event, TestResults):
            self.results.extend(event.results)
        elif isinstance(event, TestNotRun):
            self.results.append(event.result)

    def _start(self, machine: Machine) -> None:
        """Hand a ready machine to the scheduler and start its worker."""
        self._sched.add_machine(machine)
        self._tg.create_task(self._worker(machine))

    def _changed(self) -> None:
        """Wake the workers waiting for the scheduler's state to change."""
        event, self._state_changed = self._state_changed, asyncio.Event()
        event.set()

    # -- the status summary ------------------------------------------------------------

    async def _tick_status(self, machines: int) -> None:
        """Hand ``options.status`` a summary every ``status_interval`` seconds."""
        report, history = self.options.status, self.options.history
        if report is None:
            return

        def estimate(elapsed: dict[str, float]) -> tuple[float | None, int]:
            left = expected_left(self._sched, elapsed) if history else None
            return left, len(self._sched.machines) or machines

        await self.display.tick(report, self.options.status_interval, estimate)

    # -- plans and the scheduler -------------------------------------------------------

    def _platform_plans(self, platform: str) -> list[Plan]:
        if self._plans_by_platform is None:
            return self.plan_list
        return self._plans_by_platform[platform]

    def _platform_tests(self, platform: str) -> list[Test]:
        return [t for plan in self._platform_plans(platform) for t in plan.tests]

    def _plan(self, platform: str, name: str) -> Plan:
        return next(p for p in self._platform_plans(platform) if p.name == name)

    def _final(self, platforms: list[str]) -> list[Result]:
        """The last attempt of every selected test on these platforms, from the run directory."""
        selected = {
            (platform, t.plan, t.name)
            for platform in platforms
            for t in self._platform_tests(platform)
        }
        return self.recorder.final(selected)

    def _tars(self, platforms: list[str]) -> tuple[bytes, dict[str, bytes]]:
        """The fmf tree (with remote trees and libraries), and per platform the
        remote scripts with each of its tests' metadata (a platform's context
        can change a test's data)."""
        extras = {path: local for plan in self.plan_list for path, local in plan.trees.items()}
        remote = {p: build_remote_tar(self._platform_tests(p)) for p in platforms}
        return build_tree_tar(self.fmf_root, extras), remote

    def _scheduler(self, platforms: list[str]) -> Scheduler:
        """The run's policy over one job per selected test instance and platform."""
        options = self.options
        history = options.history or History()
        jobs = [Job(p, test) for p in platforms for test in self._platform_tests(p)]
        selection = options.selection or Selection(shard=options.shard)
        jobs = select_jobs(self.recorder, jobs, history, selection, options.resume)
        scheduler = options.scheduler_factory(
            jobs, history=history, max_reruns=options.max_reruns, **options.policy
        )
        if options.resume:
            scheduler.resume(self.rundir.read_results())
        return scheduler

    # -- a machine's worker ------------------------------------------------------------

    async def _worker(self, machine: Machine) -> None:
        """Run tests on ``machine`` until the scheduler has none left for it or
        it goes out of use; then hand it back to the pool."""
        provisioner = self.pool.provisioner(machine)
        transport = provisioner.transport(machine)
        executor = Executor(
            transport,
            machine,
            base=provisioner.work_dir(machine, self.run_id),
            artifacts=self.recorder.artifacts,
            sink=self.events,
            run_id=self.run_id,
            limits=self.options.limits,
        )
        phases = PlanPhases(transport, machine, executor.work, key_root=self.rundir.path)
        try:
            done = await self._serve(machine, transport, executor, phases)
        finally:
            self._changed()  # a machine fewer: waiting workers look again
            # Whatever the run's tests and prepare scripts left running on the
            # machine (daemons, setsid sessions) ends with the run.
            with contextlib.suppress(BaseException):
                await asyncio.shield(executor.cleanup(MACHINE_CLEANUP_TIMEOUT))
            with contextlib.suppress(Exception):
                await asyncio.shield(asyncio.wait_for(transport.close(), 10))
        # Not reached when cancelled: the run's clean-up releases what it reserved.
        await self.pool.done_with(machine, done)

    async def _serve(
        self, machine: Machine, transport: Transport, executor: Executor, phases: PlanPhases
    ) -> bool:
        """The worker's loop; False when the machine went out of use."""
        scheduler = self._sched
        try:
            await transport.connect()
            if machine.host_key is None and transport.host_key:
                machine.host_key = transport.host_key
                self.events(MachineChanged(machine))
            await executor.setup(
                self._tree_tar,
                self._remote_tars[machine.platform],
                self._platform_tests(machine.platform),
            )
        except TransportError as exc:
            self.pool.setup_failed()
            self._machine_lost(machine, f"setup failed: {exc}")
            return False
        self.events(MachineReady(machine))
        previous: Job | None = None
        while True:
            # A connection that dropped between tests (a network blip, a
            # machine rebooted from outside) is re-established here, before
            # a test is taken: a test is never handed to a machine that
            # cannot be reached.
            try:
                await transport.connect()
            except TransportError as exc:
                self._machine_lost(machine, f"unreachable: {exc}")
                return False
            # Taken before asking, so a change made while we decide to
            # wait is never missed.
            changed = self._state_changed
            answer = scheduler.next_test(machine, previous)
            if answer is Next.WAIT:
                await changed.wait()
                continue
            if answer is Next.DONE:
                break
            job = answer
            self.pool.stop_reserving_if_done()  # the last queued test may have gone
            executed, setup_failed = await self._run_one(executor, phases, machine, job)
            if setup_failed:
                self.pool.setup_failed()
            own = standing_result(executed.results)
            self.events(TestFinished(job.test, machine.platform, machine, own, executed.results))
            outcome = Outcome.from_result(
                own,
                timed_out=own is not None and own.reason is Reason.TIMEOUT,
                setup_failed=setup_failed,
                machine_lost=executed.machine_lost,
                aborted=executed.abort,
            )
            if scheduler.wants_check(machine, job, outcome):
                outcome = await self._check(executor, machine, job, outcome)
            decision = scheduler.test_finished(machine, job, outcome)
            self._after(machine, job, decision, executed)
            previous = job
            if not decision.keep_machine:
                self._machine_lost(machine, decision.why)
                return False
            self._changed()
        await self._finish(phases, machine)
        return True

    async def _check(
        self, executor: Executor, machine: Machine, job: Job, outcome: Outcome
    ) -> Outcome:
        """The scheduler's outcome plus the machine's health check (a fact)."""
        why = await executor.health_check(job.test, HEALTH_CHECK_TIMEOUT)
        self.events(MachineChecked(machine, job.test, healthy=why is None, note=why))
        return dataclasses.replace(outcome, healthy=why is None)

    def _after(self, machine: Machine, job: Job, decision: Decision, executed: TestOutcome) -> None:
        """Say what the scheduler decided after ``job``: reruns, an aborted plan."""
        test = job.test
        if executed.abort:
            self.events(PlanAborted(test))
            self._not_run(
                list(decision.dropped),
                f"not run: plan {test.plan} was aborted by {test.name} (tmt-abort)",
                Status.SKIP,
            )
        if decision.rerun:
            self.events(TestRequeued(test, job.platform, machine, decision.why))

    async def _run_one(
        self, executor: Executor, phases: PlanPhases, machine: Machine, job: Job
    ) -> tuple[TestOutcome, bool]:
        """Run ``job`` on ``machine``; returns the outcome and whether prepare failed."""
        test, platform = job.test, machine.platform
        plan = self._plan(job.platform, test.plan)
        try:
            await phases.prepare(plan)
        except (PhaseError, TransportError) as exc:
            facts = self._facts(test, machine, self.recorder.next_attempt(platform, test))
            result = facts.result(
                name=None,
                status=Status.ERROR,
                note=masking.active().text(f"prepare failed on {machine.id}: {exc}"),
                files=[],
                reason=Reason.INFRA,
                extra={},
            )
            self.events(TestResults([result]))
            return TestOutcome([result]), True
        except StorageError:
            raise
        except Exception as exc:
            attempt = self.recorder.next_attempt(platform, test)
            return self._internal_error(test, machine, attempt, exc, "preparing its plan"), False
        attempt = self.recorder.next_attempt(platform, test)
        self.events(TestStarted(test, platform, machine, attempt))
        try:
            outcome = await executor.run_test(test, plan, platform=platform, attempt=attempt)
        except StorageError:
            raise
        except Exception as exc:
            # The executor turns whatever happens into results; should atex-ci
            # itself fail on this test all the same, that is this test's error.
            outcome = self._internal_error(test, machine, attempt, exc)
        return outcome, False

    @staticmethod
    def _facts(test: Test, machine: Machine, attempt: int) -> RunFacts:
        """The facts of a run of ``test`` that ended before it started."""
        return RunFacts(test, machine.platform, attempt, machine.id, now_iso(), 0.0, None)

    def _internal_error(
        self, test: Test, machine: Machine, attempt: int, exc: Exception, doing: str = ""
    ) -> TestOutcome:
        """An error of ``test`` for a failure of atex-ci on it, while ``doing``
        something before the test (the traceback goes to events.jsonl). The
        executor ends a test's processes whatever happens inside it, so the
        machine stays in use."""
        self.events(InternalError(test, "".join(traceback.format_exception(exc))))
        note = (
            f"internal error in atex-ci{f' {doing}' if doing else ''}: {type(exc).__name__}: {exc}"
        )
        outcome = internal_error(self._facts(test, machine, attempt), masking.active().text(note))
        self.events(TestResults(outcome.results))
        return outcome

    async def _finish(self, phases: PlanPhases, machine: Machine) -> None:
        for plan in self._platform_plans(machine.platform):
            try:
                async with asyncio.timeout(MACHINE_CLEANUP_TIMEOUT):
                    await phases.finish(plan)
            except (PhaseError, TransportError, TimeoutError) as exc:
                self.events(PhaseFailed(machine, plan.name, str(exc)))

    def _machine_lost(self, machine: Machine, why: str) -> None:
        self._sched.machine_lost(machine)
        self.events(MachineLost(machine, why))

    def _record_stopped(self, scheduler: Scheduler) -> None:
        """Record the tests a stop of the policy kept from starting (skipped)."""
        dropped = scheduler.not_run()
        for note in dict.fromkeys(note for _, note in dropped):
            jobs = [job for job, why in dropped if why == note]
            self.events(Notice(f"atex-ci: {len(jobs)} test(s) {note}"))
            self._not_run(jobs, note, Status.SKIP)

    def _not_run(self, jobs: list[Job], note: str, status: Status) -> None:
        """Record jobs that will not run (no machine left, plan aborted, a stop)."""
        for job in jobs:
            attempt = self.recorder.next_attempt(job.platform, job.test)
            result = not_run(job.test, job.platform, attempt, status, note)
            self.events(TestNotRun(job.test, job.platform, result))
