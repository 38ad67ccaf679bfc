"""From collected results to the lines of results.jsonl: one test run's outcome.

``results.py`` decides what the results are (merging, fallback, tmt's
``result:`` modes); this module turns them into ``Result`` records for the
run directory: the files each names (attached through the artifact sink, so
a name that cannot be kept is the test's error, never the run's), the size
caps of a result line, and the test's run facts (machine, times, exit code).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..duration import parse_result_duration
from ..model import Reason, Result, Status, Test
from ..rundir import now_iso
from .artifacts import ArtifactSink
from .control import ControlError
from .results import Collected
from .staging import TEST_DATA_ARCHIVE

#: A result line longer than this (note and extra keys, once partial results
#: are merged) is cut down: results.jsonl lines are read whole by every
#: reporter, and no real result needs more.
MAX_RESULT_LINE = 1024 * 1024
#: Characters of a note kept in a result line: as much as one result's JSON
#: may hold on the control stream (Limits.max_result_json), so a note sent
#: there is always kept whole; a custom results file can hold longer ones.
MAX_NOTE = 1024 * 1024


@dataclass
class TestOutcome:
    """What happened to one test run, as facts: its results, whether the
    machine was lost, whether the test aborted its plan. What follows (keep
    the machine, run the test again) is the scheduler's decision."""

    results: list[Result]
    #: The machine was lost while the test ran (connection gone, not back after
    #: a reboot), or atex-ci cannot tell what state the test left it in (the
    #: wrapper vanished, an internal error whose test could not be ended). A
    #: timeout alone is not a loss: the results say it timed out.
    machine_lost: bool = False
    #: The test asked to abort the rest of its plan (tmt-abort).
    abort: bool = False


@dataclass(frozen=True)
class RunFacts:
    """What every result of one test run records besides the result itself."""

    test: Test
    platform: str
    attempt: int
    machine: str
    start: str
    duration: float
    exit_code: int | None

    def result(
        self,
        *,
        name: str | None,
        status: Status,
        note: str | None,
        files: list[str],
        reason: Reason | None,
        extra: dict[str, Any],
        duration: float | None = None,
    ) -> Result:
        """One record; ``duration`` is a sub-result's own (else the run's)."""
        return Result(
            test=self.test.name,
            plan=self.test.plan,
            name=name,
            platform=self.platform,
            status=status,
            attempt=self.attempt,
            machine=self.machine,
            start=self.start,
            end=now_iso(),
            duration=round(self.duration if duration is None else duration, 3),
            note=note,
            files=files,
            exit_code=self.exit_code if name is None else None,
            reason=reason,
            extra=extra,
            serial_number=self.test.serial_number,
        )


def record(facts: RunFacts, collected: list[Collected], sink: ArtifactSink) -> TestOutcome:
    """The Result records of ``collected``, with their files attached.

    What the test sent but cannot be kept (a file or 'testout' name the file
    system refuses, keys over MAX_RESULT_LINE) makes the test's own result an
    error that says exactly what. Raises StorageError if the disk refuses.
    """
    results = []
    problems: list[str] = []
    abort = False
    data_files = sink.data_files()
    for item in collected:
        label = f"result {item.name!r}" if item.name else "the test's result"
        if item.problem:
            problems.append(f"{label}: {item.problem}")
        files = []
        for name in item.files:
            if name == TEST_DATA_ARCHIVE:
                continue
            try:
                files.append(sink.relative(name))
            except (ControlError, ValueError, OSError) as exc:
                problems.append(f"{label}: file {name!r} not kept: {exc}")
        if item.testout:
            try:
                files.append(sink.attach_output(item.testout))
            except (ControlError, ValueError, OSError) as exc:
                why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                problems.append(
                    f"{label}: cannot attach the output as 'testout' {item.testout!r}: {why}"
                )
        if item.name is None:
            captured = [sink.output_file()] if sink.opened else []
            files = [*captured, *files, *data_files]
        if item.extra.get("abort") is True:
            abort = True
        note, extra = item.note, item.extra
        # A sub-result that says how long it took keeps that (tmt keeps it too);
        # the test's own result is the run's time.
        own_duration = None
        if item.name is not None and "duration" in extra:
            own_duration = parse_result_duration(extra["duration"])
            if own_duration is not None:
                extra = {k: v for k, v in extra.items() if k != "duration"}
        if note is not None and len(note) > MAX_NOTE:
            note = f"{note[:MAX_NOTE]}... (note cut at {MAX_NOTE} characters)"
        if extra and len(json.dumps(extra, default=str)) > MAX_RESULT_LINE:
            problems.append(
                f"{label}: its other keys were dropped: more than {MAX_RESULT_LINE} bytes"
            )
            extra = {}
        results.append(
            facts.result(
                name=item.name,
                status=item.status,
                note=note,
                files=list(dict.fromkeys(files)),
                reason=item.reason,
                extra=extra,
                duration=own_duration,
            )
        )
    if problems:
        own = next((r for r in results if r.name is None), None)
        if own is not None:
            # What the test sent could not all be kept: the test's fault, and
            # its own result says exactly what.
            before = f"before that the result was {own.status}" + (
                f": {own.note}" if own.note else ""
            )
            note = "; ".join([*problems[:5], before])
            if own.status is not Status.ERROR or own.reason is None:
                own.reason = Reason.TEST
            own.status = Status.ERROR
            own.note = note[:MAX_NOTE]
    return TestOutcome(results=results, abort=abort)


def internal_error(facts: RunFacts, note: str) -> TestOutcome:
    """The outcome when atex-ci itself failed on this test's data: one error
    result of that test saying so (running it again would fail the same way),
    and nothing else at risk."""
    result = facts.result(
        name=None,
        status=Status.ERROR,
        note=note[:MAX_NOTE],
        files=[],
        reason=Reason.TEST,
        extra={},
    )
    return TestOutcome(results=[result])


def not_run(test: Test, platform: str, attempt: int, status: Status, note: str) -> Result:
    """The record of a test that will not run (no machine left, its plan
    aborted): no machine, no times; an error is the infrastructure's."""
    return Result(
        test=test.name,
        plan=test.plan,
        platform=platform,
        status=status,
        attempt=attempt,
        note=note,
        reason=Reason.INFRA if status is Status.ERROR else None,
        serial_number=test.serial_number,
    )


__all__ = [
    "MAX_NOTE",
    "MAX_RESULT_LINE",
    "RunFacts",
    "TestOutcome",
    "internal_error",
    "not_run",
    "record",
]
