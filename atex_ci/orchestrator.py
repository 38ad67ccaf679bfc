"""The async driver: one worker per machine, each asking the scheduler for its
next test whenever it is free, running it through an Executor, and recording
what happened. Reservation of local slots when none are reserved, machine
loss, interruption and clean-up live here; policy lives in ``schedule.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError, InfraError
from .execute.executor import Executor, Limits, PhaseError, TestOutcome
from .execute.staging import build_remote_tar, build_tree_tar
from .model import Machine, MachineState, Plan, Reason, Result, Status, Test
from .provision import get_provisioner
from .provision.local import LocalProvisioner, default_slots
from .remote_tree import GitCache
from .report.summary import final_results
from .report.text import progress_note, stderr_line
from .rundir import RunDir, now_iso
from .schedule import MachineAction, Scheduler
from .transport.base import TransportError

log = logging.getLogger("atex_ci")

#: Bound on per-machine clean-up (finish phases, closing the connection).
CLEANUP_TIMEOUT = 60.0


@dataclass
class RunOptions:
    limits: Limits = field(default_factory=Limits)
    #: Local slots to reserve when the run directory has no machines.
    local_slots: int | None = None
    #: Skip tests that already have a final result in results.jsonl.
    resume: bool = False
    #: Called with one human-readable progress line per test start/finish.
    progress: Callable[[str], None] | None = None
    scheduler_factory: Callable[[list[Test]], Scheduler] = Scheduler


@dataclass
class RunSummary:
    """What a run did (``results``: this invocation's) and what the run
    directory now says about the selected tests (``final``: the last attempt of
    each, including earlier invocations', e.g. before ``--resume``)."""

    results: list[Result]
    final: list[Result] = field(default_factory=list)
    interrupted: bool = False
    infra_failure: bool = False

    @property
    def exit_code(self) -> int:
        """0 all passed, 1 test failures, 3 infrastructure errors, 130 interrupted."""
        if self.interrupted:
            return 130
        final = self.final or self.results
        if self.infra_failure or any(r.reason == Reason.INFRA for r in final):
            return 3
        if any(r.status.is_failure for r in final):
            return 1
        return 0


def stderr_progress(line: str) -> None:
    """Progress printer for the CLI: one line on stderr, flushed, escaped and capped."""
    print(stderr_line(line), file=sys.stderr, flush=True)


class Orchestrator:
    """Runs the discovered plans on the run directory's machines."""

    def __init__(
        self, rundir: RunDir, fmf_root: Path, plans: list[Plan], options: RunOptions | None = None
    ) -> None:
        self.rundir = rundir
        self.fmf_root = fmf_root
        self.plans = {p.name: p for p in plans}
        self.plan_list = plans
        self.options = options or RunOptions()
        self.progress = self.options.progress or (lambda line: None)
        self.results: list[Result] = []
        self.run_id = rundir.read_run()["id"]
        self._done = 0
        self._total = 0
        self._all_tests = [t for plan in plans for t in plan.tests]
        self._infra_failure = False
        # A test run again in the same run directory gets the next attempt
        # number; reporters keep the last attempt.
        # Each selected instance of a test (tmt's serial number) counts its own.
        self._attempts: dict[tuple[str, str, str, int | None], int] = {}
        for r in rundir.read_results():
            key = (r.platform, r.plan, r.test, r.serial_number)
            self._attempts[key] = max(self._attempts.get(key, 0), r.attempt)

    async def run(self) -> RunSummary:
        rundir = self.rundir
        machines = [m for m in rundir.read_machines() if m.state != MachineState.RELEASED]
        auto = False
        if not machines:
            slots = LocalProvisioner(rundir).reserve(self.options.local_slots or default_slots())
            machines = [m async for m in slots]
            rundir.write_machines(rundir.read_machines() + machines)
            for m in machines:
                rundir.append_event("machine_reserved", machine=m.id, provisioner=m.provisioner)
            auto = True
        usable = [m for m in machines if m.state != MachineState.BROKEN]
        if not usable:
            raise InfraError(
                f"every machine in {rundir.path / 'machines.json'} is broken; "
                "reserve new ones with 'atex-ci reserve'"
            )
        platforms = sorted({m.platform for m in usable})
        rundir.write_tests({p: self.plan_list for p in platforms})
        rundir.update_run(state="running", platforms=platforms)
        schedulers = {p: self.options.scheduler_factory(self._todo(p)) for p in platforms}
        self._total = sum(len(s.pending()) for s in schedulers.values())
        state = "crashed"  # unless we get to say otherwise
        try:
            tree_tar, remote_tar = await asyncio.to_thread(self._tars)
            async with asyncio.TaskGroup() as tg:
                for machine in usable:
                    scheduler = schedulers[machine.platform]
                    scheduler.add_machine(machine.id)
                    tg.create_task(self._worker(machine, scheduler, tree_tar, remote_tar))
            for platform, scheduler in schedulers.items():
                self._not_run(
                    platform,
                    scheduler.drain(),
                    f"not run: no usable machine left for platform {platform}",
                    Status.ERROR,
                )
            state = "finished"
        except asyncio.CancelledError:
            state = "interrupted"
            raise
        finally:
            if auto:
                await asyncio.shield(self._release_all(machines))
            rundir.update_run(state=state)
        return RunSummary(
            self.results, final=self._final(platforms), infra_failure=self._infra_failure
        )

    def _final(self, platforms: list[str]) -> list[Result]:
        """The last attempt of every selected test on these platforms, from the run directory."""
        selected = {(t.plan, t.name) for t in self._all_tests}
        return [
            r
            for r in final_results(self.rundir.read_results())
            if r.platform in platforms and (r.plan, r.test) in selected
        ]

    def _tars(self) -> tuple[bytes, bytes]:
        extras = {path: local for plan in self.plan_list for path, local in plan.trees.items()}
        return build_tree_tar(self.fmf_root, extras), build_remote_tar(self._all_tests)

    def _todo(self, platform: str) -> list[Test]:
        tests = self._all_tests
        if not self.options.resume:
            return list(tests)
        done = {
            (r.plan, r.test, r.serial_number)
            for r in final_results(self.rundir.read_results())
            if r.platform == platform and r.name is None and r.reason != Reason.INTERRUPTED
        }
        # A result from before instances were told apart (no serial number)
        # stands for every instance of its test.
        return [
            t
            for t in tests
            if (t.plan, t.name, t.serial_number) not in done and (t.plan, t.name, None) not in done
        ]

    async def _worker(
        self, machine: Machine, scheduler: Scheduler, tree_tar: bytes, remote_tar: bytes
    ) -> None:
        provisioner = get_provisioner(machine.provisioner, self.rundir)
        transport = provisioner.transport(machine)
        executor = Executor(
            transport,
            machine,
            self.rundir,
            base=provisioner.work_dir(machine, self.run_id),
            limits=self.options.limits,
        )
        try:
            try:
                await transport.connect()
                if machine.host_key is None and transport.host_key:
                    machine.host_key = transport.host_key
                    self.rundir.update_machine(machine)
                await executor.setup(tree_tar, remote_tar, self._all_tests)
            except TransportError as exc:
                self._machine_broken(machine, scheduler, f"setup failed: {exc}")
                return
            self.rundir.append_event("machine_ready", machine=machine.id)
            while True:
                # A connection that dropped between tests (a network blip, a
                # machine rebooted from outside) is re-established here, before
                # a test is taken: a test is never handed to a machine that
                # cannot be reached.
                try:
                    await transport.connect()
                except TransportError as exc:
                    self._machine_broken(machine, scheduler, f"unreachable: {exc}")
                    return
                test = scheduler.next_test(machine.id)
                if test is None:
                    break
                outcome = await self._run_one(executor, machine, test)
                if outcome.abort:
                    self.progress(f"atex-ci: {test.name} aborted plan {test.plan}")
                    self._not_run(
                        machine.platform,
                        scheduler.abort_plan(test.plan),
                        f"not run: plan {test.plan} was aborted by {test.name} (tmt-abort)",
                        Status.SKIP,
                    )
                action = scheduler.test_finished(machine.id, test, machine_ok=outcome.machine_ok)
                if action is MachineAction.DISCARD:
                    self._machine_broken(machine, scheduler, "discarded after a failed test")
                    return
            await self._finish(executor, machine)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(asyncio.wait_for(transport.close(), 10))

    async def _run_one(self, executor: Executor, machine: Machine, test: Test) -> TestOutcome:
        plan = self.plans[test.plan]
        try:
            await executor.prepare_plan(plan)
        except (PhaseError, TransportError) as exc:
            result = Result(
                test=test.name,
                plan=test.plan,
                platform=machine.platform,
                status=Status.ERROR,
                attempt=self._next_attempt(machine.platform, test),
                machine=machine.id,
                start=now_iso(),
                end=now_iso(),
                duration=0.0,
                note=f"prepare failed on {machine.id}: {exc}",
                reason=Reason.INFRA,
                serial_number=test.serial_number,
            )
            self.rundir.append_result(result)
            self._record(test, machine, [result])
            return TestOutcome([result], machine_ok=False)
        self.rundir.append_event("test_started", test=test.name, plan=test.plan, machine=machine.id)
        self.progress(f"atex-ci: start  {test.name} on {machine.id}")
        attempt = self._next_attempt(machine.platform, test)
        outcome = await executor.run_test(test, plan, platform=machine.platform, attempt=attempt)
        self._record(test, machine, outcome.results)
        return outcome

    def _next_attempt(self, platform: str, test: Test) -> int:
        key = (platform, test.plan, test.name, test.serial_number)
        self._attempts[key] = self._attempts.get(key, 0) + 1
        return self._attempts[key]

    def _record(self, test: Test, machine: Machine, results: list[Result]) -> None:
        self.results.extend(results)
        own = next((r for r in results if r.name is None), None)
        self._done += 1
        self.rundir.append_event(
            "test_finished",
            test=test.name,
            plan=test.plan,
            machine=machine.id,
            status=str(own.status) if own else None,
        )
        if own is not None:
            note = f" - {progress_note(own.note)}" if own.note and own.status.is_failure else ""
            self.progress(
                f"atex-ci: {own.status.upper():5} {test.name} on {machine.id} "
                f"({own.duration or 0:.2f}s) [{self._done}/{self._total}]{note}"
            )

    async def _finish(self, executor: Executor, machine: Machine) -> None:
        for plan in self.plan_list:
            try:
                async with asyncio.timeout(CLEANUP_TIMEOUT):
                    await executor.finish_plan(plan)
            except (PhaseError, TransportError, TimeoutError) as exc:
                self.progress(f"atex-ci: finish of plan {plan.name} failed on {machine.id}: {exc}")
                self.rundir.append_event(
                    "finish_failed", machine=machine.id, plan=plan.name, note=str(exc)
                )

    def _machine_broken(self, machine: Machine, scheduler: Scheduler, why: str) -> None:
        scheduler.remove_machine(machine.id)
        machine.state = MachineState.BROKEN
        self.rundir.update_machine(machine)
        self.rundir.append_event("machine_broken", machine=machine.id, note=why)
        self.progress(f"atex-ci: machine {machine.id} is out of use: {why}")

    def _not_run(self, platform: str, tests: list[Test], note: str, status: Status) -> None:
        """Record tests that will not run (no machine left, plan aborted)."""
        if tests and status is Status.ERROR:
            self._infra_failure = True
        for test in tests:
            result = Result(
                test=test.name,
                plan=test.plan,
                platform=platform,
                status=status,
                attempt=self._next_attempt(platform, test),
                note=note,
                reason=Reason.INFRA if status is Status.ERROR else None,
                serial_number=test.serial_number,
            )
            self.rundir.append_result(result)
            self.results.append(result)
            self._done += 1

    async def _release_all(self, machines: list[Machine]) -> None:
        for machine in machines:
            await release_machine(self.rundir, machine)


async def release_machine(rundir: RunDir, machine: Machine) -> bool:
    """Release one machine through its provisioner and record it; never raises.

    Returns False (and logs why) when the machine may still be held, e.g. a
    Testing Farm request that could not be cancelled: it stays unreleased in
    machines.json so that the next ``release`` tries again.
    """
    if machine.state == MachineState.RELEASED:
        return True
    try:
        provisioner = get_provisioner(machine.provisioner, rundir)
        await provisioner.release(machine)
    except (ConfigError, OSError, InfraError) as exc:
        log.warning("releasing %s: %s", machine.id, exc)
        return False
    rundir.update_machine(machine)
    rundir.append_event("machine_released", machine=machine.id)
    return True


async def release_all(rundir: RunDir) -> list[Machine]:
    """Release every machine of the run and delete the run's private keys.

    Raises InfraError naming the machines that may still be held (after
    releasing every other one and deleting the keys).
    """
    machines = rundir.read_machines()
    released = await asyncio.gather(*(release_machine(rundir, m) for m in machines))
    keys = rundir.path / "keys"
    if keys.is_dir():
        for key in keys.iterdir():
            with contextlib.suppress(OSError):
                key.unlink()
        with contextlib.suppress(OSError):
            keys.rmdir()
    held = [m.id for m, ok in zip(machines, released, strict=True) if not ok]
    if held:
        raise InfraError(
            f"could not release {', '.join(held)} (see the warnings above); "
            "run 'atex-ci release' again"
        )
    return machines


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
    run_dir: str | Path,
    fmf_root: str | Path = ".",
    plans: list[str] | tuple[str, ...] = (),
    context: dict[str, str] | None = None,
    options: RunOptions | None = None,
    discovered: list[Plan] | None = None,
    git: GitCache | None = None,
) -> RunSummary:
    """Discover and run tests on the machines of ``run_dir`` (local slots if none).

    The async entry point of the toolbox; ``atex_ci.run`` wraps it for
    synchronous callers. ``discovered`` skips discovery when the caller has
    already done it with the same arguments; ``git`` is the run's repository
    cache (pass the one discovery used, so no repository is fetched twice).
    beakerlib libraries are fetched here. Raises ConfigError (bad input)
    or InfraError.
    """
    from .discover import discover
    from .libraries import LibraryResolver

    root = Path(fmf_root).resolve()
    git = git or GitCache()
    if discovered is None:
        discovered = await asyncio.to_thread(discover, root, list(plans), context or {}, git=git)
    _check_controller_tools(discovered)
    # Libraries are fetched once per run, before any machine is touched.
    await asyncio.to_thread(LibraryResolver(git).resolve_plans, discovered)
    rundir = RunDir.open_or_create(run_dir)
    with rundir.locked():
        rundir.update_run(fmf={"root": str(root), "plans": list(plans), "context": context or {}})
        return await Orchestrator(rundir, root, discovered, options).run()
