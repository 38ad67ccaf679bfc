"""Scheduling policy: THE decision point of a run. Pure: no asyncio, no I/O.

The orchestrator (or a runner of your own) drives a run only through these
calls, and reports facts; every decision is made here::

    add_machine(machine)                         # a machine is ready for work
    next_test(machine, previous) -> Job | Next   # a test, Next.WAIT or Next.DONE
    test_finished(machine, job, outcome) -> Decision   # keep/discard, rerun
    wants_check(machine, job, outcome) -> bool   # check the machine before deciding?
    machine_lost(machine) -> list[Job]           # lost between tests: its work back
    resume(results) -> list[Job]                 # --resume: drop what is final
    wants_machine(platform) -> bool              # should a lost machine be replaced?
    no_machine_left(platform) -> list[Job]       # nothing can run these any more
    not_run() -> list[tuple[Job, str]]           # dropped by a stop, with the note
    budget_wake() -> float | None                # when to look again (time budget)

Ad hoc by design: a machine asks for work only when it is free, so a slow test
never holds back tests queued "behind" it, and nothing is split N/M up front.
The queue is ordered longest expected first (LPT) when a history of earlier
durations is known, which keeps the long tail short.

Two facts of a test's metadata steer the default policy, as in upstream ATEX:
``extra-priority`` (higher runs earlier) and the ``destructive`` tag (its
machine is not reused); both are options of ``Scheduler``. So are the two
stops of a run: ``max_failures`` (no test starts after that many final
failures) and ``time_budget`` (no test starts that cannot end inside it);
the tests they keep from starting are handed back by ``not_run``.

A policy of your own is a subclass that overrides the small hooks below
(``order``, ``applies``, ``pick``, ``wants_check``, ``keep_machine``,
``should_rerun``, ``expected_duration``, ``estimated_duration``,
``priority``, ``destructive``), or the calls themselves.
"""

from __future__ import annotations

import enum
import math
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from .metadata_keys import DESTRUCTIVE_TAG, PRIORITY_KEY, is_destructive, priority
from .model import Machine, Reason, Result, Status, Test, TestId

#: Times a test cut short by the infrastructure (lost machine, dropped
#: connection, failed setup) is queued again. It does not spend the test's
#: rerun budget, but it is bounded: a test that kills every machine it runs on
#: must not eat the whole fleet.
MAX_INFRA_RETRIES = 2

#: Provisioner kind of local slots: a timeout there only kills the test's
#: process group, so the slot stays usable.
LOCAL = "local"

#: Share of a time budget kept free at its end for what follows the tests
#: (the run's clean-up, releasing machines, writing reports, uploading them),
#: at most ``BUDGET_RESERVE_MAX`` seconds: a Testing Farm release and a report
#: of thousands of results fit in minutes, and a budget is usually hours.
BUDGET_RESERVE_SHARE = 0.05
BUDGET_RESERVE_MAX = 300.0

#: Notes of the tests a stop keeps from starting (``not_run``): they are
#: skipped, and ``--resume`` runs them (``unfinished``).
NOT_RUN_BUDGET = "not run: time budget"
NOT_RUN_STOPPED = "not run: stopped after {failures} failures"
_NOT_RUN_STOPPED_PREFIX = NOT_RUN_STOPPED.split("{", 1)[0]

# History key of a test: durations are per platform, plan and test name.
HistoryKey = tuple[str, str, str]


class Next(enum.Enum):
    """What ``next_test`` says when it has no test for the machine."""

    #: Nothing for this machine now, but something may come (a test kept for
    #: another machine, a rerun): ask again after the next ``test_finished``,
    #: ``machine_lost`` or ``add_machine``.
    WAIT = "wait"
    #: Nothing will come for this machine: finish and release it.
    DONE = "done"


class Job:
    """One selected test instance to run on one platform.

    Identity is the object; ``id`` names it in results (a test selected twice
    in a plan is two jobs with different serial numbers).
    """

    __slots__ = ("avoid", "infra_retries", "platform", "reruns", "runs", "test")

    def __init__(self, platform: str, test: Test) -> None:
        self.platform = platform
        self.test = test
        #: Machines this job prefers not to run on (where it failed before).
        self.avoid: set[str] = set()
        #: How often it ran in this invocation, reruns and infra retries included.
        self.runs = 0
        self.reruns = 0
        self.infra_retries = 0

    @property
    def id(self) -> TestId:
        return TestId.of(self.platform, self.test)

    def __repr__(self) -> str:
        return f"Job({self.platform}:{self.test.plan}:{self.test.name})"


@dataclass(frozen=True)
class Outcome:
    """Facts about one run of a test, as the executor and orchestrator saw them."""

    #: The test's own final status; None if it produced no result at all.
    status: Status | None
    reason: Reason | None = None
    duration: float = 0.0
    timed_out: bool = False
    #: The machine was lost or unreachable while the test ran.
    machine_lost: bool = False
    #: A plan's prepare phase failed on the machine, so the test did not run.
    setup_failed: bool = False
    #: The test asked to abort its plan (tmt-abort).
    aborted: bool = False
    #: The run was interrupted (Ctrl-C, SIGTERM) while the test ran.
    interrupted: bool = False
    #: The machine's health check after the test (asked for by ``wants_check``:
    #: connected, what the test left killed, work directory in place): True
    #: passed, False failed, None not checked.
    healthy: bool | None = None

    @property
    def infra(self) -> bool:
        """Cut short by the infrastructure rather than by the test."""
        return self.machine_lost or self.setup_failed or self.reason is Reason.INFRA

    @property
    def failed(self) -> bool:
        return self.status is None or self.status.is_failure

    @classmethod
    def from_result(cls, result: Result | None, **facts: bool) -> Outcome:
        """The outcome of a test whose own result is ``result``, plus ``facts``."""
        if result is None:
            return cls(status=None, reason=Reason.INFRA, **facts)
        return cls(
            status=result.status,
            reason=result.reason,
            duration=result.duration or 0.0,
            timed_out=facts.pop("timed_out", result.reason is Reason.TIMEOUT),
            interrupted=facts.pop("interrupted", result.reason is Reason.INTERRUPTED),
            **facts,
        )


@dataclass(frozen=True)
class Decision:
    """What happens after a test: to the machine, to the test, to its plan."""

    keep_machine: bool
    #: The test was queued again (a rerun, or an infra retry).
    rerun: bool = False
    #: Why the machine is discarded or the test queued again (for events).
    why: str = ""
    #: Jobs removed from the queue because of this test (its plan aborted);
    #: the caller records them as not run.
    dropped: tuple[Job, ...] = ()


@dataclass
class History:
    """Durations of earlier runs, per (platform, plan, test), newest last.

    ``expected`` is the median of the known durations (robust to one slow
    outlier run). A test known on another platform borrows that estimate: a
    test's length is mostly its own, not the platform's.
    """

    durations: Mapping[HistoryKey, Sequence[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        by_test: dict[tuple[str, str], list[float]] = {}
        for (_, plan, name), values in self.durations.items():
            by_test.setdefault((plan, name), []).extend(values)
        self._by_test = {k: statistics.median(v) for k, v in by_test.items() if v}
        self._exact = {k: statistics.median(v) for k, v in self.durations.items() if v}

    def expected(self, test: TestId | HistoryKey) -> float | None:
        """The expected duration of ``test`` (any of its instances)."""
        platform, plan, name = test[0], test[1], test[2]
        exact = self._exact.get((platform, plan, name))
        if exact is not None:
            return exact
        return self._by_test.get((plan, name))

    def __bool__(self) -> bool:
        return bool(self._exact)


def duration_scale(history: History, jobs: Iterable[Job]) -> float:
    """How long tests take against their fmf ``duration``, as far as ``history``
    knows: the median, over the ``jobs`` it knows, of expected / declared
    seconds. 1.0 when it knows none of them (the declared limit itself)."""
    ratios = [
        expected / job.test.duration
        for job in jobs
        if job.test.duration > 0 and (expected := history.expected(job.id)) is not None
    ]
    return statistics.median(ratios) if ratios else 1.0


def estimate(history: History, job: Job, scale: float) -> float:
    """Seconds ``job`` is expected to take: its history, else its fmf
    ``duration`` times ``scale`` (``duration_scale``); never unknown."""
    expected = history.expected(job.id)
    return expected if expected is not None else job.test.duration * scale


def budget_reserve(budget: float) -> float:
    """Seconds kept free at the end of a time budget of ``budget`` seconds."""
    return min(budget * BUDGET_RESERVE_SHARE, BUDGET_RESERVE_MAX)


class Scheduler:
    """The default policy: ad hoc, longest expected first, reruns on request.

    - Queue order (``order``): higher ``priority`` first (the test's
      ``extra-priority``, 0 when it has none; option ``priority_key``). Among
      equal priorities, with a history, longest expected first (LPT); tests
      the history does not know go first, in discovery order (an unknown test
      may be long, and a long test started last is what makes a long tail;
      see benchmarks/scheduling.py). Without a history: discovery order, as
      tmt runs them.
    - A machine takes the first queued test that ``applies`` to it (same
      platform), except a rerun that prefers another machine while another
      live machine of that platform exists, and a ``destructive`` test on a
      platform whose machines cannot be replaced (``replacements``): that one
      waits until no other queued test is left for the machine, so that
      throwing machines away strands no test that could have run.
    - After a test (``keep_machine``): a lost machine, a failed setup or a
      ``destructive`` test (tagged ``destructive``; option
      ``destructive_tag``) discards the machine, whatever the test's result;
      the pool replaces it where it can. After a timeout on a machine that is not a local
      slot, the machine is checked (``wants_check``) and kept when healthy,
      as tmt keeps its guest: a static host has no stand-in, and a replacement
      costs minutes. Anything else keeps it.
    - Reruns (``should_rerun``): a failed or errored test is queued again up to
      ``max_reruns`` times, preferring another machine (with reruns on, a free
      machine waits while a running test may still need one); a test cut short
      by the infrastructure is queued again up to ``max_infra_retries`` times
      without spending its reruns (and free machines wait for that too). An
      interrupted test is never rerun. A test queued again goes first, except
      one that just cost its machine on a platform that cannot replace it:
      that one goes last, so that it cannot take the platform's last machine
      before the tests that are still queued had their turn.
    - tmt-abort drops the rest of the test's plan on that platform.
    - Stops (``not_run`` hands back what they dropped): after ``max_failures``
      final failures or errors (a failure that is rerun is not final yet), no
      test starts and no rerun is queued; the queued tests are "not run:
      stopped after N failures". With ``time_budget`` (seconds from
      ``budget_start`` on ``clock``), a test starts only if its
      ``estimated_duration`` ends before the budget does, less a reserve for
      clean-up and reports (``budget_reserve``); the others are "not run:
      time budget" (time only moves on: one that does not fit now never will).
    """

    def __init__(
        self,
        jobs: Iterable[Job],
        *,
        history: History | None = None,
        max_reruns: int = 0,
        max_infra_retries: int = MAX_INFRA_RETRIES,
        priority_key: str | None = PRIORITY_KEY,
        destructive_tag: str | None = DESTRUCTIVE_TAG,
        max_failures: int | None = None,
        time_budget: float | None = None,
        budget_start: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``priority_key``: the fmf key of a test's priority (None: every test
        has priority 0). ``destructive_tag``: the tag of a test after which its
        machine is discarded (None: no test is destructive). ``max_failures``:
        final failures or errors after which no test starts (None: no limit).
        ``time_budget``: seconds from ``budget_start`` (a ``clock()`` value;
        default: now) within which every started test is expected to end
        (None: no budget)."""
        if max_failures is not None and max_failures < 1:
            raise ValueError("max_failures must be at least 1")
        if time_budget is not None and time_budget < 0:
            raise ValueError("time_budget must not be negative")
        self.history = history or History()
        self.max_reruns = max_reruns
        self.max_infra_retries = max_infra_retries
        self.priority_key = priority_key
        self.destructive_tag = destructive_tag
        self.max_failures = max_failures
        self.clock = clock
        #: The ``clock()`` value by which started tests should end (None: no budget).
        self.deadline: float | None = None
        if time_budget is not None:
            start = clock() if budget_start is None else budget_start
            self.deadline = start + time_budget - budget_reserve(time_budget)
        self._failures = 0
        #: Why no test starts any more (None while tests may start).
        self.stopped: str | None = None
        self._not_run: list[tuple[Job, str]] = []
        jobs = list(jobs)
        self._scale = duration_scale(self.history, jobs)
        self._queues: dict[str, deque[Job]] = {}
        for job in self.order(jobs):
            self._queues.setdefault(job.platform, deque()).append(job)
        self._machines: dict[str, Machine] = {}
        self._running: dict[str, Job] = {}
        # Platforms whose lost machines can still be replaced (set by the caller).
        self._replaceable: set[str] = set()

    # -- hooks: override these for a policy of your own ------------------------

    def expected_duration(self, job: Job) -> float | None:
        """Seconds this job is expected to take by the history (orders the
        queue), or None if the history does not know it."""
        return self.history.expected(job.id)

    def estimated_duration(self, job: Job) -> float:
        """Seconds this job is expected to take, never unknown (the time
        budget): ``expected_duration``, else the test's fmf ``duration`` scaled
        by what the history knows of the other tests (``duration_scale``)."""
        expected = self.expected_duration(job)
        return expected if expected is not None else job.test.duration * self._scale

    def priority(self, job: Job) -> float:
        """How early ``job`` runs: higher first. Default: the test's
        ``priority_key`` (``extra-priority``), 0 when absent or not a number."""
        if self.priority_key is None:
            return 0.0
        return priority(job.test.data, self.priority_key)

    def destructive(self, job: Job) -> bool:
        """Whether ``job`` leaves its machine unfit for any other test. Default:
        the test is tagged ``destructive_tag`` (``destructive``)."""
        if self.destructive_tag is None:
            return False
        return is_destructive(job.test.data, self.destructive_tag)

    def order(self, jobs: list[Job]) -> list[Job]:
        """The queue order. Default: higher priority first; within a priority,
        unknown first (discovery order), then LPT."""
        if self.history:
            unknown = [j for j in jobs if self.expected_duration(j) is None]
            known = [j for j in jobs if self.expected_duration(j) is not None]
            # sorted() is stable: equal estimates keep discovery order.
            known.sort(key=lambda j: -(self.expected_duration(j) or 0.0))
            jobs = unknown + known
        # Stable again: equal priorities keep the order above.
        return sorted(jobs, key=lambda j: -self.priority(j))

    def applies(self, machine: Machine, job: Job) -> bool:
        """Whether ``machine`` can run ``job`` at all. Default: same platform."""
        return machine.platform == job.platform

    def pick(self, machine: Machine, candidates: Iterator[Job]) -> Job | None:
        """Choose one of ``candidates`` (in queue order, all applicable). Default: the first."""
        return next(candidates, None)

    def wants_check(self, machine: Machine, job: Job, outcome: Outcome) -> bool:
        """Whether the machine should be checked before ``keep_machine`` decides
        (the caller then reports ``Outcome.healthy``). Default: after a timeout
        on a machine that is not a local slot (killing the test's process group
        is all a timeout needs on a slot), unless the machine goes anyway
        (a destructive test)."""
        return outcome.timed_out and machine.provisioner != LOCAL and not self.destructive(job)

    def keep_machine(self, machine: Machine, job: Job, outcome: Outcome) -> tuple[bool, str]:
        """Whether the machine takes more tests after ``job``, and why not."""
        if outcome.machine_lost:
            return False, "lost while running " + job.test.name
        if outcome.setup_failed:
            return False, "prepare failed"
        if self.destructive(job):
            return False, f"{job.test.name} is destructive (tag '{self.destructive_tag}')"
        if outcome.timed_out and machine.provisioner != LOCAL and not outcome.healthy:
            if outcome.healthy is None:
                return False, f"{job.test.name} timed out; the machine's state is unknown"
            return False, f"{job.test.name} timed out and the machine failed its health check"
        return True, ""

    def should_rerun(self, job: Job, outcome: Outcome) -> tuple[bool, str]:
        """Whether to queue ``job`` again after ``outcome``, and why.

        Called only for outcomes that are not a pass. Infra retries and reruns
        are counted by the caller of this hook (``test_finished``).
        """
        if outcome.interrupted or outcome.aborted or self.stopped:
            return False, ""
        if outcome.infra:
            if job.infra_retries < self.max_infra_retries:
                return True, "infrastructure failure"
            return False, ""
        if outcome.failed and job.reruns < self.max_reruns:
            return True, "rerun after " + (str(outcome.status) if outcome.status else "no result")
        return False, ""

    def may_come_back(self, job: Job) -> bool:
        """Whether ``job``, still running, may be queued again after it ends.

        While one may, free machines of its platform wait instead of leaving,
        so that a rerun finds another machine, and the retry of a test whose
        machine was lost finds one at all. Default: it has reruns left, or it
        has infra retries left and a lost machine of its platform could not
        be replaced (``replacements``).
        """
        if self.stopped:
            return False
        if job.reruns < self.max_reruns:
            return True
        return job.infra_retries < self.max_infra_retries and job.platform not in self._replaceable

    # -- the protocol ------------------------------------------------------------

    def add_machine(self, machine: Machine) -> None:
        self._machines[machine.id] = machine

    def next_test(self, machine: Machine, previous: Job | None = None) -> Job | Next:
        """The next job for a free ``machine`` (``previous``: the job it just ran)."""
        if machine.id not in self._machines:
            return Next.DONE
        self._drop_if_stopped()
        self._drop_over_budget()
        deferred = False

        def candidates() -> Iterator[Job]:
            nonlocal deferred
            last: list[Job] = []
            for platform_queue in self._queues_for(machine):
                for job in platform_queue:
                    if not self.applies(machine, job):
                        continue
                    if machine.id in job.avoid and self._another_machine_for(job, machine):
                        deferred = True
                        continue
                    if job.platform not in self._replaceable and self.destructive(job):
                        # It costs a machine that has no stand-in: every other
                        # test the machine could run goes first.
                        last.append(job)
                        continue
                    yield job
            yield from last

        job = self.pick(machine, candidates())
        if job is None:
            if deferred or self._may_come_back_for(machine):
                return Next.WAIT
            # It leaves: no rerun may wait for it any more.
            self._machines.pop(machine.id, None)
            return Next.DONE
        self._queues[job.platform].remove(job)
        self._running[machine.id] = job
        job.runs += 1
        return job

    def test_finished(self, machine: Machine, job: Job, outcome: Outcome) -> Decision:
        """Record the end of ``job`` on ``machine`` and decide what follows."""
        self._running.pop(machine.id, None)
        keep, why_not = self.keep_machine(machine, job, outcome)
        if not keep:
            self._machines.pop(machine.id, None)
        dropped: tuple[Job, ...] = ()
        if outcome.aborted:
            dropped = tuple(self.abort_plan(job.platform, job.test.plan))
        rerun, why = (False, "")
        if outcome.failed or outcome.infra:
            rerun, why = self.should_rerun(job, outcome)
        if outcome.failed and not rerun and not outcome.interrupted:
            self._count_failure()
        if rerun:
            if outcome.infra:
                job.infra_retries += 1
            else:
                job.reruns += 1
            job.avoid.add(machine.id)
            queue = self._queues.setdefault(job.platform, deque())
            if not keep and job.platform not in self._replaceable:
                # It cost a machine that has no stand-in: the queued tests
                # run first, so it cannot strand them on the last machine.
                queue.append(job)
            else:
                # Reruns go first: their machines are waiting for them.
                queue.appendleft(job)
        return Decision(keep_machine=keep, rerun=rerun, why=why_not or why, dropped=dropped)

    def machine_lost(self, machine: Machine) -> list[Job]:
        """``machine`` is gone outside a test; its in-flight job (if any) is queued again.

        Returns the jobs queued again. (A machine lost *during* a test is
        reported through ``test_finished`` with ``Outcome(machine_lost=True)``,
        so that the lost attempt is recorded.)
        """
        self._machines.pop(machine.id, None)
        job = self._running.pop(machine.id, None)
        if job is None:
            return []
        self._queues.setdefault(job.platform, deque()).appendleft(job)
        return [job]

    def abort_plan(self, platform: str, plan: str) -> list[Job]:
        """Remove every queued job of ``plan`` on ``platform``; returns them."""
        queue = self._queues.get(platform, deque())
        dropped = [j for j in queue if j.test.plan == plan]
        self._queues[platform] = deque(j for j in queue if j.test.plan != plan)
        return dropped

    def resume(self, results: Iterable[Result]) -> list[Job]:
        """Drop queued jobs whose latest own result in ``results`` is final.

        A test with sub-results only (custom results without ``/``) runs
        again: its records cannot tell a finished run from one cut short
        between its sub-results and its own result.

        Final means the test ran to an end: not interrupted, and not a "not
        run" record (an infrastructure error with no machine). A result
        without a serial number (written before test instances were told
        apart) stands for every instance of its test. Returns the dropped jobs.
        """
        latest: dict[TestId, Result] = {}
        for r in results:
            if r.name is not None:
                continue
            key = TestId.of_result(r)
            if key not in latest or r.attempt >= latest[key].attempt:
                latest[key] = r
        done = {key for key, r in latest.items() if not unfinished(r)}
        dropped: list[Job] = []
        for platform, queue in self._queues.items():
            kept: deque[Job] = deque()
            for job in queue:
                instance = job.id
                (dropped if {instance, instance.any_instance} & done else kept).append(job)
            self._queues[platform] = kept
        return dropped

    def not_run(self) -> list[tuple[Job, str]]:
        """Jobs a stop (``max_failures``, ``time_budget``) removed from the
        queue before they ever ran, each with its note ("not run: ..."),
        since the last call; the caller records them as skipped. (A job
        queued again is dropped silently: its last attempt stands.)"""
        dropped, self._not_run = self._not_run, []
        return dropped

    def budget_wake(self) -> float | None:
        """The ``clock()`` time at which the longest queued test stops fitting
        the time budget (it is dropped at the next call after it); None
        without a budget or a queued test. A runner looks again then, so that
        machines and reservations nothing waits for any more go."""
        if self.deadline is None:
            return None
        self._drop_over_budget()
        longest = max(map(self.estimated_duration, self.pending()), default=None)
        return None if longest is None else self.deadline - longest

    def replacements(self, platform: str, possible: bool) -> None:
        """Say whether a lost machine of ``platform`` can still be replaced
        (the run's machine budget); free machines then need not wait for a
        retry that a replacement can take."""
        if possible:
            self._replaceable.add(platform)
        else:
            self._replaceable.discard(platform)

    def wants_machine(self, platform: str) -> bool:
        """Whether a new machine of ``platform`` would get work (to replace a lost one)."""
        self._drop_if_stopped()
        self._drop_over_budget()
        return bool(self._queues.get(platform))

    def no_machine_left(self, platform: str) -> list[Job]:
        """No machine can come for ``platform``: remove and return its queued jobs."""
        queue = self._queues.pop(platform, deque())
        return list(queue)

    # -- state --------------------------------------------------------------------

    def pending(self) -> list[Job]:
        """Queued jobs, in queue order per platform."""
        return [job for queue in self._queues.values() for job in queue]

    def running(self) -> dict[str, Job]:
        return dict(self._running)

    @property
    def machines(self) -> dict[str, Machine]:
        return dict(self._machines)

    @property
    def finished(self) -> bool:
        """Nothing queued and nothing running."""
        return not self._running and not any(self._queues.values())

    # -- internals ----------------------------------------------------------------

    def _count_failure(self) -> None:
        """One more final failure or error; at ``max_failures``, stop."""
        self._failures += 1
        if self.max_failures is None or self._failures < self.max_failures or self.stopped:
            return
        self.stopped = NOT_RUN_STOPPED.format(failures=self._failures)
        self._drop_if_stopped()

    def _drop_if_stopped(self) -> None:
        """After a stop, nothing stays queued (a test given back by a lost
        machine included)."""
        if self.stopped is None:
            return
        for platform, queue in self._queues.items():
            self._drop(queue, self.stopped)
            self._queues[platform] = deque()

    def _drop_over_budget(self) -> None:
        """Drop the queued jobs that would end after the budget's deadline."""
        if self.deadline is None:
            return
        now = self.clock()
        for platform, queue in self._queues.items():
            late = [job for job in queue if now + self.estimated_duration(job) > self.deadline]
            if late:
                self._drop(late, NOT_RUN_BUDGET)
                gone = {id(job) for job in late}
                self._queues[platform] = deque(job for job in queue if id(job) not in gone)

    def _drop(self, jobs: Iterable[Job], note: str) -> None:
        self._not_run.extend((job, note) for job in jobs if job.runs == 0)

    def _queues_for(self, machine: Machine) -> list[deque[Job]]:
        # The platform's own queue first; other queues only matter to a policy
        # whose ``applies`` lets a machine serve several platforms.
        own = self._queues.get(machine.platform)
        others = [q for p, q in self._queues.items() if p != machine.platform and q]
        return ([own] if own else []) + (others if self._overrides_applies() else [])

    def _overrides_applies(self) -> bool:
        return type(self).applies is not Scheduler.applies

    def _may_come_back_for(self, machine: Machine) -> bool:
        return any(
            self.applies(machine, job) and self.may_come_back(job)
            for machine_id, job in self._running.items()
            if machine_id != machine.id
        )

    def _another_machine_for(self, job: Job, machine: Machine) -> bool:
        return any(
            m.id != machine.id and m.id not in job.avoid and self.applies(m, job)
            for m in self._machines.values()
        )


def unfinished(result: Result) -> bool:
    """Whether ``--resume`` runs a test again whose latest own result is ``result``:
    it was interrupted, never ran for want of a machine (an infrastructure
    error with no machine recorded), or a stop kept it from starting
    (``not_run_by_stop``)."""
    if result.reason is Reason.INTERRUPTED or not_run_by_stop(result):
        return True
    return result.reason is Reason.INFRA and result.machine is None


def not_run_by_stop(result: Result) -> bool:
    """Whether ``result`` records a test that ``max_failures`` or
    ``time_budget`` kept from starting (skipped, no machine, their note)."""
    note = result.note or ""
    return (
        result.status is Status.SKIP
        and result.machine is None
        and (note == NOT_RUN_BUDGET or note.startswith(_NOT_RUN_STOPPED_PREFIX))
    )


def partition(
    jobs: Sequence[Job], shards: int, expected: Mapping[int, float] | None = None
) -> list[list[Job]]:
    """Split ``jobs`` into ``shards`` lists of about equal expected work (LPT).

    Deterministic: the same jobs and estimates always give the same split.
    ``expected`` maps a job's index to its expected seconds; a job without an
    estimate weighs the median of the known ones (1 when none is known, so
    that without any history each shard gets an equal count). Each shard keeps
    its jobs in their original order.
    """
    if shards < 1:
        raise ValueError("shards must be at least 1")
    expected = expected or {}
    known = [expected[i] for i in range(len(jobs)) if i in expected]
    fallback = statistics.median(known) if known else 1.0
    weights = [expected.get(i, fallback) for i in range(len(jobs))]
    loads = [0.0] * shards
    assignment: list[list[int]] = [[] for _ in range(shards)]
    # Longest first, ties in original order; each to the least loaded shard
    # (ties to the lowest shard number).
    for index in sorted(range(len(jobs)), key=lambda i: (-weights[i], i)):
        shard = min(range(shards), key=lambda s: (loads[s], s))
        loads[shard] += weights[index]
        assignment[shard].append(index)
    return [[jobs[i] for i in sorted(indices)] for indices in assignment]


def lower_bound(durations: Sequence[float], machines: int) -> float:
    """No schedule on ``machines`` machines can finish sooner than this."""
    if not durations:
        return 0.0
    return max(math.fsum(durations) / machines, max(durations))


__all__ = [
    "BUDGET_RESERVE_MAX",
    "BUDGET_RESERVE_SHARE",
    "LOCAL",
    "MAX_INFRA_RETRIES",
    "NOT_RUN_BUDGET",
    "NOT_RUN_STOPPED",
    "Decision",
    "History",
    "Job",
    "Next",
    "Outcome",
    "Scheduler",
    "budget_reserve",
    "duration_scale",
    "estimate",
    "lower_bound",
    "not_run_by_stop",
    "partition",
    "unfinished",
]
