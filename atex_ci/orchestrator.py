"""The async driver: one worker per machine, each asking the scheduler for its
next test whenever it is free, running it through an Executor, and recording
what happened (through the Recorder). Machines arriving while tests run, their
loss, replacement and early release (with the pool's bookkeeping in
``pool.py``), interruption and clean-up live here; policy lives in
``schedule.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import statistics
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import AtexError, ConfigError, InfraError, StorageError
from .execute.executor import Executor, Limits, PhaseError, TestOutcome
from .execute.staging import build_remote_tar, build_tree_tar
from .model import Machine, MachineState, Plan, Reason, Result, Status, Test
from .pool import MachinePool, PoolLimits
from .progress import RunStatus
from .provision import get_provisioner
from .provision.base import Provisioner
from .provision.local import LocalProvisioner, default_slots
from .recorder import Recorder, RunState, exit_code, standing_result
from .remote_tree import GitCache
from .report.text import progress_note
from .rundir import RunDir, now_iso
from .schedule import Decision, History, Job, Next, Outcome, Scheduler
from .selection import Selection, select_jobs
from .transport.base import KeyRejectedError, Transport, TransportError

log = logging.getLogger("atex_ci")

#: Bound on each clean-up step of a machine the run is done with (one plan's
#: finish phases, ending every process the run left there): longer than a
#: test's clean-up (executor.TEST_CLEANUP_TIMEOUT) since finish scripts do
#: real work, yet a machine that cannot finish in a minute is let go.
MACHINE_CLEANUP_TIMEOUT = 60.0

#: Bound on the health check of a machine after a timeout (reconnecting with
#: its retries, killing the test's leftovers): a machine that cannot answer
#: in a minute is not one to give more tests to.
HEALTH_CHECK_TIMEOUT = 60.0

#: Shortest sleep between two looks at the time budget: a test that ends
#: exactly at the deadline still fits, so the next look comes a little later.
BUDGET_WAKE_MIN = 0.1


@dataclass
class RunOptions:
    limits: Limits = field(default_factory=Limits)
    #: Local slots to reserve when the run directory has no machines.
    local_slots: int | None = None
    #: Skip tests that already have a final result in results.jsonl.
    resume: bool = False
    #: Called with one human-readable progress line per event (a test started
    #: or finished, a machine broke, a test queued again).
    progress: Callable[[str], None] | None = None
    #: Whether ``progress`` also gets a line when a test starts.
    show_starts: bool = True
    #: Called every ``status_interval`` seconds with a one-line summary
    #: (done/total, failures, what each machine runs, ETA); None: never.
    status: Callable[[str], None] | None = None
    status_interval: float = 30.0
    #: The scheduling policy: a Scheduler subclass (or any callable taking
    #: ``(jobs, history=..., max_reruns=...)`` and returning a Scheduler).
    scheduler_factory: Callable[..., Scheduler] = Scheduler
    #: Durations of earlier runs: orders the queue longest first, balances shards.
    history: History | None = None
    #: Times a failed or errored test is run again (preferring another machine).
    max_reruns: int = 0
    #: ``(index, count)``, 1-based: run only this share of the tests (``--shard I/N``).
    shard: tuple[int, int] | None = None
    #: Provisioners this run reserves from itself, with how many machines each,
    #: besides the machines recorded in the run directory. Each machine takes
    #: tests the moment it is ready and is released when nothing is left for it.
    sources: list[tuple[Provisioner, int]] = field(default_factory=list)
    #: The machine budget: machines in all, failed setups (``--max-machines``...).
    pool: PoolLimits = field(default_factory=PoolLimits)
    #: Keep the machines recorded by ``atex-ci reserve`` when nothing is left
    #: for them (for another ``run``); by default they are released at once.
    keep_machines: bool = False
    #: Start over in a run directory that already holds a run's results: its
    #: files move to ``previous/N/`` first (without it, such a directory is
    #: refused unless ``resume``).
    restart: bool = False
    #: What narrows the jobs (``--shard`` with a recorded split,
    #: ``--rerun-failed``); None: ``shard`` alone.
    selection: Selection | None = None
    #: More keyword options of the scheduling policy (``max_failures``,
    #: ``time_budget``...); the scheduler hands back what they keep from
    #: running (``Scheduler.not_run``), recorded as skipped.
    policy: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunSummary:
    """What a run did (``results``: this invocation's) and what the run
    directory now says about the selected tests (``final``: the last attempt of
    each, including earlier invocations', e.g. before ``--resume``)."""

    results: list[Result]
    final: list[Result] = field(default_factory=list)
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        """130 interrupted; else what the final results mean (``recorder.exit_code``):
        0 all passed, 1 test failures, 3 infrastructure errors."""
        if self.interrupted:
            return 130
        return exit_code(self.final or self.results)


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
        self.progress = self.options.progress or (lambda line: None)
        self.results: list[Result] = []
        self.run_id = rundir.read_run()["id"]
        self._done = 0
        self._total = 0
        # Set (and replaced) whenever the scheduler's state changes.
        self._state_changed = asyncio.Event()
        # For the status summary: what runs where since when, and what ended.
        self._running_tests: dict[str, tuple[str, float]] = {}
        self._failed = 0
        self._durations: list[float] = []
        # The pool: machines this run reserved itself (released when done and
        # at the end, whatever happens), reservations under way (task ->
        # platform), which platforms have a provisioner that can replace a
        # machine, and why a platform has no machine (a failed reservation).
        self._reserved_here: dict[str, Machine] = {}
        self._reservations: dict[asyncio.Task[None], set[str]] = {}
        self._replacer: dict[str, bool] = {}
        self._no_machine_why: dict[str, str] = {}
        # Results, events, machine records, attempt numbers and the run state.
        self.recorder = Recorder(rundir)

    async def run(self) -> RunSummary:
        rundir = self.rundir
        recorded = rundir.read_machines()
        machines = [m for m in recorded if m.state == MachineState.READY]
        sources = list(self.options.sources)
        platforms = sorted(
            {m.platform for m in machines}
            | {p for source, _ in sources for p in source.platforms()}
        )
        # Machines released by an earlier run: their platforms' tests may all
        # be done already (``--resume``), or need new machines.
        platforms = platforms or sorted({m.platform for m in recorded}) or ["default"]
        missing = [
            p
            for p in platforms
            if self._plans_by_platform is not None and p not in self._plans_by_platform
        ]
        if missing:
            raise ConfigError(f"no tests were discovered for platform(s) {', '.join(missing)}")
        scheduler = self._sched = self._scheduler(platforms)
        if not machines and not sources and scheduler.pending():
            if any(m.provisioner != LocalProvisioner.kind for m in recorded):
                raise InfraError(
                    f"no machine in {rundir.path / 'machines.json'} is ready (they broke, or "
                    "were released when an earlier run no longer needed them); reserve new "
                    "ones with 'atex-ci reserve' (or keep them with 'run --keep-machines')"
                )
            # Local slots cost nothing: new ones, as many per platform as before.
            for platform in platforms:
                before = sum(1 for m in recorded if m.platform == platform)
                slots = self.options.local_slots or before or default_slots()
                sources.append((LocalProvisioner(rundir, platform), slots))
        rundir.write_tests({p: self._platform_plans(p) for p in platforms})
        self.recorder.state(RunState.RUNNING, platforms=platforms)
        self._total = len(scheduler.pending())
        self._pool = MachinePool(rundir, self.options.pool)
        self._pool.adopt(machines)
        for platform in platforms:
            # Whether a lost machine of this platform has a provisioner that
            # can replace it (the budget is checked when it comes to that).
            self._replacer[platform] = any(
                platform in p.platforms() and p.can_replace() for p, _ in sources
            ) or self._pool.replaceable([m for m in machines if m.platform == platform])
        self._update_replaceable()
        state = RunState.CRASHED  # unless we get to say otherwise
        failed = True
        # Owned here and cancelled in the finally below, whatever happens.
        ticker = asyncio.create_task(self._tick_status(scheduler, len(machines) or 1))
        watcher = asyncio.create_task(self._watch_budget(scheduler))
        try:
            self._tree_tar, self._remote_tars = await asyncio.to_thread(self._tars, platforms)
            try:
                async with asyncio.TaskGroup() as tg:
                    self._tg = tg
                    for machine in machines:
                        self._start(machine)
                    for provisioner, count in sources:
                        self._reserve(provisioner, count)
                    self._stop_reserving_if_done()
            except BaseExceptionGroup as group:
                # The run directory could not be written (disk full, read-only,
                # removed): the workers stopped (their tests were recorded as
                # interrupted where that was still possible); say it in one line.
                storage = _first(group, StorageError)
                if storage is None:
                    raise
                raise storage from None
            self._record_stopped(scheduler)
            for platform in platforms:
                # A job queued again (a rerun, an infra retry) that found no
                # machine keeps its last attempt's result: it says more.
                why = self._no_machine_why.get(platform, "")
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
            ticker.cancel()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            # What this run reserved itself never outlives it.
            await asyncio.shield(self._release_all(list(self._reserved_here.values())))
            with contextlib.suppress(StorageError, ConfigError):
                if all(m.state == MachineState.RELEASED for m in rundir.read_machines()):
                    delete_keys(rundir)  # no machine is left that needs them
            try:
                self.recorder.state(state)
            except StorageError:
                if not failed:
                    raise
                # The run already fails with its own error; that one is the news.
        return RunSummary(self.results, final=self._final(platforms))

    # -- the pool: machines arriving, replaced, released ------------------------------

    def _start(self, machine: Machine) -> None:
        """Hand a ready machine to the scheduler and start its worker."""
        self._sched.add_machine(machine)
        self._tg.create_task(self._worker(machine))

    def _reserve(
        self, provisioner: Provisioner, count: int, replaces: Machine | None = None
    ) -> None:
        """Reserve ``count`` machines in the background; each starts taking
        tests the moment it is ready."""
        platform = ", ".join(sorted(provisioner.platforms()))

        def ready(machine: Machine) -> None:
            self._reserved_here[machine.id] = machine
            if replaces is not None:
                self.recorder.machine_replaced(replaces, machine)
                self.progress(f"atex-ci: machine {machine.id} replaces {replaces.id}")
            elif not machine.is_local:  # local slots come at once: no news
                self.progress(
                    f"atex-ci: reserved {machine.id} ({machine.address}); it takes tests now"
                )
            self._start(machine)

        async def reserve() -> None:
            try:
                await self._pool.reserve(provisioner, count, ready)
            except (StorageError, KeyRejectedError):
                raise  # the run directory is gone, or a configuration to fix: the run stops
            except Exception as exc:  # a provisioner's failure ends its reservation, not the run
                self._reservation_failed(provisioner, platform, exc, replaces)
            finally:
                self._reservations.pop(task, None)
                self._update_replaceable()
                self._changed()

        room = self._pool.room()
        if room is not None and room < count and replaces is None:
            self.progress(
                f"atex-ci: reserving {room} of {count} machine(s) for platform {platform}: "
                + (self._pool.spent() or "the rest is over --max-machines")
            )
        task = self._tg.create_task(reserve())
        self._reservations[task] = provisioner.platforms()

    def _reservation_failed(
        self, provisioner: Provisioner, platform: str, exc: Exception, replaces: Machine | None
    ) -> None:
        why = str(exc) if isinstance(exc, AtexError) else f"{type(exc).__name__}: {exc}"
        for one in provisioner.platforms():
            self._no_machine_why[one] = why
        self.recorder.reservation_failed(platform, why, replaces)
        self.progress(f"atex-ci: reserving for platform {platform} failed: {why}")

    def _update_replaceable(self) -> None:
        """Tell the scheduler which platforms can still get a replacement."""
        room = not self._pool.spent()
        for platform, replacer in self._replacer.items():
            self._sched.replacements(platform, room and replacer)

    def _stop_reserving_if_done(self) -> None:
        """Cancel reservations for platforms where nothing is queued and no
        running test may come back (the provisioner gives back what it had
        requested and not yet handed over)."""
        if not self._reservations:
            return
        scheduler = self._sched
        may_come_back = {
            job.platform for job in scheduler.running().values() if scheduler.may_come_back(job)
        }
        for task, platforms in list(self._reservations.items()):
            if not any(p in may_come_back or scheduler.wants_machine(p) for p in platforms):
                task.cancel()

    def _replace(self, machine: Machine) -> None:
        """A machine went out of use: reserve another like it, if a queued test
        needs one and the budget allows (a test that comes back later, its own
        machine lost, brings about a replacement of that machine)."""
        if not self._sched.wants_machine(machine.platform):
            return  # nothing a replacement could do
        provisioner, why = self._pool.replacement(machine)
        if provisioner is None:
            self.recorder.machine_not_replaced(machine, why)
            self.progress(f"atex-ci: machine {machine.id} is not replaced: {why}")
            self._update_replaceable()
            self._changed()
            return
        self._reserve(provisioner, 1, replaces=machine)

    async def _watch_budget(self, scheduler: Scheduler) -> None:
        """Wake the run whenever a queued test stops fitting the time budget
        (``Scheduler.budget_wake``): free machines then leave, and reservations
        no test waits for any more are cancelled, even while no machine is
        ready to ask for work."""
        while (at := scheduler.budget_wake()) is not None:
            await asyncio.sleep(max(at - scheduler.clock(), BUDGET_WAKE_MIN))
            self._stop_reserving_if_done()
            self._changed()

    async def _tick_status(self, scheduler: Scheduler, machines: int) -> None:
        """Hand ``options.status`` a summary every ``status_interval`` seconds."""
        report = self.options.status
        if report is None:
            return
        while True:
            await asyncio.sleep(self.options.status_interval)
            report(self._summary(scheduler, machines))

    def _summary(self, scheduler: Scheduler, machines: int) -> str:
        now = asyncio.get_running_loop().time()
        history = self.options.history
        expected_left = None
        if history:
            # Queued work from the history (unknown tests as the median of the
            # known), plus what the running tests are still expected to take.
            known = [d for j in scheduler.pending() if (d := scheduler.expected_duration(j))]
            fallback = statistics.median(known) if known else 0.0
            expected_left = sum(
                scheduler.expected_duration(j) or fallback for j in scheduler.pending()
            )
            for machine_id, job in scheduler.running().items():
                started = self._running_tests.get(machine_id, (None, now))[1]
                expected = scheduler.expected_duration(job) or fallback
                expected_left += max(0.0, expected - (now - started))
        status = RunStatus(
            total=self._total,
            done=self._done,
            failed=self._failed,
            running=dict(self._running_tests),
            durations=self._durations,
            expected_left=expected_left,
            machines=max(1, len(scheduler.machines) or machines),
        )
        return status.summary(now)

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
        jobs = select_jobs(self.rundir, jobs, history, selection, options.resume)
        scheduler = options.scheduler_factory(
            jobs, history=history, max_reruns=options.max_reruns, **options.policy
        )
        if options.resume:
            scheduler.resume(self.rundir.read_results())
        return scheduler

    def _changed(self) -> None:
        """Wake the workers waiting for the scheduler's state to change."""
        event, self._state_changed = self._state_changed, asyncio.Event()
        event.set()

    async def _worker(self, machine: Machine) -> None:
        """Run tests on ``machine`` until the scheduler has none left for it or
        it goes out of use; then release or replace it."""
        provisioner = self._pool.provisioner(machine)
        transport = provisioner.transport(machine)
        executor = Executor(
            transport,
            machine,
            self.rundir,
            base=provisioner.work_dir(machine, self.run_id),
            limits=self.options.limits,
        )
        try:
            done = await self._serve(machine, transport, executor)
        finally:
            self._changed()  # a machine fewer: waiting workers look again
            # Whatever the run's tests and prepare scripts left running on the
            # machine (daemons, setsid sessions) ends with the run.
            with contextlib.suppress(BaseException):
                await asyncio.shield(executor.cleanup(MACHINE_CLEANUP_TIMEOUT))
            with contextlib.suppress(Exception):
                await asyncio.shield(asyncio.wait_for(transport.close(), 10))
        # Not reached when cancelled: the run's clean-up releases what it reserved.
        if done:
            # Nothing is left for it: it goes back now, not when the last test
            # of the long tail ends (unless it was reserved for more runs).
            if machine.id in self._reserved_here or not self.options.keep_machines:
                await asyncio.shield(self._release(machine))
        else:
            self._replace(machine)
            if machine.id in self._reserved_here:
                # A broken machine this run reserved costs money as well.
                await asyncio.shield(self._release(machine))
        self._stop_reserving_if_done()

    async def _serve(self, machine: Machine, transport: Transport, executor: Executor) -> bool:
        """The worker's loop; False when the machine went out of use."""
        scheduler = self._sched
        try:
            await transport.connect()
            if machine.host_key is None and transport.host_key:
                machine.host_key = transport.host_key
                self.recorder.machine_changed(machine)
            await executor.setup(
                self._tree_tar,
                self._remote_tars[machine.platform],
                self._platform_tests(machine.platform),
            )
        except TransportError as exc:
            self._pool.setup_failed()
            self._machine_broken(machine, scheduler, f"setup failed: {exc}")
            return False
        self.recorder.machine_ready(machine)
        previous: Job | None = None
        while True:
            # A connection that dropped between tests (a network blip, a
            # machine rebooted from outside) is re-established here, before
            # a test is taken: a test is never handed to a machine that
            # cannot be reached.
            try:
                await transport.connect()
            except TransportError as exc:
                self._machine_broken(machine, scheduler, f"unreachable: {exc}")
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
            self._stop_reserving_if_done()  # the last queued test may have gone
            executed, setup_failed = await self._run_one(executor, machine, job)
            if setup_failed:
                self._pool.setup_failed()
            outcome = self._outcome(executed, setup_failed)
            if scheduler.wants_check(machine, job, outcome):
                outcome = await self._check(executor, machine, job, outcome)
            decision = scheduler.test_finished(machine, job, outcome)
            self._after(machine, job, decision, executed)
            previous = job
            if not decision.keep_machine:
                self._machine_broken(machine, scheduler, decision.why)
                return False
            self._changed()
        await self._finish(executor, machine)
        return True

    async def _check(
        self, executor: Executor, machine: Machine, job: Job, outcome: Outcome
    ) -> Outcome:
        """The scheduler's outcome plus the machine's health check (a fact)."""
        why = await executor.health_check(job.test, HEALTH_CHECK_TIMEOUT)
        self.recorder.event(
            "machine_checked",
            machine=machine.id,
            test=job.test.name,
            healthy=why is None,
            **({"note": why} if why else {}),
        )
        if why is None:
            self.progress(f"atex-ci: machine {machine.id} is healthy after {job.test.name}")
        else:
            self.progress(f"atex-ci: machine {machine.id} failed its health check: {why}")
        return dataclasses.replace(outcome, healthy=why is None)

    @staticmethod
    def _outcome(executed: TestOutcome, setup_failed: bool) -> Outcome:
        """The facts the scheduler decides on, from what the executor reported."""
        own = standing_result(executed.results)
        return Outcome.from_result(
            own,
            timed_out=own is not None and own.reason is Reason.TIMEOUT,
            setup_failed=setup_failed,
            machine_lost=executed.machine_lost,
            aborted=executed.abort,
        )

    def _after(self, machine: Machine, job: Job, decision: Decision, executed: TestOutcome) -> None:
        """Record what the scheduler decided after ``job``: reruns, an aborted plan."""
        test = job.test
        if executed.abort:
            self.progress(f"atex-ci: {test.name} aborted plan {test.plan}")
            self._not_run(
                list(decision.dropped),
                f"not run: plan {test.plan} was aborted by {test.name} (tmt-abort)",
                Status.SKIP,
            )
        if decision.rerun:
            self._total += 1
            self.recorder.test_requeued(test, job.platform, machine, decision.why)
            self.progress(f"atex-ci: again  {test.name} ({decision.why})")

    async def _run_one(
        self, executor: Executor, machine: Machine, job: Job
    ) -> tuple[TestOutcome, bool]:
        """Run ``job`` on ``machine``; returns the outcome and whether prepare failed."""
        test = job.test
        plan = self._plan(job.platform, test.plan)
        try:
            await executor.prepare_plan(plan)
        except (PhaseError, TransportError) as exc:
            result = Result(
                test=test.name,
                plan=test.plan,
                platform=machine.platform,
                status=Status.ERROR,
                attempt=self.recorder.next_attempt(machine.platform, test),
                machine=machine.id,
                start=now_iso(),
                end=now_iso(),
                duration=0.0,
                note=f"prepare failed on {machine.id}: {exc}",
                reason=Reason.INFRA,
                serial_number=test.serial_number,
            )
            self.recorder.result(result)
            self._record(test, machine, [result])
            return TestOutcome([result]), True
        except StorageError:
            raise
        except Exception as exc:
            attempt = self.recorder.next_attempt(machine.platform, test)
            outcome = self._internal_error(test, machine, attempt, exc, "preparing its plan")
            self._record(test, machine, outcome.results)
            return outcome, False
        self.recorder.test_started(test, machine)
        self._running_tests[machine.id] = (test.name, asyncio.get_running_loop().time())
        if self.options.show_starts:
            self.progress(f"atex-ci: start  {test.name} on {machine.id}")
        attempt = self.recorder.next_attempt(machine.platform, test)
        try:
            outcome = await executor.run_test(
                test, plan, platform=machine.platform, attempt=attempt
            )
        except StorageError:
            raise
        except Exception as exc:
            # The executor turns whatever happens into results; should atex-ci
            # itself fail on this test all the same, that is this test's error.
            outcome = self._internal_error(test, machine, attempt, exc)
        self._record(test, machine, outcome.results)
        return outcome, False

    def _internal_error(
        self, test: Test, machine: Machine, attempt: int, exc: Exception, doing: str = ""
    ) -> TestOutcome:
        """Record an error of ``test`` for a failure of atex-ci on it, while
        ``doing`` something before the test (the traceback goes to
        events.jsonl). The executor ends a test's processes whatever happens
        inside it, so the machine stays in use."""
        self.recorder.event(
            "internal_error",
            test=test.name,
            plan=test.plan,
            traceback="".join(traceback.format_exception(exc)),
        )
        result = Result(
            test=test.name,
            plan=test.plan,
            platform=machine.platform,
            status=Status.ERROR,
            attempt=attempt,
            machine=machine.id,
            start=now_iso(),
            end=now_iso(),
            duration=0.0,
            note=f"internal error in atex-ci{f' {doing}' if doing else ''}: "
            f"{type(exc).__name__}: {exc}",
            reason=Reason.TEST,
            serial_number=test.serial_number,
        )
        self.recorder.result(result)
        return TestOutcome([result])

    def _record(self, test: Test, machine: Machine, results: list[Result]) -> None:
        self.results.extend(results)
        own = standing_result(results)
        self._done += 1
        self._running_tests.pop(machine.id, None)
        if own is not None:
            self._failed += own.status.is_failure
            self._durations.append(own.duration or 0.0)
        self.recorder.test_finished(test, machine, str(own.status) if own else None)
        if own is not None:
            note = f" - {progress_note(own.note)}" if own.note and own.status.is_failure else ""
            self.progress(
                f"atex-ci: {own.status.upper():5} {test.name} on {machine.id} "
                f"({own.duration or 0:.2f}s) [{self._done}/{self._total}]{note}"
            )

    async def _finish(self, executor: Executor, machine: Machine) -> None:
        for plan in self._platform_plans(machine.platform):
            try:
                async with asyncio.timeout(MACHINE_CLEANUP_TIMEOUT):
                    await executor.finish_plan(plan)
            except (PhaseError, TransportError, TimeoutError) as exc:
                self.progress(f"atex-ci: finish of plan {plan.name} failed on {machine.id}: {exc}")
                self.recorder.event(
                    "finish_failed", machine=machine.id, plan=plan.name, note=str(exc)
                )

    def _machine_broken(self, machine: Machine, scheduler: Scheduler, why: str) -> None:
        scheduler.machine_lost(machine)
        self.recorder.machine_broken(machine, why)
        self.progress(f"atex-ci: machine {machine.id} is out of use: {why}")

    def _record_stopped(self, scheduler: Scheduler) -> None:
        """Record the tests a stop of the policy kept from starting (skipped)."""
        dropped = scheduler.not_run()
        for note in dict.fromkeys(note for _, note in dropped):
            jobs = [job for job, why in dropped if why == note]
            self.progress(f"atex-ci: {len(jobs)} test(s) {note}")
            self._not_run(jobs, note, Status.SKIP)

    def _not_run(self, jobs: list[Job], note: str, status: Status) -> None:
        """Record jobs that will not run (no machine left, plan aborted)."""
        for job in jobs:
            test, platform = job.test, job.platform
            result = Result(
                test=test.name,
                plan=test.plan,
                platform=platform,
                status=status,
                attempt=self.recorder.next_attempt(platform, test),
                note=note,
                reason=Reason.INFRA if status is Status.ERROR else None,
                serial_number=test.serial_number,
            )
            self.recorder.result(result)
            self.results.append(result)
            self._done += 1

    async def _release(self, machine: Machine) -> None:
        try:
            provisioner = self._pool.provisioner(machine)
        except ConfigError as exc:
            log.warning("releasing %s: %s", machine.id, exc)
            return
        await release_machine(self.rundir, machine, provisioner)

    async def _release_all(self, machines: list[Machine]) -> None:
        await asyncio.gather(*(self._release(m) for m in machines))


async def release_machine(
    rundir: RunDir, machine: Machine, provisioner: Provisioner | None = None
) -> bool:
    """Release one machine through its provisioner and record it; never raises.

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
        Recorder(rundir).machine_released(machine)
    except (StorageError, ConfigError) as exc:
        log.warning("released %s, but could not record it: %s", machine.id, exc)
    return True


def delete_keys(rundir: RunDir) -> None:
    """Delete the run's private keys (keys/): call it once no machine needs them."""
    keys = rundir.path / "keys"
    if keys.is_dir():
        for key in keys.iterdir():
            with contextlib.suppress(OSError):
                key.unlink()
        with contextlib.suppress(OSError):
            keys.rmdir()


def _first(
    group: BaseExceptionGroup[BaseException], kind: type[StorageError]
) -> StorageError | None:
    for exc in group.exceptions:
        if isinstance(exc, kind):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _first(exc, kind)
            if found is not None:
                return found
    return None


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
    delete_keys(rundir)
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


def _check_one_run(rundir: RunDir, options: RunOptions) -> None:
    """Refuse what would mix two runs or run tests where the user did not
    mean them to (``_set_aside_earlier_run`` then makes room for a restart)."""
    if options.resume and options.restart:
        raise ConfigError("--resume and --restart contradict each other; choose one")
    if rundir.holds_results() and not options.resume and not options.restart:
        state = rundir.read_run().get("state")
        raise ConfigError(
            f"{rundir.path} already holds a run (state {state!r}); add --resume to finish "
            f"it, --restart to start over (its results move to {rundir.path / 'previous'}), "
            "or use another run directory"
        )
    reserve_failed = rundir.read_run().get("state") == RunState.RESERVE_FAILED
    if reserve_failed and not options.sources and options.local_slots is None:
        ready = [m for m in rundir.read_machines() if m.state == MachineState.READY]
        if not ready:
            raise ConfigError(
                f"'atex-ci reserve' failed in {rundir.path}, so it has no machines (see "
                f"{rundir.path / 'events.jsonl'}); reserve again, or give run the machines "
                "to use (--host, --local...)"
            )


def _set_aside_earlier_run(rundir: RunDir, options: RunOptions) -> None:
    """With ``options.restart``, move the earlier run's files to previous/N/
    (called once every check has passed, so a refused run moves nothing)."""
    if options.restart and rundir.holds_results():
        moved = rundir.set_aside_run()
        if options.progress is not None:
            options.progress(f"atex-ci: the earlier run's files are now in {moved}")


def _check_controller_tools(plans: list[Plan]) -> None:
    """Refuse at once what would fail on every machine: a missing ansible-playbook."""
    from .execute.ansible import INSTALL_HINT, ansible_playbook

    for plan in plans:
        for phase in plan.prepare + plan.finish:
            if phase.how == "ansible" and ansible_playbook() is None:
                raise ConfigError(
                    f"plan {plan.name}: phase {phase.name!r} uses 'how: ansible'; {INSTALL_HINT}"
                )


async def run_tests(
    run_dir: str | Path | RunDir,
    fmf_root: str | Path = ".",
    plans: list[str] | tuple[str, ...] = (),
    context: dict[str, str] | None = None,
    options: RunOptions | None = None,
    discovered: list[Plan] | None = None,
    git: GitCache | None = None,
    platform_context: dict[str, dict[str, str]] | None = None,
    on_locked: Callable[[RunDir], None] | None = None,
) -> RunSummary:
    """Discover and run tests on the machines of ``run_dir`` (local slots if none).

    The async entry point of the toolbox; ``atex_ci.run`` wraps it for
    synchronous callers. ``discovered`` skips discovery when the caller has
    already done it with the same arguments; ``git`` is the run's repository
    cache (pass the one discovery used, so no repository is fetched twice).
    ``platform_context`` adds context dimensions for one platform's machines
    (``{"c9s": {"distro": "centos-stream-9"}}``): that platform's tests are
    discovered with ``context`` plus these. beakerlib libraries are fetched
    here. ``on_locked`` is called with the run directory once its lock is
    held, before anything runs (to record what the run reserves from).
    Raises ConfigError (bad input) or InfraError.
    """
    from .discover import discover
    from .libraries import LibraryResolver

    root = Path(fmf_root).resolve()
    git = git or GitCache()
    base = dict(context or {})

    def discover_for(extra: dict[str, str]) -> list[Plan]:
        return discover(root, list(plans), {**base, **extra}, git=git)

    rundir = run_dir if isinstance(run_dir, RunDir) else RunDir.open_or_create(run_dir)
    with rundir.locked():
        _check_one_run(rundir, options or RunOptions())
        if on_locked is not None:
            on_locked(rundir)
        to_run: list[Plan] | dict[str, list[Plan]]
        if platform_context:
            platforms = sorted(
                {m.platform for m in rundir.read_machines() if m.state == MachineState.READY}
            ) or ["default"]
            unknown = sorted(set(platform_context) - set(platforms))
            if unknown:
                raise ConfigError(
                    f"context given for platform(s) {', '.join(unknown)}, but the run's machines"
                    f" are {', '.join(platforms)}; reserve with --platform NAME first"
                )
            to_run = {}
            for platform in platforms:
                extra = platform_context.get(platform, {})
                if not extra and discovered is not None:
                    to_run[platform] = discovered
                else:
                    to_run[platform] = await asyncio.to_thread(discover_for, extra)
            # A platform without context of its own shares the plans of
            # another: each plan once, so its libraries are resolved once.
            unique = {id(plan): plan for found in to_run.values() for plan in found}
            all_plans = list(unique.values())
        else:
            if discovered is None:
                discovered = await asyncio.to_thread(discover_for, {})
            to_run = all_plans = discovered
        _check_controller_tools(all_plans)
        # Libraries are fetched once per run, before any machine is touched.
        await asyncio.to_thread(LibraryResolver(git).resolve_plans, all_plans)
        _set_aside_earlier_run(rundir, options or RunOptions())
        rundir.update_run(
            fmf={
                "root": str(root),
                "plans": list(plans),
                "context": base,
                **({"platform_context": platform_context} if platform_context else {}),
            }
        )
        return await Orchestrator(rundir, root, to_run, options).run()
