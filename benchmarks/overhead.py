"""Per-test overhead over SSH: atex-ci's orchestrator against a bare asyncssh loop.

Starts 4 real sshd test hosts (tests/hosts.py; needs root and openssh-server),
then, in the same run and on the same hosts:

  (a) baseline: one asyncssh connection per host and ``conn.run("true")`` in a
      loop on each, N commands in all;
  (b) atex-ci: N trivial fmf tests (``test: "true"``) run by the Orchestrator
      on the same 4 hosts (static machines), in this process.

It prints the orchestrator's CPU time per test (this process and any children
it started, from os.times) and the wall time per test of both. Goals: at most
5 ms of orchestrator CPU per test, and wall time per test at most 2x the bare
loop's. The last line is machine-readable:

    cpu_ms_per_test=X wall_ms_per_test=Y baseline_wall_ms=Z

    python benchmarks/overhead.py [--tests N] [--hosts N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from atex_ci.discover import discover  # noqa: E402
from atex_ci.model import Machine  # noqa: E402
from atex_ci.orchestrator import Orchestrator  # noqa: E402
from atex_ci.run_options import RunOptions  # noqa: E402
from atex_ci.rundir import RunDir  # noqa: E402
from tests.hosts import HostPool, SSHHost, missing_requirements  # noqa: E402

RUNS = Path(__file__).resolve().parent / ".runs"
GOAL_CPU_MS = 5.0
GOAL_WALL_RATIO = 2.0


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


async def baseline(hosts: list[SSHHost], count: int) -> tuple[float, float]:
    """(wall, CPU seconds) for ``count`` runs of ``true``, over one connection per host."""
    import asyncssh

    conns = [
        await asyncssh.connect(
            h.address, username="root", client_keys=[str(h.key_path)], known_hosts=None
        )
        for h in hosts
    ]
    per_host = count // len(hosts)
    try:

        async def loop(conn: asyncssh.SSHClientConnection) -> None:
            for _ in range(per_host):
                await conn.run("true", check=True)

        cpu = _cpu()
        start = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for conn in conns:
                tg.create_task(loop(conn))
        return time.perf_counter() - start, _cpu() - cpu
    finally:
        for conn in conns:
            conn.close()
            await conn.wait_closed()


def make_tree(root: Path, count: int) -> None:
    """An fmf tree at ``root``: one plan and ``count`` tests that run ``true``."""
    (root / ".fmf").mkdir(parents=True)
    (root / ".fmf" / "version").write_text("1\n")
    (root / "plan.fmf").write_text("discover:\n    how: fmf\nexecute:\n    how: tmt\n")
    lines = [f'/t{n:04d}:\n    test: "true"\n' for n in range(count)]
    (root / "tests.fmf").write_text("".join(lines))


@contextlib.contextmanager
def hosts_and_tree(hosts: int, tests: int) -> Iterator[tuple[list[SSHHost], Path]]:
    """``hosts`` running sshd test hosts and a scratch directory holding
    ``tree`` (``tests`` trivial tests, see make_tree); all gone afterwards."""
    pool = HostPool()
    try:
        started = pool.start(hosts)
        # The run directories go next to the benchmark rather than in /tmp,
        # where directory creation was seen to cost ~2 ms on this machine kind.
        RUNS.mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(dir=RUNS) as tmp:
            make_tree(Path(tmp) / "tree", tests)
            yield started, Path(tmp)
    finally:
        pool.stop_all()


async def atex_run(hosts: list[SSHHost], root: Path, run_dir: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of the orchestrator running every test of ``root``."""
    plans = discover(root)
    rundir = RunDir.create(run_dir)
    rundir.write_machines(
        [
            Machine(
                id=f"host-{h.address}",
                provisioner="static",
                host=h.address,
                user="root",
                key=str(h.key_path),
                host_key=h.host_key,
            )
            for h in hosts
        ]
    )
    orchestrator = Orchestrator(rundir, root, plans, RunOptions())
    cpu = _cpu()
    start = time.perf_counter()
    summary = await orchestrator.run()
    wall = time.perf_counter() - start
    cpu = _cpu() - cpu
    bad = [r for r in summary.results if r.status.is_failure]
    if bad:
        raise SystemExit(f"{len(bad)} tests did not pass, e.g. {bad[0].test}: {bad[0].note}")
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tests", type=int, default=400)
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians")
    args = parser.parse_args()
    reason = missing_requirements()
    if reason:
        raise SystemExit(f"cannot start test hosts: {reason}")
    base_walls: list[float] = []
    base_cpus: list[float] = []
    walls: list[float] = []
    cpus: list[float] = []
    with hosts_and_tree(args.hosts, args.tests) as (hosts, tmp):
        # Alternate the two, so a noisy neighbour hurts both alike.
        for n in range(args.rounds):
            base_wall, base_cpu = asyncio.run(baseline(hosts, args.tests))
            base_walls.append(base_wall)
            base_cpus.append(base_cpu)
            wall, cpu = asyncio.run(atex_run(hosts, tmp / "tree", tmp / f"run{n}"))
            walls.append(wall)
            cpus.append(cpu)
    n = args.tests
    base_wall = statistics.median(base_walls)
    wall = statistics.median(walls)
    cpu = statistics.median(cpus)
    cpu_ms = cpu / n * 1000
    wall_ms = wall / n * 1000
    base_ms = base_wall / n * 1000
    print(f"tests: {n} on {args.hosts} hosts, median of {args.rounds} alternating rounds")
    base_cpu_ms = statistics.median(base_cpus) / n * 1000
    print(
        f"bare asyncssh run('true'): {base_wall:.2f} s wall, {base_ms:.2f} ms per command, "
        f"{base_cpu_ms:.2f} ms CPU per command"
    )
    print(
        f"atex-ci orchestrator:      {wall:.2f} s wall, {wall_ms:.2f} ms per test, "
        f"{cpu_ms:.2f} ms CPU per test (connect, upload and release included)"
    )
    print(f"wall ratio atex-ci / bare: {wall_ms / base_ms:.2f} (goal <= {GOAL_WALL_RATIO})")
    print(f"CPU per test: {cpu_ms:.2f} ms (goal <= {GOAL_CPU_MS})")
    print(
        f"cpu_ms_per_test={cpu_ms:.2f} wall_ms_per_test={wall_ms:.2f} "
        f"baseline_wall_ms={base_ms:.2f}"
    )


if __name__ == "__main__":
    main()
