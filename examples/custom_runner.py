"""A runner of your own in about 50 lines, built from the atex-ci toolbox.

Runs every test of an fmf tree on N local slots, longest `duration` first,
and writes JUnit XML. Usage: python custom_runner.py FMF_ROOT RUN_DIR [N]
"""

import asyncio
import sys
from pathlib import Path

from atex_ci.discover import discover
from atex_ci.execute.executor import Executor
from atex_ci.execute.staging import build_remote_tar, build_tree_tar
from atex_ci.provision.local import LocalProvisioner
from atex_ci.report.junit import write_junit
from atex_ci.rundir import RunDir
from atex_ci.schedule import Scheduler


class LongestFirst(Scheduler):
    """A custom policy is a subclass: here, longest declared duration first."""

    def order(self, tests):
        return sorted(tests, key=lambda t: -t.duration)


async def main(fmf_root: Path, run_dir: Path, slots: int) -> int:
    plans = {p.name: p for p in discover(fmf_root)}
    rundir = RunDir.open_or_create(run_dir)
    provisioner = LocalProvisioner(rundir)
    scheduler = LongestFirst(t for p in plans.values() for t in p.tests)
    tree, remote = build_tree_tar(fmf_root), build_remote_tar()

    async def worker(machine):
        scheduler.add_machine(machine.id)
        async with provisioner.transport(machine) as transport:
            executor = Executor(transport, machine, rundir, base=provisioner.work_dir(machine, "x"))
            await executor.setup(tree, remote)
            while (test := scheduler.next_test(machine.id)) is not None:
                outcome = await executor.run_test(test, plans[test.plan], platform="local")
                print(outcome.results[-1].status, test.name, file=sys.stderr)
                scheduler.test_finished(machine.id, test, machine_ok=outcome.machine_ok)

    try:
        async with asyncio.TaskGroup() as tg:
            async for machine in provisioner.reserve(slots):  # each one as soon as it is ready
                tg.create_task(worker(machine))
    finally:
        await provisioner.release_all()
    results = rundir.read_results()
    write_junit(results, run_dir / "junit.xml", rundir_path=run_dir)
    return 1 if any(r.status.is_failure for r in results) else 0


if __name__ == "__main__":
    slots = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    sys.exit(asyncio.run(main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]), slots)))
