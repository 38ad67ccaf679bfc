"""Turning a test's reported results into its final results (no I/O).

This module owns the result rules of docs/test-control.md: merging partial
results, making the test's own result when the test did not send one (the
fallback), forcing it to error when the run of the test failed, and applying
tmt's ``result:`` key (respect, xfail, an override, or custom results read
from ``$TMT_TEST_DATA/results.yaml``/``results.json``).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from atex_ci import untrusted_json, untrusted_yaml
from atex_ci.execute.control import ControlError, sanitize_name
from atex_ci.model import Reason, Status

# Keys of a result object that Collected has fields for; everything else is
# kept verbatim in Collected.extra.
_KNOWN_KEYS = frozenset({"name", "status", "note", "files", "testout", "partial"})

# Our extension: a result carrying this key (the tmt-report-result shim sets it)
# counts toward the test's own status when the test sends none itself, as tmt
# reduces tmt-report-result results to the worst one.
COUNTS_FOR_TEST = "counts_for_test"

RESULT_MODES = frozenset(
    {"respect", "xfail", "pass", "info", "warn", "error", "fail", "custom", "restraint"}
)

# Where the executor stores the test's TMT_TEST_DATA inside its artifact
# directory; custom results name their logs relative to TMT_TEST_DATA.
TEST_DATA_DIR = "data"

# Outcomes tmt accepts in a custom results file.
_CUSTOM_OUTCOMES = frozenset({"pass", "fail", "info", "warn", "error", "skip", "pending"})


@dataclass
class Collected:
    """One final result of a test: its own (``name`` None) or a sub-result.

    ``files`` are artifact names (sanitised, relative to the test's artifact
    directory) in the order first written. ``testout`` is the name under which
    the executor must attach the test's output; None on the test's own result
    means the default ``output.txt``. ``reason`` says why a result is an error
    (None for any other status).
    """

    name: str | None
    status: Status
    note: str | None = None
    files: list[str] = field(default_factory=list)
    testout: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    reason: Reason | None = None
    #: Something the test sent for this result that could not be honoured
    #: (e.g. an invalid 'testout' name); the caller makes the test's own
    #: result an error saying so.
    problem: str | None = None


def worst_status(statuses: list[Status]) -> Status:
    """The worst of ``statuses`` in tmt's order; ValueError if the list is empty."""
    return Status.worst(statuses)


def merge_partial(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Merge result ``new`` into ``old`` (a fresh dict; neither argument changes).

    null deletes a key, new keys are added, scalars are replaced, lists are
    appended, dicts merge recursively and a change of type replaces.
    """
    return _merge_into(copy.deepcopy(old), copy.deepcopy(new))


def _merge_into(target: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """merge_partial's rules, changing ``target`` in place and taking ``new``'s
    values without copying them (the caller owns both). The cost is that of
    ``new`` only: a test sending thousands of partial results that each append
    to a list must not cost the square of their number."""
    for key, value in new.items():
        current = target.get(key)
        if value is None:
            target.pop(key, None)
        elif isinstance(current, dict) and isinstance(value, dict):
            _merge_into(current, value)
        elif isinstance(current, list) and isinstance(value, list):
            current.extend(value)
        else:
            target[key] = value
    return target


@dataclass
class _Entry:
    """A result being collected: its merged data plus every file written for it."""

    name: str | None
    data: dict[str, Any]
    files: list[str]


def _result_name(data: dict[str, Any]) -> str | None:
    name = data.get("name")
    if name is None or name == "":
        return None
    return name if isinstance(name, str) else str(name)


def _file_names(data: dict[str, Any]) -> list[str]:
    files = data.get("files") or []
    return [entry["name"] for entry in files if isinstance(entry, dict) and "name" in entry]


def _unique(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))


def _note_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return "; ".join(value) if value else None
    return json.dumps(value)


def _join_notes(*notes: str | None) -> str | None:
    parts = [note for note in notes if note]
    return "; ".join(parts) if parts else None


def _to_collected(entry: _Entry) -> Collected:
    data = entry.data
    status = Status.parse(data.get("status"))
    note = _note_text(data.get("note"))
    if "status" not in data:
        note = _join_notes(note, "the result has no status")
    testout: str | None = None
    problem: str | None = None
    if isinstance(data.get("testout"), str):
        try:
            testout = sanitize_name(data["testout"])
        except ControlError as error:
            note = _join_notes(note, "invalid 'testout' file name ignored")
            problem = f"invalid 'testout' file name: {str(error).removeprefix('test-control: ')}"
    extra = {
        key: value
        for key, value in data.items()
        if key not in _KNOWN_KEYS and key != COUNTS_FOR_TEST
    }
    return Collected(
        name=entry.name,
        status=status,
        note=note,
        files=_unique(entry.files),
        testout=testout,
        extra=extra,
        reason=Reason.TEST if status is Status.ERROR else None,
        problem=problem,
    )


def _status_from_exit_code(exit_code: int) -> tuple[Status, str | None]:
    """tmt's shell framework: 0 pass, 1 fail, anything else error."""
    if exit_code == 0:
        return Status.PASS, None
    if exit_code == 1:
        return Status.FAIL, None
    return Status.ERROR, f"test exited with code {exit_code}"


def _apply_result_mode(result: Collected, mode: str) -> None:
    """tmt's ``result:`` key, applied to the test's own result only (as tmt 1.78 does)."""
    original = result.status
    if mode == "xfail":
        if original is Status.PASS:
            result.status = Status.FAIL
            result.note = _join_notes(result.note, "test was expected to fail")
        elif original is Status.FAIL:
            result.status = Status.PASS
            result.note = _join_notes(result.note, "test failed as expected")
    elif mode in ("pass", "info", "warn", "error", "fail"):
        result.status = Status(mode)
        result.note = _join_notes(result.note, f"test result overridden: {mode}")
    if result.status is not original:
        result.note = _join_notes(result.note, f"original test result: {original}")
        result.reason = Reason.TEST if result.status is Status.ERROR else None


class ResultCollector:
    """Collects one test run's results; accumulates across reboots of that run.

    Call :meth:`add` with every ``ResultEvent.data`` in stream order, then
    :meth:`finish` once when the test has ended (or failed to).
    """

    def __init__(self) -> None:
        self._completed: list[_Entry] = []
        self._pending: dict[str | None, _Entry] = {}
        self._counting: list[Status] = []  # statuses of results with COUNTS_FOR_TEST

    def add(self, data: dict[str, Any]) -> None:
        """Record one result object (as produced by the control parser)."""
        name = _result_name(data)
        if data.get(COUNTS_FOR_TEST) is True and "status" in data:
            self._counting.append(Status.parse(data["status"]))
        body = {key: value for key, value in data.items() if key != "partial"}
        files = _file_names(data)
        pending = self._pending.pop(name, None)
        if pending is not None:
            # The pending entry is ours alone: merge in place (see _merge_into).
            pending.files.extend(files)
            entry = _Entry(name, _merge_into(pending.data, body), pending.files)
        else:
            entry = _Entry(name, {k: v for k, v in body.items() if v is not None}, files)
        if data.get("partial") is True:
            self._pending[name] = entry
        else:
            self._completed.append(entry)

    def finish(
        self,
        *,
        exit_code: int | None,
        failure: tuple[Reason, str] | None = None,
        result_mode: str = "respect",
        custom_results: list[dict[str, Any]] | None = None,
    ) -> list[Collected]:
        """The final results, in the order they were completed.

        ``exit_code`` is the test's exit code from the ``exitcode`` word (None if
        it never came, which is an infrastructure error). ``failure`` is set when
        the run of the test failed (timeout, lost connection, protocol violation,
        cancel, ...): the test's own result becomes error with that reason and
        note, whatever the test reported. ``result_mode`` is the test's tmt
        ``result:`` key; for ``custom`` pass the list parsed by
        :func:`parse_custom_results` (None if the file does not exist).
        Raises ValueError for an unknown ``result_mode``.
        """
        if result_mode not in RESULT_MODES:
            raise ValueError(f"unknown result mode {result_mode!r}")
        if exit_code is None and failure is None:
            failure = (Reason.INFRA, "the test's exit code is missing (wrapper did not report it)")
        own_entries = [entry for entry in self._all_entries() if entry.name is None]
        own_files = _unique([name for entry in own_entries for name in entry.files])
        results: list[Collected] = []
        own: Collected | None = None
        if result_mode == "custom":
            results = _collect_custom(custom_results)
            own = next((result for result in results if result.name is None), None)
            if own is not None:
                own.files = _unique(own.files + own_files)
        own_slot: int | None = None
        last_complete_own = next(
            (entry for entry in reversed(self._completed) if entry.name is None), None
        )
        for entry in self._all_entries():
            if entry.name is not None:
                results.append(_to_collected(entry))
            elif entry is last_complete_own:
                own_slot = len(results)
        if result_mode != "custom":
            own = self._own_result(exit_code)
            own.files = own_files
            _apply_result_mode(own, result_mode)
            results.insert(len(results) if own_slot is None else own_slot, own)

        if failure is not None:
            if own is None:
                own = Collected(name=None, status=Status.ERROR, files=own_files)
                results.append(own)
            _apply_failure(own, failure)
        return results

    def _all_entries(self) -> list[_Entry]:
        """Completed entries in order, then the pending ones in order of first report."""
        return self._completed + list(self._pending.values())

    def _own_result(self, exit_code: int | None) -> Collected:
        """The test's own result before result_mode and failure are applied."""
        complete = [entry for entry in self._completed if entry.name is None]
        if complete:
            return _to_collected(complete[-1])
        pending = self._pending.get(None)
        if (
            pending is not None
            and "status" in pending.data
            and not pending.data.get(COUNTS_FOR_TEST)
        ):
            return _to_collected(pending)
        base = pending.data if pending is not None else {}
        result = _to_collected(_Entry(None, {k: v for k, v in base.items() if k != "status"}, []))
        if self._counting:
            status, note = worst_status(self._counting), None
        elif exit_code is not None:
            status, note = _status_from_exit_code(exit_code)
        else:
            status, note = Status.ERROR, None  # the failure will say why
        result.status = status
        result.note = _join_notes(_note_text(base.get("note")), note)
        result.reason = Reason.TEST if status is Status.ERROR else None
        return result


def _apply_failure(own: Collected, failure: tuple[Reason, str]) -> None:
    reason, cause = failure
    reported = None
    if own.status is not Status.ERROR or own.note:
        reported = f"before that the result was {own.status}" + (
            f": {own.note}" if own.note else ""
        )
    own.status = Status.ERROR
    own.reason = reason
    own.note = _join_notes(cause, reported)


def _collect_custom(custom_results: list[dict[str, Any]] | None) -> list[Collected]:
    """tmt's custom results: "/" is the test itself, other names are sub-results."""
    if custom_results is None:
        return [
            Collected(
                name=None,
                status=Status.ERROR,
                note="custom results file not found (results.yaml or results.json in"
                " TMT_TEST_DATA)",
                reason=Reason.TEST,
            )
        ]
    if not custom_results:
        return [
            Collected(
                name=None,
                status=Status.ERROR,
                note="no custom results were provided",
                reason=Reason.TEST,
            )
        ]
    collected = []
    for item in custom_results:
        name: str | None = item["name"]
        notes = [_note_text(item.get("note"))]
        if name == "/":
            name = None
        elif name is not None and not name.startswith("/"):
            notes.append("custom test result name should start with '/'")
            name = "/" + name
        status = Status.parse(item.get("result"))
        logs = []
        for log in item.get("log") or []:
            try:
                logs.append(f"{TEST_DATA_DIR}/{sanitize_name(log)}")
            except ControlError:
                notes.append(f"invalid log path {log!r} ignored")
        extra = {
            key: value
            for key, value in item.items()
            if key not in ("name", "result", "note", "log")
        }
        collected.append(
            Collected(
                name=name,
                status=status,
                note=_join_notes(*notes),
                files=list(logs),
                extra=extra,
                reason=Reason.TEST if status is Status.ERROR else None,
            )
        )
    return collected


def parse_custom_results(text: str, filename: str) -> list[dict[str, Any]]:
    """Parse a test's custom results file (tmt's results format).

    ``filename`` is the file's name; ``results.json`` is read as JSON, anything
    else as YAML. Returns a list of result dicts, each with a string ``name``
    and ``result``; an empty file gives an empty list. ``log`` paths in it are
    relative to ``$TMT_TEST_DATA``. Raises ValueError naming the file and the
    problem if the content is not valid.
    """
    try:
        if filename.endswith(".json"):
            parsed = (
                untrusted_json.loads(
                    text, max_bytes=untrusted_yaml.MAX_BYTES, max_depth=untrusted_json.MAX_DEPTH
                )
                if text.strip()
                else None
            )
            loaded = untrusted_yaml.to_plain(parsed)
        else:
            loaded = untrusted_yaml.load(text)
    except (ValueError, untrusted_yaml.UntrustedYAMLError) as error:
        raise ValueError(f"{filename}: cannot parse: {error}") from None
    if loaded is None:
        return []
    if not isinstance(loaded, list):
        raise ValueError(f"{filename}: expected a list of results, got {type(loaded).__name__}")
    for index, item in enumerate(loaded, start=1):
        where = f"{filename}: result #{index}"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: expected a mapping, got {type(item).__name__}")
        if not isinstance(item.get("name"), str) or not item["name"]:
            raise ValueError(f"{where}: 'name' must be a non-empty string")
        outcome = item.get("result")
        if not isinstance(outcome, str) or outcome not in _CUSTOM_OUTCOMES:
            raise ValueError(
                f"{where} ({item['name']}): 'result' must be one of"
                f" {', '.join(sorted(_CUSTOM_OUTCOMES))}, got {outcome!r}"
            )
        note = item.get("note")
        if (
            note is not None
            and not isinstance(note, str)
            and not (isinstance(note, list) and all(isinstance(n, str) for n in note))
        ):
            raise ValueError(
                f"{where} ({item['name']}): 'note' must be a string or a list of strings"
            )
        log = item.get("log")
        if log is not None and not (isinstance(log, list) and all(isinstance(p, str) for p in log)):
            raise ValueError(f"{where} ({item['name']}): 'log' must be a list of paths")
    return loaded


__all__ = [
    "COUNTS_FOR_TEST",
    "RESULT_MODES",
    "Collected",
    "ResultCollector",
    "merge_partial",
    "parse_custom_results",
    "worst_status",
]
