"""A runner of your own in about 50 lines, built from the atex-ci toolbox.

The shape of a contest runner: every test of an fmf tree on N local slots, where
- a failed test runs once more, on a fresh machine (the one it failed on is thrown
  away, and the run reserves a replacement);
- a test tagged `destructive` throws its machine away after it runs;
- tests tagged `slow` start first (the order the tests ran in shows it).
It writes a complete run directory (machines, tests, results, events), so
`atex-ci report`, `atex-ci release` and `atex-ci run --resume` accept it, plus
JUnit XML and a Markdown summary. Usage: python custom_runner.py FMF_ROOT RUN_DIR [N]
"""

import asyncio
import sys
from pathlib import Path

from atex_ci.report.reporting import report_run
from atex_ci.runner import RunOptions, run_tests
from atex_ci.schedule import Scheduler


def tags(job):
    return job.test.data.get("tag") or []


class ContestPolicy(Scheduler):
    """A policy is a subclass: each hook is one decision."""

    def order(self, jobs):
        slow = [job for job in jobs if "slow" in tags(job)]
        return slow + [job for job in jobs if "slow" not in tags(job)]

    def keep_machine(self, machine, job, outcome):
        if "destructive" in tags(job):
            return False, f"{job.test.name} is destructive"
        if outcome.failed and job.reruns < self.max_reruns:
            return False, f"{job.test.name} failed: its rerun gets a fresh machine"
        return super().keep_machine(machine, job, outcome)


def progress(line):
    print(line, file=sys.stderr, flush=True)


async def main(fmf_root: Path, run_dir: Path, slots: int) -> int:
    options = RunOptions(
        local_slots=slots,  # no machines reserved: the run reserves and releases them
        scheduler_factory=ContestPolicy,
        max_reruns=1,
        progress=progress,
    )
    summary = await run_tests(run_dir, fmf_root, options=options)
    report_run(run_dir)  # RUN/junit.xml and RUN/summary.md
    return summary.exit_code


if __name__ == "__main__":
    slots = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    sys.exit(asyncio.run(main(Path(sys.argv[1]).resolve(), Path(sys.argv[2]), slots)))
