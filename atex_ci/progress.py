"""How a run's progress reaches a person on stderr.

``ProgressSink`` is a subscriber of the run's event stream: it keeps the
counts (``RunStatus``) and turns events into two hooks: a line per event (a
test finished, a machine broke) and, every few seconds (``tick``), a status
summary. ``StderrProgress`` shows them as a person reading them expects:

- on a terminal, finished tests scroll by and one live status line stays at
  the bottom (done/total, failures, ETA, then what each machine runs), redrawn
  in place and cut at the terminal's width;
- elsewhere (a CI log), one line per finished test and a summary line every
  ``LOG_INTERVAL`` seconds, so a long test is visibly still running.

Every text goes through ``stderr_line``: control characters in test names are
escaped, never sent raw to the terminal.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from .duration import format_clock
from .errors import ConfigError
from .events import (
    Event,
    MachineChecked,
    MachineLost,
    MachineNotReplaced,
    MachineReserved,
    Notice,
    PhaseFailed,
    PlanAborted,
    ReservationFailed,
    RunStarted,
    TestFinished,
    TestNotRun,
    TestRequeued,
    TestStarted,
)
from .report.text import progress_note, stderr_line

if TYPE_CHECKING:
    from .schedule import Scheduler

#: Seconds between summary lines in a log: often enough to see that a long
#: test still runs, rare enough not to drown the finished-test lines.
LOG_INTERVAL = 30.0

#: Seconds between redraws of the live status line on a terminal.
TERMINAL_INTERVAL = 1.0

#: Machines named in the status; the rest are counted ("+N more").
STATUS_MACHINES = 4


@dataclass
class RunStatus:
    """The counts a status line shows; the orchestrator updates them."""

    total: int = 0
    done: int = 0
    failed: int = 0
    #: machine id -> (test name, start time on ``time.monotonic``'s clock)
    running: dict[str, tuple[str, float]] = field(default_factory=dict)
    #: Durations of finished tests, for the ETA when no history is known.
    durations: list[float] = field(default_factory=list)
    #: Expected seconds of work still queued (from the history), if known.
    expected_left: float | None = None
    machines: int = 1

    def summary(self, now: float) -> str:
        """One line: ``12/40 done, 2 failed, ETA 1m20s, 3 running (local-1: /t/a 4s, ...)``.

        The counts and the ETA come first: a terminal cuts the line at its
        width, and what each machine runs is what may go.
        """
        parts = [f"{self.done}/{self.total} done"]
        if self.failed:
            parts.append(f"{self.failed} failed")
        eta = self.eta()
        if eta is not None:
            parts.append(f"ETA {format_clock(eta)}")
        if self.running:
            shown = sorted(self.running.items())[:STATUS_MACHINES]
            busy = ", ".join(
                f"{m}: {name} {format_clock(now - start)}" for m, (name, start) in shown
            )
            more = len(self.running) - len(shown)
            parts.append(
                f"{len(self.running)} running ({busy}{f', +{more} more' if more > 0 else ''})"
            )
        return "atex-ci: " + ", ".join(parts)

    def eta(self) -> float | None:
        """Seconds until the queue is done, if there is anything to go on."""
        left = self.total - self.done
        if left <= 0:
            return None
        if self.expected_left is not None:
            work = self.expected_left
        elif self.durations:
            work = statistics.median(self.durations) * left
        else:
            return None
        return work / max(1, self.machines)


def expected_left(scheduler: Scheduler, elapsed: dict[str, float]) -> float:
    """Seconds of work left, from the history: queued tests (unknown ones as
    the median of the known) plus what the running tests are still expected
    to take (``elapsed``: machine id -> seconds its test has run)."""
    known = [d for j in scheduler.pending() if (d := scheduler.expected_duration(j))]
    fallback = statistics.median(known) if known else 0.0
    left = sum(scheduler.expected_duration(j) or fallback for j in scheduler.pending())
    for machine_id, job in scheduler.running().items():
        expected = scheduler.expected_duration(job) or fallback
        left += max(0.0, expected - elapsed.get(machine_id, 0.0))
    return left


class ProgressSink:
    """The run's events as lines for a person (``line``), and the counts of
    the status summary; a subscriber of the run's event stream."""

    def __init__(
        self, line: Callable[[str], None] | None = None, *, show_starts: bool = True
    ) -> None:
        self.line = line or (lambda text: None)
        #: Whether a test's start gets a line too (the status says what runs where).
        self.show_starts = show_starts
        self.status = RunStatus()

    def __call__(self, event: Event) -> None:
        handler = _LINES.get(type(event))
        if handler is not None:
            handler(self, event)

    def summary(self, expected_left: float | None, machines: int) -> str:
        """The status line now (``expected_left``: queued work from the history)."""
        self.status.expected_left = expected_left
        self.status.machines = max(1, machines)
        return self.status.summary(time.monotonic())

    async def tick(
        self,
        report: Callable[[str], None],
        interval: float,
        estimate: Callable[[dict[str, float]], tuple[float | None, int]],
    ) -> None:
        """Hand ``report`` a summary every ``interval`` seconds until cancelled;
        ``estimate`` gets each running machine's elapsed seconds and says the
        expected work left (None: unknown) and the machines at work."""
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            elapsed = {m: now - start for m, (_, start) in self.status.running.items()}
            report(self.summary(*estimate(elapsed)))

    # -- what each event says ------------------------------------------------------

    def _reserved(self, e: MachineReserved) -> None:
        if e.replaces is not None:
            self.line(f"atex-ci: machine {e.machine.id} replaces {e.replaces.id}")
        elif not e.machine.is_local:  # local slots come at once: no news
            self.line(f"atex-ci: reserved {e.machine.id} ({e.machine.address}); it takes tests now")

    def _checked(self, e: MachineChecked) -> None:
        if e.healthy:
            self.line(f"atex-ci: machine {e.machine.id} is healthy after {e.test.name}")
        else:
            self.line(f"atex-ci: machine {e.machine.id} failed its health check: {e.note}")

    def _started(self, e: TestStarted) -> None:
        self.status.running[e.machine.id] = (e.test.name, time.monotonic())
        if self.show_starts:
            self.line(f"atex-ci: start  {e.test.name} on {e.machine.id}")

    def _finished(self, e: TestFinished) -> None:
        status, own = self.status, e.result
        status.done += 1
        status.running.pop(e.machine.id, None)
        if own is None:
            return
        status.failed += own.status.is_failure
        status.durations.append(own.duration or 0.0)
        note = f" - {progress_note(own.note)}" if own.note and own.status.is_failure else ""
        self.line(
            f"atex-ci: {own.status.upper():5} {e.test.name} on {e.machine.id} "
            f"({own.duration or 0:.2f}s) [{status.done}/{status.total}]{note}"
        )

    def _requeued(self, e: TestRequeued) -> None:
        self.status.total += 1
        self.line(f"atex-ci: again  {e.test.name} ({e.note})")


def _run_started(sink: ProgressSink, e: RunStarted) -> None:
    sink.status.total = e.total


def _not_run(sink: ProgressSink, e: TestNotRun) -> None:
    sink.status.done += 1


_LINES: dict[type[Any], Callable[[ProgressSink, Any], None]] = {
    RunStarted: _run_started,
    TestNotRun: _not_run,
    Notice: lambda p, e: p.line(e.text),
    MachineReserved: ProgressSink._reserved,
    ReservationFailed: lambda p, e: p.line(
        f"atex-ci: reserving for platform {e.platform} failed: {e.note}"
    ),
    MachineNotReplaced: lambda p, e: p.line(
        f"atex-ci: machine {e.machine.id} is not replaced: {e.note}"
    ),
    MachineLost: lambda p, e: p.line(f"atex-ci: machine {e.machine.id} is out of use: {e.note}"),
    MachineChecked: ProgressSink._checked,
    PlanAborted: lambda p, e: p.line(f"atex-ci: {e.test.name} aborted plan {e.test.plan}"),
    PhaseFailed: lambda p, e: p.line(
        f"atex-ci: finish of plan {e.plan} failed on {e.machine.id}: {e.note}"
    ),
    TestStarted: ProgressSink._started,
    TestFinished: ProgressSink._finished,
    TestRequeued: ProgressSink._requeued,
}


class StderrProgress:
    """Event lines and the status summary on stderr, live on a terminal."""

    def __init__(self, stream: TextIO | None = None, *, live: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.interval = TERMINAL_INTERVAL if self.live else LOG_INTERVAL
        self._status = ""

    def line(self, text: str) -> None:
        """An event (a finished test, a broken machine): its own line."""
        self._clear()
        print(stderr_line(text), file=self.stream, flush=not self.live)
        self._draw()

    def status(self, text: str) -> None:
        """The periodic summary: redrawn in place on a terminal, a line in a log."""
        if not self.live:
            print(stderr_line(text), file=self.stream, flush=True)
            return
        self._clear()
        width = shutil.get_terminal_size((100, 24)).columns
        self._status = stderr_line(text)[: max(10, width - 1)]
        self._draw()

    def close(self) -> None:
        """Remove the live line (before the run's last words are printed)."""
        self._clear()
        self._status = ""
        self.stream.flush()

    def _clear(self) -> None:
        if self.live and self._status:
            self.stream.write("\r\x1b[K")

    def _draw(self) -> None:
        if self.live and self._status:
            self.stream.write(self._status)
            self.stream.flush()


def status_interval(default: float) -> float:
    """Seconds between status summaries: ATEX_CI_STATUS_INTERVAL overrides the default
    (30 s in a log, 1 s on a terminal); for tests and impatient people."""
    text = os.environ.get("ATEX_CI_STATUS_INTERVAL")
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0.01 <= value <= 86400:
        raise ConfigError(f"ATEX_CI_STATUS_INTERVAL={text!r}: expected seconds, e.g. 30")
    return value


__all__ = [
    "LOG_INTERVAL",
    "TERMINAL_INTERVAL",
    "ProgressSink",
    "RunStatus",
    "StderrProgress",
    "expected_left",
    "status_interval",
]
