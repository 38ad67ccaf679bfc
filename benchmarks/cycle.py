"""CPU of one CI cycle: ``reserve`` + ``run`` + ``release`` against one ``run`` process.

Starts 4 real sshd test hosts (tests/hosts.py; needs root and openssh-server),
then, in the same run and on the same hosts, alternating rounds:

  (a) the cycle: ``atex-ci reserve --host x4``, ``atex-ci run`` (one trivial
      test) and ``atex-ci release``, three processes on one run directory;
  (b) one process: ``atex-ci run --host x4`` (reserves, runs the same test,
      releases).

Each command's CPU is the user + system time of the child process and of
everything it started (``resource.getrusage(RUSAGE_CHILDREN)`` before and
after), medians over the rounds. A cycle pays the interpreter start and the
imports three times; the goal is that it costs at most 1.5x the one process.
atex-ci's bytecode is compiled first, as installing the wheel does: from a
source tree under PYTHONDONTWRITEBYTECODE every command would compile its
modules again (40-75 ms each), which no installation pays.
The last line is machine-readable:

    reserve_ms=A run_ms=B release_ms=C cycle_ms=D single_ms=E ratio=F

    python benchmarks/cycle.py [--rounds N] [--hosts N]
"""

from __future__ import annotations

import argparse
import compileall
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.hosts import HostPool, SSHHost, missing_requirements  # noqa: E402

GOAL_RATIO = 1.5
ATEX_CI = [sys.executable, "-m", "atex_ci"]


def child_cpu(args: list[str]) -> float:
    """CPU seconds (user + system) of ``args`` run to completion, and of its children."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    # Not from the repository: the children import the installed atex-ci.
    proc = subprocess.run(
        args, capture_output=True, text=True, check=False, cwd=tempfile.gettempdir()
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def make_tree(root: Path) -> None:
    (root / ".fmf").mkdir(parents=True)
    (root / ".fmf" / "version").write_text("1\n")
    (root / "plan.fmf").write_text("discover:\n  how: fmf\nexecute:\n  how: tmt\n")
    (root / "test.fmf").write_text('test: "true"\n')


def host_args(hosts: list[SSHHost]) -> list[str]:
    args = ["--key", str(hosts[0].key_path)]
    for host in hosts:
        args += ["--host", f"root@{host.address}"]
    return args


def cycle(tree: Path, run: Path, hosts: list[SSHHost]) -> tuple[float, float, float]:
    """CPU seconds of reserve, run and release on a fresh run directory."""
    reserve = child_cpu([*ATEX_CI, "reserve", "-d", str(run), *host_args(hosts)])
    ran = child_cpu([*ATEX_CI, "run", "-d", str(run), "--fmf-root", str(tree)])
    release = child_cpu([*ATEX_CI, "release", "-d", str(run)])
    return reserve, ran, release


def single(tree: Path, run: Path, hosts: list[SSHHost]) -> float:
    """CPU seconds of one ``run --host x4`` on a fresh run directory."""
    return child_cpu([*ATEX_CI, "run", "-d", str(run), "--fmf-root", str(tree), *host_args(hosts)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--hosts", type=int, default=4)
    args = parser.parse_args()
    missing = missing_requirements()
    if missing:
        print(f"skipped: {missing}", file=sys.stderr)
        return 0
    compileall.compile_dir(REPO / "atex_ci", quiet=1)
    work = Path(tempfile.mkdtemp(prefix="atex-ci-cycle-"))
    pool = HostPool()
    try:
        hosts = pool.start(args.hosts)
        tree = work / "tree"
        make_tree(tree)
        # One untimed round of each: the page cache and the hosts warm up.
        cycle(tree, work / "warm-cycle", hosts)
        single(tree, work / "warm-single", hosts)
        parts: list[tuple[float, float, float]] = []
        singles: list[float] = []
        for n in range(args.rounds):
            parts.append(cycle(tree, work / f"cycle-{n}", hosts))
            singles.append(single(tree, work / f"single-{n}", hosts))
    finally:
        pool.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    reserve, ran, release = (statistics.median(p[i] for p in parts) for i in range(3))
    cycle_cpu = statistics.median(sum(p) for p in parts)
    single_cpu = statistics.median(singles)
    ratio = cycle_cpu / single_cpu
    print(f"hosts: {args.hosts}, rounds: {args.rounds} (medians, CPU of the child processes)")
    print(f"  reserve --host x{args.hosts}: {reserve * 1000:7.0f} ms")
    print(f"  run (1 test):          {ran * 1000:7.0f} ms")
    print(f"  release:               {release * 1000:7.0f} ms")
    print(f"  cycle (three commands): {cycle_cpu * 1000:6.0f} ms")
    print(f"  one run --host x{args.hosts}:     {single_cpu * 1000:6.0f} ms")
    verdict = "met" if ratio <= GOAL_RATIO else "NOT met"
    print(f"  ratio {ratio:.2f}x (goal <= {GOAL_RATIO}x: {verdict})")
    print(
        f"reserve_ms={reserve * 1000:.0f} run_ms={ran * 1000:.0f} "
        f"release_ms={release * 1000:.0f} cycle_ms={cycle_cpu * 1000:.0f} "
        f"single_ms={single_cpu * 1000:.0f} ratio={ratio:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
