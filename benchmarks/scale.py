"""Scale benchmark: the controller's memory and CPU as the machine count grows.

2,000 trivial tests (`true`) run by `atex-ci run --local N` for N = 2, 8 and 64,
side by side in one run. For each N it prints the controller's peak RSS, its
CPU time (user + system, the atex-ci process alone: not the tests) per test,
and the wall time. Goals: peak RSS at most 150 MB at 64 slots, and CPU per
test that does not grow with the number of machines.

    python benchmarks/scale.py [--tests 2000] [--slots 2,8,64]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Runs the CLI in this process and reports its own resource use at exit: the
# tests' processes are children and are not counted.
_MEASURED = """
import atexit, json, os, resource, sys
def report():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with open(os.environ["SCALE_USAGE_FILE"], "w") as f:
        json.dump({"rss_kb": usage.ru_maxrss, "user": usage.ru_utime, "sys": usage.ru_stime}, f)
atexit.register(report)
sys.argv = ["atex-ci", *sys.argv[1:]]
from atex_ci.cli import main
main()
"""


def write_tree(root: Path, tests: int) -> None:
    (root / ".fmf").mkdir(parents=True)
    (root / ".fmf" / "version").write_text("1\n")
    (root / "plan.fmf").write_text(
        json.dumps({"discover": {"how": "fmf"}, "execute": {"how": "tmt"}})
    )
    nodes = {f"/t{n:05}": {"test": "true"} for n in range(tests)}
    (root / "tests.fmf").write_text(json.dumps(nodes))


def measure(tree: Path, work: Path, slots: int, tests: int) -> dict[str, float]:
    usage = work / f"usage-{slots}.json"
    run = work / f"run-{slots}"
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _MEASURED,
            "run",
            "-d",
            str(run),
            "--fmf-root",
            str(tree),
            "--local",
            str(slots),
        ],
        capture_output=True,
        text=True,
        env={"SCALE_USAGE_FILE": str(usage), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
    )
    wall = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"--local {slots}: atex-ci run exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    used = json.loads(usage.read_text())
    return {
        "rss_mb": used["rss_kb"] / 1024,
        "cpu_ms": (used["user"] + used["sys"]) * 1000 / tests,
        "sys_ms": used["sys"] * 1000 / tests,
        "wall": wall,
    }


REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests", type=int, default=2000)
    parser.add_argument("--slots", default="2,8,64")
    args = parser.parse_args()
    counts = [int(n) for n in args.slots.split(",")]
    with tempfile.TemporaryDirectory(prefix="atex-ci-scale-") as scratch:
        work = Path(scratch)
        write_tree(work / "tree", args.tests)
        rows = {n: measure(work / "tree", work, n, args.tests) for n in counts}
    for n, row in rows.items():
        print(
            f"--local {n:3}: peak RSS {row['rss_mb']:6.1f} MB, controller CPU"
            f" {row['cpu_ms']:5.2f} ms per test ({row['sys_ms']:5.2f} of it system),"
            f" wall {row['wall']:6.1f} s"
        )
    first, last = rows[counts[0]], rows[counts[-1]]
    print(
        f"cpu/test {counts[-1]} vs {counts[0]} machines: {last['cpu_ms'] / first['cpu_ms']:.2f}x;"
        f" peak RSS at {counts[-1]}: {last['rss_mb']:.0f} MB"
    )


if __name__ == "__main__":
    main()
