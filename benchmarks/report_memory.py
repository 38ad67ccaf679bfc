"""Memory and time of ``atex-ci report`` on a large run against a small one.

Generates two run directories in a scratch directory:

  (a) small: 100 results;
  (b) large: 20,000 results on 2 platforms (a tenth of them failing, each with
      a 1 MiB output.txt, hard-linked so the disk holds one copy), one 50 MB
      output and one result line with a 50 MB note;

then runs ``atex-ci report --html`` on each as a child process and prints the
wall time, the child's peak RSS (getrusage of the children) and the size of
each report. Goal: the large run reports in bounded memory — peak RSS at
most 400 MB and each report within its cap (Markdown under 1 MiB). The last
line is machine-readable:

    results=N seconds=S peak_rss_mb=M junit_mb=J markdown_kb=K html_mb=H rss_ratio=R

    python benchmarks/report_memory.py [--results N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from atex_ci.rundir import RunDir  # noqa: E402

BIG_NOTE = 50 * 1024 * 1024
BIG_OUTPUT = 50 * 1024 * 1024


def make_run(path: Path, count: int) -> Path:
    run = RunDir.create(path, platforms=["fedora-41", "centos-10"])
    shared = path / "shared-output.txt"
    shared.write_bytes(b"".join(b"log line %06d of a failing test\n" % i for i in range(32_000)))
    lines = []
    events = []
    for n in range(count):
        platform = "fedora-41" if n % 2 else "centos-10"
        test = f"/tests/group{n % 50}/test{n}"
        failing = n % 10 == 0
        files = []
        if failing:
            rel = f"{platform}/plan{test}/1/output.txt"
            target = run.path / "artifacts" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(shared, target)
            files = [rel]
        start = f"2026-01-01T00:{(n // 60) % 60:02d}:{n % 60:02d}+00:00"
        lines.append(
            {
                "test": test,
                "name": None,
                "plan": "/plans/ci",
                "platform": platform,
                "status": "fail" if failing else "pass",
                "attempt": 1,
                "machine": f"{platform}-m{n % 8}",
                "start": start,
                "end": start,
                "duration": 1.0 + (n % 17),
                "note": "assertion failed: expected 4, got 5" if failing else None,
                "files": files,
                "exit_code": 1 if failing else 0,
                "reason": None,
            }
        )
        events.append(
            {"time": start, "event": "test_started", "machine": f"m{n % 8}", "test": test}
        )
        events.append(
            {"time": start, "event": "test_finished", "machine": f"m{n % 8}", "test": test,
             "status": lines[-1]["status"]}
        )  # fmt: skip
    if count >= 1000:
        rel = "fedora-41/plan/tests/huge/1/output.txt"
        target = run.path / "artifacts" / rel
        target.parent.mkdir(parents=True)
        with open(target, "wb") as f:
            for _ in range(BIG_OUTPUT // (1024 * 1024)):
                f.write(b"x" * (1024 * 1024 - 1) + b"\n")
        lines.append(
            {"test": "/tests/huge", "plan": "/plans/ci", "platform": "fedora-41",
             "status": "error", "note": "N" * BIG_NOTE, "files": [rel]}
        )  # fmt: skip
    with open(run.path / "results.jsonl", "w") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")
    with open(run.path / "events.jsonl", "w") as f:
        for event in events:
            f.write(json.dumps(event) + "\n")
    return run.path


def measure(run: Path) -> dict[str, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "atex_ci", "report", "-d", str(run), "--html", str(run / "r.html")],
        check=True,
        capture_output=True,
    )
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak_kb <= before:  # ru_maxrss is the largest child so far; runs go small to large
        peak_kb = before
    return {
        "seconds": seconds,
        "peak_rss_mb": peak_kb / 1024,
        "junit_mb": (run / "junit.xml").stat().st_size / 2**20,
        "markdown_kb": (run / "summary.md").stat().st_size / 1024,
        "html_mb": (run / "r.html").stat().st_size / 2**20,
    }


def make_run_in_child(path: Path, count: int) -> Path:
    """make_run in another process: Linux carries a parent's peak RSS at fork into the
    child's ru_maxrss, so this process must never hold the generated 50 MB note."""
    subprocess.run([sys.executable, __file__, "--make", str(path), str(count)], check=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=int, default=20_000)
    parser.add_argument("--make", nargs=2, metavar=("DIR", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make:
        make_run(Path(args.make[0]), int(args.make[1]))
        return
    with tempfile.TemporaryDirectory(prefix="atex-report-bench.") as scratch:
        small = measure(make_run_in_child(Path(scratch) / "small", 100))
        large = measure(make_run_in_child(Path(scratch) / "large", args.results))
    for label, numbers in (("100 results", small), (f"{args.results} results", large)):
        print(
            f"{label:>15}: {numbers['seconds']:.1f} s, peak RSS {numbers['peak_rss_mb']:.0f} MB, "
            f"junit {numbers['junit_mb']:.1f} MB, summary {numbers['markdown_kb']:.0f} KB, "
            f"html {numbers['html_mb']:.1f} MB"
        )
    ratio = large["peak_rss_mb"] / small["peak_rss_mb"]
    print(
        f"results={args.results} seconds={large['seconds']:.1f} "
        f"peak_rss_mb={large['peak_rss_mb']:.0f} junit_mb={large['junit_mb']:.1f} "
        f"markdown_kb={large['markdown_kb']:.0f} html_mb={large['html_mb']:.1f} "
        f"rss_ratio={ratio:.1f}"
    )


if __name__ == "__main__":
    main()
