"""Discrete-event replay of a run through a Scheduler: no machines, no sleeping.

``simulate`` drives the same scheduler the orchestrator uses with a virtual
clock: each machine asks for its next test when it is free, "runs" it for its
known duration (plus a per-test overhead), and reports a pass; a machine the
scheduler discards (after a destructive test) is replaced after a delay, or
not at all, as the pool would. It answers
"how long would this take on N machines?" (``atex-ci estimate``) and lets the
scheduling benchmark compare policies at scales no real run reaches.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from .model import Machine, Status
from .schedule import History, HistoryKey, Job, Next, Outcome, Scheduler, lower_bound


@dataclass(frozen=True)
class Simulation:
    """What a simulated run did."""

    machines: int
    makespan: float
    #: Seconds each machine spent running tests (overhead included).
    busy: tuple[float, ...]
    lower_bound: float
    decisions: int
    #: Scheduler CPU time per decision (next_test + test_finished), seconds.
    cpu_per_decision: float
    #: Machines the scheduler discarded after a test (a destructive one).
    discarded: int = 0
    #: Tests left without a machine (discarded ones that were not replaced).
    not_run: int = 0

    @property
    def utilisation(self) -> float:
        """Busy time over machine time (1.0: no machine ever idle)."""
        if self.makespan <= 0 or not self.busy:
            return 1.0
        return math.fsum(self.busy) / (self.makespan * len(self.busy))

    @property
    def ratio(self) -> float:
        """Makespan over the lower bound (1.0 is optimal)."""
        return self.makespan / self.lower_bound if self.lower_bound > 0 else 1.0


def simulate(
    jobs: Sequence[Job],
    duration: Callable[[Job], float],
    machines: int,
    scheduler_factory: Callable[[Sequence[Job]], Scheduler] = Scheduler,
    *,
    overhead: float = 0.0,
    platform: str = "default",
    replacement_delay: float | None = 0.0,
) -> Simulation:
    """Replay ``jobs`` (real durations from ``duration``) on ``machines`` machines.

    ``scheduler_factory`` builds the policy from the jobs (give it the
    history it may use for its order). Every test passes; ``overhead`` seconds
    are added to each test, as a real run's per-test cost. A machine the
    scheduler discards is replaced ``replacement_delay`` seconds later (None:
    never, as static hosts; the scheduler is told, see ``replacements``).
    """
    if machines < 1:
        raise ValueError("machines must be at least 1")
    scheduler = scheduler_factory(jobs)
    scheduler.replacements(platform, replacement_delay is not None)
    fleet = [Machine(id=f"sim-{n}", provisioner="sim", platform=platform) for n in range(machines)]
    for machine in fleet:
        scheduler.add_machine(machine)
    made = machines
    # Slots whose replacement machine is on its way (added when it arrives).
    arriving: set[int] = set()
    discarded = 0
    busy = [0.0] * machines
    # (time a machine becomes free, machine index, job it finished or None)
    events: list[tuple[float, int, Job | None]] = [(0.0, n, None) for n in range(machines)]
    heapq.heapify(events)
    waiting: list[int] = []
    now = 0.0
    decisions = 0
    cpu = 0.0
    while events:
        now, index, finished = heapq.heappop(events)
        machine = fleet[index]
        started = time.process_time()
        ready = [index, *waiting]
        waiting = []
        if index in arriving:
            arriving.discard(index)
            scheduler.add_machine(machine)
        if finished is not None:
            took = duration(finished)
            decision = scheduler.test_finished(
                machine, finished, Outcome(Status.PASS, duration=took)
            )
            if not decision.keep_machine:
                discarded += 1
                ready.remove(index)
                if replacement_delay is not None and scheduler.wants_machine(platform):
                    # The replacement takes the discarded machine's slot.
                    fleet[index] = Machine(id=f"sim-{made}", provisioner="sim", platform=platform)
                    made += 1
                    arriving.add(index)
                    heapq.heappush(events, (now + replacement_delay, index, None))
        for free in ready:
            answer = scheduler.next_test(fleet[free], None)
            decisions += 1
            if isinstance(answer, Job):
                took = duration(answer) + overhead
                busy[free] += took
                heapq.heappush(events, (now + took, free, answer))
            elif answer is Next.WAIT:
                waiting.append(free)
        cpu += time.process_time() - started
    all_durations = [duration(job) + overhead for job in jobs]
    return Simulation(
        machines=machines,
        makespan=now,
        busy=tuple(busy),
        lower_bound=lower_bound(all_durations, machines),
        decisions=decisions,
        cpu_per_decision=cpu / decisions if decisions else 0.0,
        discarded=discarded,
        not_run=len(scheduler.no_machine_left(platform)),
    )


@dataclass(frozen=True)
class Estimate:
    """``atex-ci estimate``'s answer for one history."""

    simulations: tuple[Simulation, ...]
    #: The fewest machines whose predicted makespan meets the budget, if asked.
    fewest: int | None
    budget: float | None


def estimate(
    durations: Mapping[HistoryKey, Sequence[float]],
    machine_counts: Sequence[int],
    *,
    budget: float | None = None,
    overhead: float = 0.0,
    scheduler_factory: Callable[..., Scheduler] = Scheduler,
) -> Estimate:
    """Predict the makespan of the tests in ``durations`` for each machine count.

    Each test is expected to take the median of its recorded durations, and
    the queue is ordered with the same history (what ``run --history`` does).
    With ``budget`` (seconds), also finds the fewest machines that meet it
    (None if even one machine per test does not).
    """
    from .model import Test

    history = History(durations)
    jobs = [
        Job(platform, Test(name=name, plan=plan, test="", path=""))
        for (platform, plan, name) in durations
        if durations[(platform, plan, name)]
    ]
    expected = {id(job): history.expected(job.id) or 0.0 for job in jobs}

    def run(count: int) -> Simulation:
        # Per platform: each platform's machines serve only its tests, so a
        # run with several platforms needs `count` machines for each of them.
        by_platform: dict[str, list[Job]] = {}
        for job in jobs:
            by_platform.setdefault(job.platform, []).append(job)
        parts = [
            simulate(
                platform_jobs,
                lambda job: expected[id(job)],
                count,
                lambda js: scheduler_factory(js, history=history),
                overhead=overhead,
                platform=platform,
            )
            for platform, platform_jobs in by_platform.items()
        ]
        if not parts:
            return Simulation(count, 0.0, (), 0.0, 0, 0.0)
        slowest = max(parts, key=lambda s: s.makespan)
        return Simulation(
            machines=count,
            makespan=slowest.makespan,
            busy=tuple(b for part in parts for b in part.busy),
            lower_bound=max(p.lower_bound for p in parts),
            decisions=sum(p.decisions for p in parts),
            cpu_per_decision=slowest.cpu_per_decision,
        )

    simulations = tuple(run(count) for count in machine_counts)
    fewest = None
    if budget is not None and jobs:
        fewest = _fewest_machines(run, budget, max(expected.values()) + overhead, len(jobs))
    return Estimate(simulations=simulations, fewest=fewest, budget=budget)


def estimate_lines(result: Estimate, tests: int, source: object, budget: str | None) -> list[str]:
    """``atex-ci estimate``'s table for ``result``: ``tests`` from ``source``,
    ``budget`` as the user spelled it."""
    from .duration import format_clock

    lines = [
        f"{tests} tests from {source}",
        "machines  makespan  utilisation  makespan/lower bound",
    ]
    for sim in result.simulations:
        lines.append(
            f"{sim.machines:8}  {format_clock(sim.makespan):>8}  {sim.utilisation:10.0%}"
            f"  {sim.ratio:20.2f}"
        )
    if result.budget is not None:
        if result.fewest is None:
            lines.append(f"no machine count meets {budget}: the longest test alone takes longer")
        else:
            lines.append(f"fewest machines to finish within {budget}: {result.fewest}")
    return lines


def _fewest_machines(
    run: Callable[[int], Simulation], budget: float, longest: float, most: int
) -> int | None:
    """The smallest machine count whose simulated makespan meets ``budget``.

    More machines never make the makespan longer by more than LPT's rounding,
    so a doubling search followed by bisection finds the count in
    O(log most) simulations.
    """
    if longest > budget:
        return None  # the longest test alone is over the budget
    high = 1
    while run(high).makespan > budget:
        if high >= most:
            return None
        high = min(high * 2, most)
    low = high // 2 + 1 if high > 1 else 1
    while low < high:
        middle = (low + high) // 2
        if run(middle).makespan <= budget:
            high = middle
        else:
            low = middle + 1
    return high


__all__ = ["Estimate", "Simulation", "estimate", "estimate_lines", "simulate"]
