"""What a run is asked to do (``RunOptions``: limits, machines, scheduling,
selection, the event stream's sinks) and what it did (``RunSummary``); the
``Orchestrator`` takes the one and returns the other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .events import Sink
from .execute.executor import Limits
from .model import Result
from .pool import PoolLimits
from .provision.base import Provisioner
from .recorder import exit_code
from .schedule import History, Scheduler
from .selection import Selection


@dataclass
class RunOptions:
    limits: Limits = field(default_factory=Limits)
    #: Local slots to reserve when the run directory has no machines.
    local_slots: int | None = None
    #: Skip tests that already have a final result in results.jsonl.
    resume: bool = False
    #: Called with one human-readable progress line per event (a test started
    #: or finished, a machine broke, a test queued again; ``progress.ProgressSink``).
    progress: Callable[[str], None] | None = None
    #: Whether ``progress`` also gets a line when a test starts.
    show_starts: bool = True
    #: Called every ``status_interval`` seconds with a one-line summary
    #: (done/total, failures, what each machine runs, ETA); None: never.
    status: Callable[[str], None] | None = None
    status_interval: float = 30.0
    #: The scheduling policy: a Scheduler subclass (or any callable taking
    #: ``(jobs, history=..., max_reruns=...)`` and returning a Scheduler).
    scheduler_factory: Callable[..., Scheduler] = Scheduler
    #: Durations of earlier runs: orders the queue longest first, balances shards.
    history: History | None = None
    #: Times a failed or errored test is run again (preferring another machine).
    max_reruns: int = 0
    #: ``(index, count)``, 1-based: run only this share of the tests (``--shard I/N``).
    shard: tuple[int, int] | None = None
    #: Provisioners this run reserves from itself, with how many machines each,
    #: besides the machines recorded in the run directory. Each machine takes
    #: tests the moment it is ready and is released when nothing is left for it.
    sources: list[tuple[Provisioner, int]] = field(default_factory=list)
    #: The machine budget: machines in all, failed setups (``--max-machines``...).
    pool: PoolLimits = field(default_factory=PoolLimits)
    #: Keep the machines recorded by ``atex-ci reserve`` when nothing is left
    #: for them (for another ``run``); by default they are released at once.
    keep_machines: bool = False
    #: Start over in a run directory that already holds a run's results: its
    #: files move to ``previous/N/`` first (without it, such a directory is
    #: refused unless ``resume``).
    restart: bool = False
    #: What narrows the jobs (``--shard`` with a recorded split,
    #: ``--rerun-failed``); None: ``shard`` alone.
    selection: Selection | None = None
    #: More keyword options of the scheduling policy (``max_failures``,
    #: ``time_budget``...); the scheduler hands back what they keep from
    #: running (``Scheduler.not_run``), recorded as skipped.
    policy: dict[str, Any] = field(default_factory=dict)
    #: Subscribers of the run's event stream besides the Recorder and the
    #: progress display (``events.Sink``: a dashboard upload, a results log).
    sinks: list[Sink] = field(default_factory=list)


@dataclass
class RunSummary:
    """What a run did (``results``: this invocation's) and what the run
    directory now says about the selected tests (``final``: the last attempt of
    each, including earlier invocations', e.g. before ``--resume``)."""

    results: list[Result]
    final: list[Result] = field(default_factory=list)
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        """130 interrupted; else what the final results mean (``recorder.exit_code``):
        0 all passed, 1 test failures, 3 infrastructure errors."""
        if self.interrupted:
            return 130
        return exit_code(self.final or self.results)


__all__ = ["RunOptions", "RunSummary"]
