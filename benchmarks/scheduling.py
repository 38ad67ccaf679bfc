"""Scheduling benchmark: makespan over the lower bound for three policies.

200 tests with heavy-tailed durations (lognormal, a few of them 20x the
median; about a minute of sleep in all) on 8 machines:

- static: the tests split N/M up front in discovery order (each machine gets
  a fixed, contiguous share, as a CI matrix of tmt jobs does);
- fifo: ad hoc in discovery order (a free machine takes the next test);
- lpt: ad hoc, longest expected first, from the history of an earlier run.

The lower bound is max(total / machines, longest test): no schedule beats it.
Goals: lpt <= 1.05, fifo <= 1.25.

    python benchmarks/scheduling.py              # real runs on 8 local slots
    python benchmarks/scheduling.py --simulate   # discrete events, no sleeping,
                                                 # plus the scale run below

``--simulate`` replays the same durations through the same schedulers with a
virtual clock, then times the scheduler at 1,000 machines x 100,000 tests (CPU
per decision). The real mode also prints what ``atex-ci estimate`` predicted
for each policy next to what the run measured. The last line is always
``makespan/LB: static=X fifo=Y lpt=Z``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from atex_ci.model import Machine, Test
from atex_ci.schedule import History, Job, Scheduler, lower_bound
from atex_ci.simulate import simulate

TESTS = 200
MACHINES = 8
TOTAL_SLEEP = 60.0
SEED = 20261130


def durations(count: int = TESTS, total: float = TOTAL_SLEEP, seed: int = SEED) -> list[float]:
    """Heavy-tailed durations: lognormal, plus a few tests 20x the median."""
    rng = random.Random(seed)
    raw = [rng.lognormvariate(0.0, 0.9) for _ in range(count)]
    median = statistics.median(raw)
    for index in rng.sample(range(count), 3):
        raw[index] = 20 * median
    scale = total / sum(raw)
    return [round(d * scale, 3) for d in raw]


class StaticSplit(Scheduler):
    """N/M up front: machine k of N runs only the k-th contiguous share of the tests."""

    def __init__(self, jobs: Sequence[Job], **options: object) -> None:
        jobs = list(jobs)
        share = -(-len(jobs) // MACHINES)
        self._owner = {id(job): index // share for index, job in enumerate(jobs)}
        self._machine_number: dict[str, int] = {}
        super().__init__(jobs, **options)  # type: ignore[arg-type]

    def add_machine(self, machine: Machine) -> None:
        self._machine_number.setdefault(machine.id, len(self._machine_number))
        super().add_machine(machine)

    def applies(self, machine: Machine, job: Job) -> bool:
        return self._owner[id(job)] == self._machine_number.get(machine.id)


def make_jobs(values: Sequence[float]) -> list[Job]:
    return [
        Job("default", Test(name=f"/tests/t{n:03}", plan="/plans/bench", test="", path=""))
        for n in range(len(values))
    ]


def history_of(values: Sequence[float]) -> History:
    return History(
        {("default", "/plans/bench", f"/tests/t{n:03}"): [d] for n, d in enumerate(values)}
    )


def policies(values: Sequence[float]) -> dict[str, Callable[[Sequence[Job]], Scheduler]]:
    history = history_of(values)
    return {
        "static": StaticSplit,
        "fifo": Scheduler,
        "lpt": lambda jobs: Scheduler(jobs, history=history),
    }


def simulated(values: Sequence[float]) -> dict[str, float]:
    ratios = {}
    for name, factory in policies(values).items():
        jobs = make_jobs(values)
        real = {id(j): v for j, v in zip(jobs, values, strict=True)}
        result = simulate(jobs, lambda j, real=real: real[id(j)], MACHINES, factory)
        ratios[name] = result.ratio
        print(
            f"simulated {name:6}: makespan {result.makespan:6.2f} s, lower bound"
            f" {result.lower_bound:6.2f} s, ratio {result.ratio:.3f},"
            f" utilisation {result.utilisation:.0%}"
        )
    return ratios


def scale() -> None:
    rng = random.Random(SEED)
    count, machines = 100_000, 1_000
    values = [rng.lognormvariate(0.0, 1.0) for _ in range(count)]
    jobs = make_jobs(values)
    real = {id(j): v for j, v in zip(jobs, values, strict=True)}
    history = History({("default", "/plans/bench", j.test.name): [real[id(j)]] for j in jobs})
    started = time.process_time()
    result = simulate(
        jobs, lambda j: real[id(j)], machines, lambda js: Scheduler(js, history=history)
    )
    print(
        f"scale: {machines} machines x {count} tests: {result.decisions} decisions,"
        f" {result.cpu_per_decision * 1e6:.1f} us of scheduler CPU per decision,"
        f" ratio {result.ratio:.4f}, {time.process_time() - started:.1f} s CPU in all"
    )


# -- real runs ---------------------------------------------------------------------------


def write_tree(root: Path, values: Sequence[float]) -> None:
    (root / ".fmf").mkdir(parents=True)
    (root / ".fmf" / "version").write_text("1\n")
    (root / "plans").mkdir()
    (root / "plans" / "bench.fmf").write_text(
        json.dumps({"discover": {"how": "fmf"}, "execute": {"how": "tmt"}})
    )
    (root / "tests").mkdir()
    nodes = {f"/t{n:03}": {"test": f"sleep {d}"} for n, d in enumerate(values)}
    (root / "tests" / "main.fmf").write_text(json.dumps(nodes))


def run_policy(root: Path, work: Path, name: str, history: Path | None) -> float:
    run = work / f"run-{name}"
    command = [sys.executable, "-m", "atex_ci", "run", "-d", str(run)]
    command += ["--fmf-root", str(root), "--local", str(MACHINES)]
    if name == "static":
        command += ["--scheduler", "benchmarks.scheduling:StaticSplit"]
    if history is not None:
        command += ["--history", str(history)]
    started = time.monotonic()
    proc = subprocess.run(
        command, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent
    )
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit(f"{name}: atex-ci run failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return makespan_of(run) or elapsed


def makespan_of(run: Path) -> float | None:
    """First test start to last test end, from the run's events."""
    from atex_ci.rundir import RunDir

    events = RunDir.open(run).read_events()
    stamps = [e["time"] for e in events if e.get("event") in ("test_started", "test_finished")]
    if not stamps:
        return None
    from datetime import datetime

    parsed = [datetime.fromisoformat(s) for s in stamps]
    return (max(parsed) - min(parsed)).total_seconds()


def measured_durations(run: Path) -> list[float]:
    from atex_ci.rundir import RunDir

    results, _ = RunDir.open(run).read_results_checked()
    return [r.duration or 0.0 for r in results if r.name is None]


def per_test_overhead(run: Path) -> float:
    """Median gap on a machine between one test's end and the next one's start."""
    from datetime import datetime

    from atex_ci.rundir import RunDir

    last_end: dict[str, datetime] = {}
    gaps = []
    for event in RunDir.open(run).read_events():
        machine, when = event.get("machine"), event.get("time")
        if not machine or not when:
            continue
        stamp = datetime.fromisoformat(when)
        if event["event"] == "test_started" and machine in last_end:
            gaps.append((stamp - last_end[machine]).total_seconds())
        elif event["event"] == "test_finished":
            last_end[machine] = stamp
    return statistics.median(gaps) if gaps else 0.0


def real(values: Sequence[float]) -> dict[str, float]:
    from atex_ci.collect import load_history
    from atex_ci.simulate import estimate

    ratios = {}
    spans = {}
    with tempfile.TemporaryDirectory(prefix="atex-ci-bench-") as scratch:
        work = Path(scratch)
        write_tree(work / "tree", values)
        # The fifo run comes before lpt: its results are lpt's history.
        for name in ("static", "fifo", "lpt"):
            history = work / "run-fifo" if name == "lpt" else None
            span = run_policy(work / "tree", work, name, history)
            # The bound of this run's own measured test times (a test takes a
            # little longer than its sleep: the shell starts, the wrapper reports).
            bound = lower_bound(measured_durations(work / f"run-{name}"), MACHINES)
            ratios[name], spans[name] = span / bound, span
            print(
                f"real {name:6}: makespan {span:6.2f} s, lower bound {bound:6.2f} s,"
                f" ratio {ratios[name]:.3f}"
            )
        overhead = per_test_overhead(work / "run-fifo")
        predicted = estimate(load_history(work / "run-fifo"), [MACHINES], overhead=overhead)
        span = predicted.simulations[0].makespan
        measured = spans["lpt"]
        print(
            f"estimate from the fifo run's history ({overhead * 1000:.0f} ms per-test overhead):"
            f" {span:.2f} s predicted for lpt, {measured:.2f} s measured"
            f" (prediction/measured {span / measured:.2f})"
        )
    return ratios


def main(argv: Iterator[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--simulate", action="store_true", help="discrete events, no sleeping")
    args = parser.parse_args(list(argv) if argv is not None else None)
    values = durations()
    print(
        f"{TESTS} tests, {MACHINES} machines, {sum(values):.1f} s of test time,"
        f" longest {max(values):.2f} s, median {statistics.median(values):.3f} s"
    )
    if args.simulate:
        ratios = simulated(values)
        scale()
    else:
        ratios = real(values)
    print(
        f"makespan/LB: static={ratios['static']:.2f} fifo={ratios['fifo']:.2f}"
        f" lpt={ratios['lpt']:.2f}"
    )


if __name__ == "__main__":
    main()
