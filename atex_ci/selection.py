"""Which of the discovered jobs a run runs: its share of a shard split
(``--shard``, recorded in split.json and used again by a re-run), and with
``--rerun-failed PREV`` only the tests whose final result in PREV was a
failure, an error or "not run".

The order of the jobs is kept: the scheduler orders them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from . import split as splits
from .errors import ConfigError
from .model import Result, TestId, as_read_back
from .recorder import Recorder, final_results, standing_result
from .rundir import RunDir
from .schedule import History, Job

log = logging.getLogger("atex_ci")

#: The note every "not run" record starts with (no machine left, plan aborted,
#: a stop of the run): such a test gets its turn in a re-run.
NOT_RUN_PREFIX = "not run"
#: The tests a run narrowed by ``--rerun-failed`` selected, and the run
#: directory they came from (``rerun_of``): ``--resume`` runs the same ones,
#: a re-run of this run knows what it selected, ``collect`` expects a re-run's
#: results to differ from the earlier ones (no conflicts).
SELECTION_JSON = "selection.json"
SELECTION_FORMAT = "atex-ci-selection"
RERUN_OF = "rerun_of"


@dataclass(frozen=True)
class Selection:
    """What narrows a run's jobs (``RunOptions``)."""

    #: ``(index, count)``, 1-based: run only this share (``--shard I/N``).
    shard: tuple[int, int] | None = None
    #: A run directory whose recorded split the shard uses (``--split-from``).
    split_from: Path | None = None
    #: A run directory whose failed and not-run tests are the ones to run
    #: (``--rerun-failed``); its split, if any, is the split of this run.
    rerun_failed: Path | None = None
    #: Where the history came from, for split.json.
    history_source: str | None = None


def parse_shard(text: str) -> tuple[int, int]:
    """``--shard I/N`` (1-based) as (I, N); ConfigError if malformed."""
    index, sep, count = text.partition("/")
    try:
        part = (int(index), int(count))
    except ValueError:
        part = (0, 0)
    if not sep or not 1 <= part[0] <= part[1]:
        raise ConfigError(f"invalid --shard {text!r}: expected I/N with 1 <= I <= N, e.g. 2/4")
    return part


@dataclass(frozen=True)
class Rerun:
    """What ``--rerun-failed PREV`` takes from PREV."""

    keys: frozenset[TestId]
    #: PREV's recorded split and its own share, if it was a shard.
    split: tuple[splits.Split, int | None] | None


def select_jobs(
    recorder: Recorder, jobs: list[Job], history: History, selection: Selection, resume: bool
) -> list[Job]:
    """The jobs this run runs, recording its split (split.json) and a
    re-run's selection (selection.json) through ``recorder``.

    The split comes from ``rundir`` itself on ``resume``, else from
    ``--split-from``, else from ``--rerun-failed``'s run; only without any
    recorded split is it computed from ``history``.
    """
    rundir = recorder.rundir
    rerun = failed_in(selection.rerun_failed) if selection.rerun_failed else None
    if rerun is not None:
        _check_rerun(jobs, rerun.keys, selection.rerun_failed)
    narrowed = read_selection(rundir.path) if resume and rerun is None else None
    recorded = _recorded_split(rundir, selection, rerun, resume)
    shard = selection.shard
    if shard is None and recorded is not None and recorded[1] is not None:
        shard = (recorded[1], recorded[0].count)  # the earlier run's own share
    if shard is not None:
        index, count = shard
        if recorded is not None and recorded[0].count != count:
            raise ConfigError(
                f"--shard {index}/{count}: the recorded split has {recorded[0].count} shares"
            )
        split = (
            recorded[0]
            if recorded is not None
            else splits.compute(jobs, count, history, selection.history_source)
        )
        splits.write(recorder, split, index)
        jobs = split.jobs(jobs, index)
    if rerun is not None:
        jobs = [job for job in jobs if _among(job, rerun.keys)]
        _write_selection(recorder, jobs, selection.rerun_failed)
    elif narrowed is not None:
        jobs = [job for job in jobs if _among(job, narrowed[1])]
    return jobs


def _among(job: Job, keys: frozenset[TestId]) -> bool:
    """Whether ``keys`` name ``job`` (a key without a serial number, from
    results of an older version, names every instance of its test)."""
    key = TestId.of(job.platform, job.test)
    return key in keys or key.any_instance in keys


def _write_selection(recorder: Recorder, jobs: list[Job], prev: Path | None) -> None:
    keys = [TestId.of(job.platform, job.test) for job in jobs]
    recorder.selection(
        SELECTION_JSON,
        {
            "format": SELECTION_FORMAT,
            "version": 1,
            RERUN_OF: str(prev),
            "tests": [splits.key_record(key) for key in keys],
        },
    )


def read_selection(run_dir: Path) -> tuple[str, frozenset[TestId]] | None:
    """The run directory a ``--rerun-failed`` run in ``run_dir`` re-ran and the
    tests it selected; None for a run that was not one. ConfigError naming
    the file when it is damaged."""
    path = run_dir / SELECTION_JSON
    data = splits.read_document(path)
    if data is None:
        return None
    try:
        if not isinstance(data, dict) or data.get("format") != SELECTION_FORMAT:
            raise ValueError(f"format is not {SELECTION_FORMAT!r}")
        tests = data.get("tests")
        if not isinstance(tests, list):
            raise ValueError("'tests' must be a list")
        return str(data.get(RERUN_OF)), frozenset(splits.parse_key(t) for t in tests)
    except ValueError as exc:
        raise ConfigError(f"{path} is damaged: {exc}") from None


def _recorded_split(
    rundir: RunDir, selection: Selection, rerun: Rerun | None, resume: bool
) -> tuple[splits.Split, int | None] | None:
    own = splits.read(rundir.path) if resume else None
    if own is not None:
        return own
    if selection.split_from is not None:
        found = splits.read(selection.split_from)
        if found is None:
            raise ConfigError(
                f"--split-from {selection.split_from}: no {splits.SPLIT_JSON} there "
                "(only a run with --shard records its split)"
            )
        return found
    return rerun.split if rerun is not None else None


def failed_in(prev: Path) -> Rerun:
    """The test instances of ``prev`` to run again: those whose final result
    is fail or error, was recorded "not run", or is missing although ``prev``
    selected the test (it never got to run: the run was cut short)."""
    rundir = RunDir.open(prev)
    results, problems = rundir.read_results_checked()
    for problem in problems[:10]:
        log.warning("%s", problem)
    by_key: dict[TestId, list[Result]] = {}
    for result in final_results(results):
        by_key.setdefault(TestId.of_result(result), []).append(result)
    keys = {key for key, final in by_key.items() if to_rerun(standing_result(final))}
    recorded = splits.read(rundir.path)
    keys |= without_result(selected_keys(rundir, recorded), by_key)
    return Rerun(frozenset(keys), recorded)


def without_result(selected: set[TestId], recorded: Iterable[TestId]) -> set[TestId]:
    """The keys of ``selected`` that no key of ``recorded`` stands for (a
    result without a serial number, written by an older version, stands for
    every instance of its test)."""
    recorded = set(recorded)
    old_style = {key[:3] for key in recorded if key[3] is None}
    return {key for key in selected if key not in recorded and key[:3] not in old_style}


def to_rerun(result: Result | None) -> bool:
    """Whether a test whose final standing result is ``result`` (None: it has
    none) runs again: fail, error, or a "not run" record."""
    return result is None or result.status.is_failure or is_not_run(result)


def is_not_run(result: Result) -> bool:
    """Whether ``result`` records a test that never ran (no machine was left,
    its plan was aborted, a stop of the run kept it from starting)."""
    return result.machine is None and (result.note or "").startswith(NOT_RUN_PREFIX)


def selected_keys(rundir: RunDir, recorded: tuple[splits.Split, int | None] | None) -> set[TestId]:
    """The test instances ``rundir``'s run selected: what a ``--rerun-failed``
    run re-ran, else its share of its split (every share of a collected one),
    else its tests.json."""
    narrowed = read_selection(rundir.path)
    if narrowed is not None:
        return set(narrowed[1])
    if recorded is not None:
        split, share = recorded
        return {key for key, s in split.shares.items() if share is None or s == share}
    return {
        TestId.of(platform, test)
        for platform, plans in rundir.read_tests().items()
        for plan in plans
        for test in plan.tests
    }


def _check_rerun(jobs: list[Job], keys: frozenset[TestId], prev: Path | None) -> None:
    """ConfigError when a platform of ``keys`` has no job among ``jobs``
    (every discovered job: the run's machines are of other platforms); a
    warning for tests of ``keys`` no longer discovered."""
    platforms = {as_read_back(job.platform) for job in jobs}
    missing = sorted({key[0] for key in keys} - platforms)
    if missing:
        raise ConfigError(
            f"--rerun-failed {prev}: tests to run again on platform(s) {', '.join(missing)}, "
            f"but this run's machines are of platform(s) {', '.join(sorted(platforms))}; "
            "reserve machines of the same platforms (--platform NAME)"
        )
    found = {TestId.of(job.platform, job.test) for job in jobs}
    tests = {key[:3] for key in found}
    gone = sum(key not in found and (key[3] is not None or key[:3] not in tests) for key in keys)
    if gone > 0:
        log.warning(
            "--rerun-failed %s: %d test(s) to run again are no longer selected "
            "(removed from the tree or filtered out)",
            prev,
            gone,
        )


__all__ = [
    "NOT_RUN_PREFIX",
    "RERUN_OF",
    "SELECTION_JSON",
    "Rerun",
    "Selection",
    "failed_in",
    "is_not_run",
    "parse_shard",
    "read_selection",
    "select_jobs",
    "selected_keys",
    "to_rerun",
    "without_result",
]
