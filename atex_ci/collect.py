"""Merge run directories (CI matrix shards, a rerun job) into one, and export history.

Sources are merged in the order given, and each is untrusted (it may come
from another job, another machine, anyone):

* every results line is validated by the reader (``RunDir.read_results_checked``);
  a damaged or mistyped line is skipped and named in a warning;
* a ``files`` entry that is absolute, has a ``..`` component or is not a
  regular file reached without any symbolic link inside the source's
  artifacts/ is not copied (and dropped from the merged result, with a
  warning): nothing is ever read from or written to outside the two
  artifacts trees;
* files are streamed, never read whole.

A test attempt that already exists in the destination becomes the next
attempt number, with its artifacts moved along, so nothing is overwritten and
reporters, which keep the last attempt of each test instance
(``report/summary.py``), show the result of the later source; an earlier
failed attempt makes the test flaky. The same test instance finishing with
different statuses in two sources is a *conflict*: reported, and the later
source wins.

A source that re-ran another's failures (``run --rerun-failed``) is a later
attempt by design: a test that failed before and passes there is flaky, and
no conflict.

After merging, ``summary.json`` (totals, flaky tests, conflicts) and
``history.json`` (per-test durations, for scheduling by history) are written
to the destination; their formats are in docs/run-directory.md. The history
takes durations only from complete runs (``incomplete``): a run cut short
(interrupted, crashed, stopped by --max-failures or --time-budget, tests left
without a machine) would teach it the durations of whatever happened to run.
When the sources record one and the same shard split, it is kept
(``split.json``), so a re-run of a share of the merged run uses it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import split as splits
from . import untrusted_json
from .errors import ConfigError
from .model import Reason, Result, TestId
from .recorder import Recorder, RunState, final_results, standing_result
from .report.summary import flaky_attempts, totals
from .rundir import ARTIFACTS, RunDir, atomic_write_json, now_iso
from .selection import is_not_run, read_selection, selected_keys, without_result

SUMMARY_JSON = "summary.json"
HISTORY_JSON = "history.json"
HISTORY_FORMAT = "atex-ci-history"
SUMMARY_FORMAT = "atex-ci-summary"
FORMAT_VERSION = 1
# Durations kept per test in history.json: enough for a robust estimate,
# few enough that the file stays small for tens of thousands of tests.
HISTORY_KEEP = 10
# Files copied per result: a source listing millions cannot stall collect.
MAX_FILES_PER_RESULT = 10_000
# What is read of a history.json (checked before reading): one test's entry
# is about 200 bytes, so 20,000 tests are 4 MB; a history from anywhere (a CI
# cache, an artifact) cannot cost more memory than this allows.
MAX_HISTORY_BYTES = 64 * 1024 * 1024


@dataclass
class CollectOutcome:
    """What ``collect`` did: results merged, and one line per problem or conflict."""

    merged: int = 0
    warnings: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)


def collect(dest: Path, sources: Sequence[Path]) -> CollectOutcome:
    """Merge ``sources`` into ``dest`` (created if needed); write summary.json and history.json.

    Raises ConfigError if a source is not a run directory or is ``dest``
    itself; nothing is written to ``dest`` until every source has been
    checked. Problems inside a source (damaged lines, unsafe file paths) are
    warnings in the outcome, never exceptions.
    """
    opened = [RunDir.open(src) for src in sources]
    for src in opened:
        if dest.exists() and src.path.resolve() == Path(dest).resolve():
            raise ConfigError(f"cannot collect {src.path} into itself")
    out = RunDir.open_or_create(dest)
    outcome = CollectOutcome()
    with out.locked():
        recorder = Recorder(out)  # the destination's bookkeeping goes through it
        existing, problems = out.read_results_checked()
        outcome.warnings += problems
        attempts = recorder.attempts
        final_by_source: dict[TestId, tuple[str, str]] = {
            TestId.of_result(r): (str(out.path), str(r.status))
            for r in final_results(existing)
            if r.name is None
        }
        platforms: set[str] = {
            p for p in (out.read_run().get("platforms") or []) if isinstance(p, str)
        }
        history = _own_history(out, existing)
        found_splits = [s for s in map(_split_of, [out, *opened]) if s is not None]
        for src in opened:
            results, problems = src.read_results_checked()
            outcome.warnings += problems
            renumbered: dict[tuple[TestId, int], int] = {}
            for result in results:
                key = TestId.of_result(result)
                old = (key, result.attempt)
                if old not in renumbered:
                    renumbered[old] = attempts.next(key)
                outcome.warnings += _merge_one(src, recorder, result, renumbered[old])
            if read_selection(src.path) is None:
                _find_conflicts(src, results, final_by_source, outcome)
            else:
                _later_attempts(src, results, final_by_source)
            _add_history(history, src, results, outcome)
            outcome.merged += len(results)
            platforms.update(p for p in src.read_run().get("platforms") or [] if isinstance(p, str))
            platforms.update(r.platform for r in results)
            _copy_events(src, recorder)
            recorder.event("collected", source=str(src.path), results=len(results))
        recorder.state(RunState.COLLECTED, platforms=sorted(platforms))
        merged = out.read_results()
        write_summary(out, merged, [str(s.path) for s in opened], outcome)
        write_history(out, history, _last_statuses(merged))
        _keep_split(recorder, found_splits, outcome)
    return outcome


def incomplete(rundir: RunDir, results: list[Result]) -> str | None:
    """Why ``rundir``'s run (its ``results``) is not complete, or None if it is:
    it did not finish, a test was interrupted or recorded "not run" (no
    machine, a stop of the run), or a test it selected has no result."""
    state = rundir.read_run().get("state")
    if state in (RunState.RUNNING, RunState.INTERRUPTED, RunState.CRASHED):
        return f"its state is {state!r}"
    by_key: dict[TestId, list[Result]] = {}
    for result in final_results(results):
        by_key.setdefault(TestId.of_result(result), []).append(result)
    for final in by_key.values():
        own = standing_result(final)
        if own is not None and own.reason is Reason.INTERRUPTED:
            return f"{own.test} was interrupted"
        if own is not None and is_not_run(own):
            return f"{own.test}: {own.note or 'not run'}"
    missing = without_result(selected_keys(rundir, splits.read(rundir.path)), by_key)
    if missing:
        return f"{len(missing)} selected test(s) have no result"
    return None


def _own_history(out: RunDir, existing: list[Result]) -> dict[tuple[str, str, str], list[float]]:
    """The destination's durations before this merge: its history.json, else
    its own results if they are a complete run's."""
    if (out.path / HISTORY_JSON).is_file():
        return read_history(out.path / HISTORY_JSON)
    if existing and incomplete(out, existing) is None:
        return history_from_results(existing)[0]
    return {}


def _add_history(
    history: dict[tuple[str, str, str], list[float]],
    src: RunDir,
    results: list[Result],
    outcome: CollectOutcome,
) -> None:
    """Add ``src``'s durations: its history.json (a collected run's, complete
    runs only already), else its results when it is a complete run."""
    if (src.path / HISTORY_JSON).is_file():
        durations = read_history(src.path / HISTORY_JSON)
    else:
        why = incomplete(src, results)
        if why is not None:
            outcome.warnings.append(
                f"{src.path}: not a complete run ({why}); its durations stay out of {HISTORY_JSON}"
            )
            return
        durations = history_from_results(results)[0]
    for key, values in durations.items():
        history[key] = (history.get(key, []) + values)[-HISTORY_KEEP:]


def _split_of(src: RunDir) -> splits.Split | None:
    found = splits.read(src.path)
    return found[0] if found else None


def _keep_split(recorder: Recorder, found: list[splits.Split], outcome: CollectOutcome) -> None:
    """Record the sources' split when they all record the same one."""
    if not found:
        return
    split = splits.same(found)
    if split is None:
        outcome.warnings.append(
            f"the sources record different shard splits; {splits.SPLIT_JSON} is not written"
        )
        return
    splits.write(recorder, split, None)


def _later_attempts(
    src: RunDir, results: list[Result], final_by_source: dict[TestId, tuple[str, str]]
) -> None:
    """A re-run's final results stand without conflict (``_find_conflicts``)."""
    for result in final_results(results):
        if result.name is None:
            final_by_source[TestId.of_result(result)] = (str(src.path), str(result.status))


def _find_conflicts(
    src: RunDir,
    results: list[Result],
    final_by_source: dict[TestId, tuple[str, str]],
    outcome: CollectOutcome,
) -> None:
    for result in final_results(results):
        if result.name is not None:
            continue
        key = TestId.of_result(result)
        earlier = final_by_source.get(key)
        status = str(result.status)
        if earlier is not None and earlier[1] != status:
            outcome.conflicts.append(
                f"{result.test} ({result.plan or '-'}, {result.platform}): {earlier[1]} in "
                f"{earlier[0]}, {status} in {src.path}; the later one wins"
            )
        final_by_source[key] = (str(src.path), status)


def _copy_events(src: RunDir, recorder: Recorder) -> None:
    """The source's timeline, so the merged HTML report shows every shard's machines."""
    for event in src.read_events():
        if isinstance(event.get("event"), str) and isinstance(event.get("time"), str):
            fields = {k: v for k, v in event.items() if k not in ("time", "event")}
            recorder.copied_event({"time": event["time"], "event": event["event"], **fields})


def _safe_relative(name: str) -> bool:
    parts = name.split("/")
    return bool(name) and not name.startswith("/") and ".." not in parts and "" not in parts


def _open_no_follow(base: Path, relative: str) -> int:
    """Open ``base/relative`` for reading without following any link below ``base``.

    Raises OSError (ELOOP, ENOTDIR, ...) when a component is a link or the
    target is not a regular file.
    """
    parts = relative.split("/")
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for part in parts[:-1]:
            next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = next_fd
        file_fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(file_fd).st_mode):
        os.close(file_fd)
        raise OSError(f"{relative} is not a regular file")
    return file_fd


def _copy(source_fd: int, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    with os.fdopen(source_fd, "rb") as reader, os.fdopen(os.open(target, flags, 0o644), "wb") as w:
        shutil.copyfileobj(reader, w, 1024 * 1024)


def _merge_one(src: RunDir, recorder: Recorder, result: Result, attempt: int) -> list[str]:
    """Copy one result's artifacts under its new attempt number and record it."""
    out = recorder.rundir
    warnings: list[str] = []
    # A repeated instance's files are under instance-<serial>/ (see RunDir.artifact_path).
    serial = result.serial_number
    old_path = src.artifact_path(result.platform, result.test, result.attempt, result.plan, serial)
    if serial is None or not old_path.is_dir() or old_path.is_symlink():
        serial = None
        old_path = src.artifact_path(result.platform, result.test, result.attempt, result.plan)
    old_dir = src.relative(old_path)
    new_dir = out.relative(
        out.artifact_path(result.platform, result.test, attempt, result.plan, serial)
    )
    files = []
    for name in result.files[:MAX_FILES_PER_RESULT]:
        if not _safe_relative(name):
            warnings.append(
                f"{src.path}: {result.test}: file {name!r} escapes artifacts/; not copied"
            )
            continue
        rel = new_dir + name[len(old_dir) :] if name.startswith(old_dir + "/") else name
        target = out.path / ARTIFACTS / rel
        if not target.exists():
            try:
                fd = _open_no_follow(src.path / ARTIFACTS, name)
            except OSError as exc:
                if not isinstance(exc, FileNotFoundError):
                    reason = exc.strerror or str(exc)
                    warnings.append(
                        f"{src.path}: {result.test}: file {name!r} not copied: {reason}"
                    )
                    continue
                # A listed file that is missing stays listed: reporters say so.
            else:
                try:
                    _copy(fd, target)
                except OSError as exc:
                    with contextlib.suppress(OSError):
                        target.unlink()
                    raise ConfigError(f"cannot write {target}: {exc.strerror or exc}") from None
        files.append(rel)
    if len(result.files) > MAX_FILES_PER_RESULT:
        warnings.append(
            f"{src.path}: {result.test}: only the first {MAX_FILES_PER_RESULT} files were copied"
        )
    result.attempt = attempt
    result.files = files
    recorder.result(result)
    return warnings


# -- summary.json and history.json ----------------------------------------------------


def write_summary(
    out: RunDir, results: list[Result], sources: list[str], outcome: CollectOutcome
) -> dict[str, Any]:
    """Write RUN/summary.json: totals (overall and per platform), flaky tests, conflicts."""
    final = final_results(results)
    per_platform: dict[str, list[Result]] = {}
    for result in final:
        per_platform.setdefault(result.platform, []).append(result)
    flaky = flaky_attempts(results)
    own = {TestId.of_result(r): r for r in final if r.name is None}
    summary = {
        "format": SUMMARY_FORMAT,
        "version": FORMAT_VERSION,
        "updated": now_iso(),
        "sources": sources,
        "totals": {str(k): v for k, v in totals(final).items()},
        "platforms": {
            p: {str(k): v for k, v in totals(rs).items()} for p, rs in per_platform.items()
        },
        "flaky": [
            {
                "platform": key[0],
                "plan": key[1],
                "test": key[2],
                "failed_attempts": [r.attempt for r in earlier],
                "final_attempt": own[key].attempt,
                "final_status": str(own[key].status),
            }
            for key, earlier in flaky.items()
        ],
        "conflicts": outcome.conflicts,
        "skipped": len(outcome.warnings),
    }
    atomic_write_json(out.path / SUMMARY_JSON, summary)
    return summary


def read_history(path: Path) -> dict[tuple[str, str, str], list[float]]:
    """Durations per ``(platform, plan, test)`` from a history.json; {} if missing or damaged."""
    try:
        data = untrusted_json.read_file(path, max_bytes=MAX_HISTORY_BYTES)
    except (OSError, ValueError):
        return {}
    return _history_entries(data)


def _history_entries(data: Any) -> dict[tuple[str, str, str], list[float]]:
    """Durations per test from parsed history.json data; what does not fit is skipped."""
    history: dict[tuple[str, str, str], list[float]] = {}
    tests = data.get("tests") if isinstance(data, dict) else None
    for entry in tests if isinstance(tests, list) else []:
        if not isinstance(entry, dict):
            continue
        key = (entry.get("platform"), entry.get("plan"), entry.get("test"))
        durations = entry.get("durations")
        if all(isinstance(k, str) for k in key) and isinstance(durations, list):
            history[key] = [  # type: ignore[index]
                float(d) for d in durations if isinstance(d, int | float) and d >= 0
            ][-HISTORY_KEEP:]
    return history


def history_from_results(
    results: list[Result],
) -> tuple[dict[tuple[str, str, str], list[float]], dict[tuple[str, str, str], str]]:
    """Durations (and the last status) per ``(platform, plan, test)`` from results.

    Every attempt of each test's own result counts, in attempt order, each
    instance once; the last ``HISTORY_KEEP`` durations are kept.
    """
    history: dict[tuple[str, str, str], list[float]] = {}
    seen: set[tuple[str, str, str, int | None, int]] = set()
    statuses: dict[tuple[str, str, str], str] = {}
    for result in sorted(results, key=lambda r: r.attempt):
        if result.name is not None or result.duration is None:
            continue
        key = (result.platform, result.plan, result.test)
        instance = (*key, result.serial_number, result.attempt)
        if instance in seen:
            continue
        seen.add(instance)
        history.setdefault(key, []).append(round(result.duration, 3))
        statuses[key] = str(result.status)
    return {k: v[-HISTORY_KEEP:] for k, v in history.items()}, statuses


def load_history(path: Path) -> dict[tuple[str, str, str], list[float]]:
    """Durations per test from ``path``: a history.json, or a run directory.

    A run directory's own history.json is used if it has one (a collected
    run), else its results. Raises ConfigError if ``path`` holds neither,
    or naming the file (and line) if it is not a readable history.json.
    """
    if path.is_dir():
        if (path / HISTORY_JSON).is_file():
            path = path / HISTORY_JSON
        elif (path / "results.jsonl").is_file():
            results, _ = RunDir(path).read_results_checked()
            return history_from_results(results)[0]
        else:
            raise ConfigError(f"{path}: no history.json or results.jsonl in this directory")
    try:
        data = untrusted_json.read_file(path, max_bytes=MAX_HISTORY_BYTES)
    except OSError as exc:
        raise ConfigError(f"cannot read history {path}: {exc.strerror or exc}") from None
    except untrusted_json.UntrustedJSONError as exc:
        raise ConfigError(f"{exc.at(path)} (not a history.json)") from None
    if not isinstance(data, dict) or data.get("format") != HISTORY_FORMAT:
        raise ConfigError(f"{path}: not a history.json (format is not {HISTORY_FORMAT!r})")
    return _history_entries(data)


def _last_statuses(results: list[Result]) -> dict[tuple[str, str, str], str]:
    return history_from_results(results)[1]


def write_history(
    out: RunDir,
    history: dict[tuple[str, str, str], list[float]],
    statuses: dict[tuple[str, str, str], str],
) -> None:
    """Write RUN/history.json: the last ``HISTORY_KEEP`` durations of every test
    (``history``), with the last status known of each.

    ``collect`` builds it from the destination's earlier history and each
    complete source (every attempt of each test's own result, in attempt
    order), so collecting last week's run directories with this one gives a
    history that spans them.
    """
    path = out.path / HISTORY_JSON
    atomic_write_json(
        path,
        {
            "format": HISTORY_FORMAT,
            "version": FORMAT_VERSION,
            "updated": now_iso(),
            "tests": [
                {
                    "platform": key[0],
                    "plan": key[1],
                    "test": key[2],
                    "durations": durations,
                    **({"last_status": statuses[key]} if key in statuses else {}),
                }
                for key, durations in history.items()
            ],
        },
    )
