"""Discovery speed: atex-ci's whole discovery process against plain fmf tree loading.

Generates a tree of 500 tests (25 directories of 20, with inheritance and an
``adjust`` rule) and one plan in a temporary directory, then times, alternately
in the same run, two fresh interpreters each including their start-up:

  (a) ``python -m atex_ci.discover ROOT -c distro=fedora-41`` (prints the names)
  (b) ``python -c "import fmf; fmf.Tree(ROOT)"``

and prints the medians and their ratio. Goal: (a) under 1 s and within 2x of (b).

    python benchmarks/discovery.py [--repeat N] [--tests N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GOAL_SECONDS = 1.0
GOAL_RATIO = 2.0
TESTS_PER_DIRECTORY = 20


def make_tree(root: Path, tests: int) -> None:
    """Write an fmf tree with ``tests`` tests and one plan under ``root``."""
    (root / ".fmf").mkdir(parents=True)
    (root / ".fmf" / "version").write_text("1\n")
    (root / "plan.fmf").write_text("discover:\n    how: fmf\nexecute:\n    how: tmt\n")
    for index in range(tests):
        directory = root / "tests" / f"area{index // TESTS_PER_DIRECTORY:03d}"
        if not directory.exists():
            directory.mkdir(parents=True)
            (directory / "main.fmf").write_text(
                "tag: [bench]\nduration: 10m\n"
                "adjust:\n  - when: distro == fedora-41\n    environment+:\n        F41: '1'\n"
            )
        (directory / f"test{index:04d}.fmf").write_text(
            f"summary: benchmark test {index}\ntest: ./run.sh {index}\n"
            f"require: [bash]\ntier: {index % 3}\n"
        )


def time_command(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env, cwd=REPO)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--tests", type=int, default=500)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory(prefix="atex-ci-bench-") as tmp:
        root = Path(tmp) / "tree"
        make_tree(root, args.tests)
        ours = [sys.executable, "-m", "atex_ci.discover", str(root), "-c", "distro=fedora-41"]
        theirs = [sys.executable, "-c", f"import fmf; fmf.Tree({str(root)!r})"]
        listed = subprocess.run(ours, check=True, capture_output=True, text=True, env=env, cwd=REPO)
        found = len(listed.stdout.splitlines())
        if found != args.tests:
            print(f"discovery found {found} tests, expected {args.tests}", file=sys.stderr)
            return 1
        # warm the page cache and bytecode caches once, then alternate the two
        time_command(theirs, env)
        ours_times, theirs_times = [], []
        for _ in range(args.repeat):
            ours_times.append(time_command(ours, env))
            theirs_times.append(time_command(theirs, env))
    ours_median = statistics.median(ours_times)
    theirs_median = statistics.median(theirs_times)
    ratio = ours_median / theirs_median
    print(f"tests: {args.tests}, repetitions: {args.repeat} (median, interpreter start included)")
    print(f"atex-ci discovery (python -m atex_ci.discover): {ours_median:.3f} s")
    print(f"fmf tree load     (import fmf; fmf.Tree):       {theirs_median:.3f} s")
    print(f"ratio: {ratio:.2f}x (goal: under {GOAL_SECONDS:.0f} s and {GOAL_RATIO:.0f}x)")
    return 0 if ours_median < GOAL_SECONDS and ratio < GOAL_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
