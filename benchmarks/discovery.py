"""Discovery speed: atex-ci's whole discovery process against plain fmf tree loading.

Generates a tree of 500 tests (25 directories of 20, with inheritance and an
``adjust`` rule) and one plan in a temporary directory, then times, alternately
in the same run, two fresh interpreters each including their start-up:

  (a) ``python -m atex_ci.discover ROOT -c distro=fedora-41`` (prints the names)
  (b) ``python -c "import fmf; fmf.Tree(ROOT)"``

and prints the medians and their ratio. Goal: (a) under 1 s and within 2x of (b).

Then, libraries: a tree of 300 tests sharing 5 beakerlib libraries, each in its
own local git repository (file:// URLs), discovered and resolved by
``python -m atex_ci.discover ROOT --fetch`` with an empty cache each time (as a
first run on a new controller). Goal: each library repository fetched once,
the whole process under 2 s.

Last, if a clone of RHSecurityCompliance/contest is at ``--contest`` (default
/tmp/contest), its ``/plans/weekly`` with ``-c distro=rhel-9.6 -c
arch=x86_64``: the time is printed (tmt 1.78 needs about 29 s on the CI kind
of machine).

    python benchmarks/discovery.py [--repeat N] [--tests N] [--contest DIR]
"""

from __future__ import annotations

import argparse
import os
import re
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
LIBRARY_TESTS = 300
LIBRARIES = 5
LIBRARY_GOAL_SECONDS = 2.0


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
    parser.add_argument("--contest", default="/tmp/contest", help="a clone of contest, if any")
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
    ok = ours_median < GOAL_SECONDS and ratio < GOAL_RATIO
    ok = benchmark_libraries(args.repeat, env) and ok
    contest = Path(args.contest)
    if (contest / ".fmf").is_dir():
        command = [sys.executable, "-m", "atex_ci.discover", str(contest), "-p", "/plans/weekly"]
        command += ["-c", "distro=rhel-9.6", "-c", "arch=x86_64"]
        listed = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
        seconds = statistics.median(time_command(command, env) for _ in range(3))
        found = len(listed.stdout.splitlines())
        print(f"contest /plans/weekly: {found} tests in {seconds:.2f} s (tmt 1.78: about 29 s)")
    else:
        print(f"contest not found at {contest}: skipped")
    return 0 if ok else 1


def make_library_repos(base: Path) -> list[str]:
    """LIBRARIES git repositories, each with one library /lib; their file:// URLs."""
    urls = []
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid"]
    for index in range(LIBRARIES):
        repo = base / f"lib{index}"
        (repo / ".fmf").mkdir(parents=True)
        (repo / ".fmf" / "version").write_text("1\n")
        (repo / "main.fmf").write_text(f"/lib:\n    require: [package-of-lib{index}]\n")
        (repo / "lib").mkdir()
        (repo / "lib" / "lib.sh").write_text("true\n")
        subprocess.run([*git, "init", "-q", str(repo)], check=True)
        subprocess.run([*git, "-C", str(repo), "add", "-A"], check=True)
        subprocess.run([*git, "-C", str(repo), "commit", "-q", "-m", "lib"], check=True)
        urls.append(f"file://{repo}")
    return urls


def benchmark_libraries(repeat: int, env: dict[str, str]) -> bool:
    with tempfile.TemporaryDirectory(prefix="atex-ci-bench-libs-") as tmp:
        urls = make_library_repos(Path(tmp) / "repos")
        root = Path(tmp) / "tree"
        make_tree(root, LIBRARY_TESTS)
        for index, path in enumerate(sorted(root.glob("tests/*/test*.fmf"))):
            url = urls[index % LIBRARIES]
            with open(path, "a") as f:
                f.write(f"framework: beakerlib\nrecommend: [{{url: '{url}', name: /lib}}]\n")
        command = [sys.executable, "-m", "atex_ci.discover", str(root), "--fetch"]
        times, fetches = [], set()
        for run in range(repeat):
            run_env = {**env, "ATEX_CI_CACHE": str(Path(tmp) / f"cache{run}")}
            start = time.perf_counter()
            proc = subprocess.run(command, capture_output=True, text=True, env=run_env, cwd=REPO)
            times.append(time.perf_counter() - start)
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                return False
            match = re.search(r"fetched (\d+) repositories", proc.stderr)
            fetches.add(int(match[1]) if match else -1)
    median = statistics.median(times)
    print(
        f"{LIBRARY_TESTS} tests sharing {LIBRARIES} libraries, empty cache: {median:.3f} s, "
        f"repositories fetched per run: {sorted(fetches)} "
        f"(goal: under {LIBRARY_GOAL_SECONDS:.0f} s, each fetched once)"
    )
    return median < LIBRARY_GOAL_SECONDS and fetches == {LIBRARIES}


if __name__ == "__main__":
    sys.exit(main())
