"""A runner built from the parts (no Orchestrator): every test of an fmf tree on N local slots.

Provisioner and MachinePool give the machines, the Scheduler picks each machine's next
test, PlanPhases and Executor run it, and every event goes to the Recorder (a run
directory that `atex-ci report` accepts) and to a JSON-lines sink of our own.
Usage: python kit_runner.py FMF_ROOT RUN_DIR EVENTS_JSONL [N]
"""

import asyncio
import sys
from pathlib import Path

from jsonl_sink import JsonLinesSink

from atex_ci.discover import discover
from atex_ci.events import EventStream, RunFinished, RunStarted, TestFinished, TestStarted
from atex_ci.execute.executor import Executor
from atex_ci.execute.phases import PlanPhases
from atex_ci.execute.staging import build_remote_tar, build_tree_tar
from atex_ci.model import RunState
from atex_ci.pool import MachinePool
from atex_ci.provision.local import LocalProvisioner
from atex_ci.recorder import Recorder, exit_code, standing_result
from atex_ci.rundir import RunDir
from atex_ci.schedule import Job, Next, Outcome, Scheduler


async def run(root: Path, rundir: RunDir, sink: JsonLinesSink, slots: int) -> int:
    recorder, run_id, plans = Recorder(rundir), rundir.read_run()["id"], discover(root, [], {})
    stream = EventStream([recorder, sink])  # the Recorder first: the run directory's writer
    tests = [test for plan in plans for test in plan.tests]
    scheduler, changed = Scheduler([Job("default", test) for test in tests]), asyncio.Condition()
    pool = MachinePool(rundir, emit=stream)
    stream(RunStarted(["default"], {"default": plans}, total=len(tests)))
    tree_tar, remote_tar = build_tree_tar(root, {}), build_remote_tar(tests)

    async def worker(machine):
        provisioner = pool.provisioner(machine)
        transport = provisioner.transport(machine)
        base = provisioner.work_dir(machine, run_id)
        executor = Executor(
            transport, machine, base=base, artifacts=recorder.artifacts, sink=stream, run_id=run_id
        )
        phases = PlanPhases(transport, machine, executor.work, key_root=rundir.path)
        await transport.connect()
        await executor.setup(tree_tar, remote_tar, tests)
        previous = None
        while (job := scheduler.next_test(machine, previous)) is not Next.DONE:
            if job is Next.WAIT:  # a rerun may come: wait for the next change
                async with changed:
                    await changed.wait()
                continue
            plan = next(plan for plan in plans if plan.name == job.test.plan)
            await phases.prepare(plan)
            attempt = recorder.next_attempt(job.platform, job.test)
            stream(TestStarted(job.test, job.platform, machine, attempt))
            outcome = await executor.run_test(
                job.test, plan, platform=job.platform, attempt=attempt
            )
            own = standing_result(outcome.results)
            stream(TestFinished(job.test, job.platform, machine, own, outcome.results))
            scheduler.test_finished(machine, job, Outcome.from_result(own))
            previous = job
            async with changed:
                changed.notify_all()
        for plan in plans:
            await phases.finish(plan)
        await executor.cleanup(60)
        await transport.close()
        await pool.done_with(machine, finished=True)

    def start(machine):
        scheduler.add_machine(machine)
        tg.create_task(worker(machine))

    try:
        async with asyncio.TaskGroup() as tg:
            sources = [(LocalProvisioner(rundir), slots)]
            pool.begin(tg, scheduler, ["default"], [], sources, start, lambda: None)
    finally:
        await pool.release_reserved()
    stream(RunFinished(RunState.FINISHED))
    return exit_code(recorder.final())


if __name__ == "__main__":
    rundir, sink = RunDir.open_or_create(sys.argv[2]), JsonLinesSink(sys.argv[3])
    slots = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    with rundir.locked():
        code = asyncio.run(run(Path(sys.argv[1]).resolve(), rundir, sink, slots))
    sink.close()
    sys.exit(code)
